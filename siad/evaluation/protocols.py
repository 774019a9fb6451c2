"""The evaluation protocols: zero-shot (`evaluate_samples`), k-shot (`evaluate_few_shot`: references
drawn per seed, `combine_seeds` their mean) and the paper's cross-dataset protocol (`uzad_protocol`: which
training set's checkpoint tests which dataset, from the dataset registry).

A run goes class by class, each class cut into batches (`siad.runner.plan_batches`), each batch one
`detect` call (`siad.evaluation.batches`); rank 0 of a distributed run gathers every class exactly and
computes the numbers of the report (`siad.evaluation.results`).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from siad.data.registry import dataset_specs
from siad.data.sample import Sample, group_by_class
from siad.detection import Detector
from siad.evaluation.batches import EvalBatch, class_result, decode_batch, encode_batch, evaluate_batch, qualitative_picks
from siad.evaluation.metrics import AUPRO_FPR_LIMIT, METRICS
from siad.evaluation.notes import evaluation_notes
from siad.evaluation.results import (PASSES, AnswerStats, ClassResult, DatasetEvaluation, EvalSettings, ImageRecord,
                                     warn_undefined)
from siad.runner import Batch, BatchItem, RunOptions, barrier, check_failures, collect, file_identity, plan_batches, \
    run_shard


def uzad_protocol() -> dict[str, str]:
    """The paper's cross-dataset protocol: test dataset -> the training dataset of its checkpoint (each
    registered dataset's `uzad_source`: MVTec -> VisA, MPDD, DTD, SDD, BTAD; VisA -> MVTec; Br35H ->
    BrainMRI, HeadCT; BrainMRI -> Br35H)."""
    return {spec.name: spec.uzad_source for spec in dataset_specs() if spec.uzad_source is not None}


def passes_for(detector: Detector, settings: EvalSettings) -> tuple[str, ...]:
    """The passes an evaluation reports: pass 2 only with the LLM and self-improvement."""
    if settings.chat and settings.self_improve and detector.can_answer and detector.config.map.use_self_improvement:
        return PASSES
    return PASSES[:1]


# ------------------------------------------------------------------------------------ zero-shot
def evaluate_samples(detector: Detector, samples: Sequence[Sample], *, dataset: str, settings: EvalSettings,
                     root: str = "", model: str = "", references: dict[str, list[Path]] | None = None,
                     seed: int | None = None, run: RunOptions | None = None) -> DatasetEvaluation | None:
    """Run `detector` over `samples` (siad.data Samples) class by class and compute every number
    of the report. Each class is cut into batches of `settings.batch_size` (`siad.runner.plan_batches`),
    each batch one `detect` call; a batch's maps are reduced at once to their `PixelState`s (at the
    evaluation size), so memory holds one batch at full size.

    references: few-shot, the normal reference images of every class (a bank is built per class with
    `detector.build_references(paths, class, seed=seed)` and used for all its images); seed: the seed
    they were drawn with (reported).

    run: processes, DataLoader workers and resumption (`siad.runner.RunOptions`; default: one process,
    images loaded in this process, results in memory). With several processes each runs its shard of
    the batches, and rank 0 merges every class exactly (its images' records in order, the pixel states
    with `PixelState.merge`) and returns the evaluation, equal to a one-process run's; the other ranks
    return None."""
    if not samples:
        raise ValueError(f"no images in the {settings.split} split of {dataset}")
    run = run or RunOptions()
    processes = run.processes
    answers = detector.can_answer
    chat = settings.chat and answers
    passes = passes_for(detector, settings)
    groups = group_by_class(samples)
    ordered = [sample for group in groups.values() for sample in group]
    batches = plan_batches([(name, len(group)) for name, group in groups.items()], settings.batch_size)
    shown = qualitative_picks(groups, settings.qualitative)
    has_masks = {name: any(s.mask_path is not None for s in group) for name, group in groups.items()}
    description = {"dataset": dataset, "root": root, "model": model, "model_files": file_identity(model),
                   "settings": {k: v for k, v in asdict(settings).items() if k not in ("progress", "workers")},
                   "config": detector.config.to_dict(), "seed": seed,
                   "references": {c: [str(p) for p in paths] for c, paths in (references or {}).items()},
                   "samples": [(str(s.image_path), str(s.mask_path), s.class_name, s.defect_type, s.label)
                               for s in ordered]}
    store = run.store("evaluate", description, encode_batch, decode_batch)
    banks: dict[str, Any] = {}  # the few-shot bank of the class being run (batches come class by class)

    def work(batch: Batch, items: list[BatchItem]) -> EvalBatch:
        if batch.group not in banks and references is not None:
            banks.clear()
            banks[batch.group] = detector.build_references(references[batch.group], batch.group, seed=seed or 0,
                                                           batch_size=settings.batch_size)
        return evaluate_batch(detector, ordered[batch.start:batch.stop], items, batch.group, dataset, settings,
                              passes, chat, has_masks[batch.group], shown[batch.group], banks.get(batch.group))

    start = time.perf_counter()
    report = run_shard(batches, [s.image_path for s in ordered], work, store, processes, config=detector.config,
                       workers=run.workers, resume=run.resume, progress=settings.progress,
                       title=f"evaluate {dataset}" + ("" if seed is None else f" (seed {seed})"))
    check_failures(report.failure, processes)
    classes: list[ClassResult] = []
    records: list[ImageRecord] = []
    qualitative: list[Any] = []
    for name, group in groups.items():
        parts = [part for _, part in collect([b for b in batches if b.group == name], len(batches),
                                             lambda b: store.load(b.index), processes)]
        if processes.is_main:
            result, class_records, rows = class_result(name, group, parts, passes, chat, has_masks[name],
                                                       float(detector.config.map.threshold))
            classes.append(result)
            records += class_records
            qualitative += rows
    barrier(processes)  # every batch has reached rank 0: the kept results can go
    store.discard()
    if not processes.is_main:
        return None
    mean, mean_answers = _means(classes, passes)
    evaluation = DatasetEvaluation(
        dataset=dataset, root=root, model=model, passes=passes, chat=chat,
        settings=_settings_dict(detector, settings, chat), classes=classes, mean=mean,
        mean_answers=mean_answers, records=records, qualitative=qualitative, notes=[],
        seconds=time.perf_counter() - start, processes=processes.world,
        shots=settings.shots if references is not None else 0,
        seed=seed if references is not None else None,
        references={c: [str(p) for p in paths] for c, paths in (references or {}).items()})
    if references is not None:
        evaluation.settings["seed"] = seed
    evaluation.notes = evaluation_notes(detector, settings, evaluation, answers)
    warn_undefined(evaluation)
    return evaluation


# ------------------------------------------------------------------------------------ k-shot
def reference_pools(test_samples: Sequence[Sample], train_samples: Sequence[Sample]) -> dict[str, list[Path]]:
    """The normal images each test class may draw its references from: its normal train images,
    sorted, without any image of the test samples (compared as resolved paths)."""
    tested = {Path(s.image_path).resolve() for s in test_samples}
    pools: dict[str, list[Path]] = {}
    for name in dict.fromkeys(s.class_name for s in test_samples):
        normals = {Path(s.image_path) for s in train_samples
                   if s.class_name == name and s.label == 0 and Path(s.image_path).resolve() not in tested}
        pools[name] = sorted(normals)
    return pools


def draw_class_references(pools: dict[str, list[Path]], shots: int, seed: int,
                          dataset: str = "") -> dict[str, list[Path]]:
    """K references per class from `reference_pools` with one seed (`siad.references.draw_references`);
    a class with fewer than K normal images is a ValueError naming it."""
    from siad.references import draw_references  # deferred: siad.references imports torch

    short = {name: len(pool) for name, pool in pools.items() if len(pool) < shots}
    if short:
        raise ValueError(f"--shots {shots}: too few normal images in the train split of {dataset or 'the dataset'} "
                         f"(test images left out) for class(es) {short}; references come from the train split only")
    return {name: draw_references(pool, shots, seed=seed, class_name=name) for name, pool in pools.items()}


def evaluate_few_shot(detector: Detector, samples: Sequence[Sample], train_samples: Sequence[Sample], *, dataset: str,
                      settings: EvalSettings, root: str = "", model: str = "",
                      run: RunOptions | None = None) -> DatasetEvaluation | None:
    """The few-shot protocol (`siad.evaluate`'s docstring): one `evaluate_samples` per seed of
    `settings.shot_seeds`, each with `settings.shots` references per class drawn from
    `train_samples`; returns their mean over seeds (`combine_seeds`), which holds them in `per_seed`.
    Every draw is checked before the first image is detected. The draws depend only on the pools, the
    seed and the class, so every process of a distributed run draws the same references (rank 0 returns
    the evaluation, the other ranks None)."""
    if settings.shots < 1:
        raise ValueError("evaluate_few_shot needs settings.shots >= 1")
    if not detector.takes_references:
        raise ValueError("--shots needs a detector that takes references (a SIAD model or patchcore:...); "
                         f"{detector.name} takes none")
    pools = reference_pools(samples, train_samples)
    draws = {seed: draw_class_references(pools, settings.shots, seed, dataset) for seed in settings.shot_seeds}
    per_seed = [evaluate_samples(detector, samples, dataset=dataset, settings=settings, root=root, model=model,
                                 references=draws[seed], seed=seed, run=run) for seed in settings.shot_seeds]
    if any(evaluation is None for evaluation in per_seed):
        return None
    return combine_seeds([evaluation for evaluation in per_seed if evaluation is not None])


def combine_seeds(per_seed: list[DatasetEvaluation]) -> DatasetEvaluation:
    """The mean over seeds of few-shot evaluations of the same images: each class's metrics averaged
    over the seeds where they are defined, its answer counts summed (so its accuracy and agreement are
    the mean over seeds: every seed answers the same images), the mean over classes of those."""
    first = per_seed[0]
    classes = []
    for index, c in enumerate(first.classes):
        rows = [e.classes[index] for e in per_seed]
        metrics = {p: {m.name: _mean_defined([r.metrics[p][m.name] for r in rows]) for m in METRICS}
                   for p in first.passes}
        answers = {}
        for p in c.answers:
            total = AnswerStats()
            for r in rows:
                for name in ("total", "correct", "neither", "agree"):
                    setattr(total, name, getattr(total, name) + getattr(r.answers[p], name))
            answers[p] = total
        classes.append(ClassResult(name=c.name, n_images=c.n_images, n_normal=c.n_normal, n_anomalous=c.n_anomalous,
                                   has_masks=c.has_masks, metrics=metrics, answers=answers))
    mean, mean_answers = _means(classes, first.passes)
    settings = {k: v for k, v in first.settings.items() if k != "seed"}
    seeds = [e.seed for e in per_seed]
    notes = list(first.notes)
    notes.append(f"Mean over the seeds {', '.join(str(s) for s in seeds)}: each seed's report is in seed_<seed>/ "
                 "(with its scores.csv and figures); the per-seed table gives each seed's mean over classes.")
    return DatasetEvaluation(
        dataset=first.dataset, root=first.root, model=first.model, passes=first.passes, chat=first.chat,
        settings=settings, classes=classes, mean=mean, mean_answers=mean_answers, records=[], qualitative=[],
        notes=notes, seconds=sum(e.seconds for e in per_seed), processes=first.processes, shots=first.shots, seed=None,
        per_seed=per_seed)


# ------------------------------------------------------------------------------------ means and settings
def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _means(classes: list[ClassResult], passes: tuple[str, ...]
           ) -> tuple[dict[str, dict[str, float | None]], dict[str, dict[str, Any]]]:
    """The mean over classes of every metric (of the classes where it is defined) and of the answers'
    accuracy and agreement (with the summed counts), per pass."""
    mean: dict[str, dict[str, float | None]] = {}
    mean_answers: dict[str, dict[str, Any]] = {}
    for p in passes:
        mean[p] = {m.name: _mean_defined([c.metrics[p][m.name] for c in classes]) for m in METRICS}
        stats = [c.answers[p] for c in classes if p in c.answers]
        if stats:
            mean_answers[p] = {"accuracy": _mean_defined([s.accuracy for s in stats]),
                               "agreement": _mean_defined([s.agreement for s in stats]),
                               "correct": sum(s.correct for s in stats), "wrong": sum(s.wrong for s in stats),
                               "neither": sum(s.neither for s in stats), "agree": sum(s.agree for s in stats),
                               "total": sum(s.total for s in stats)}
    return mean, mean_answers


def _settings_dict(detector: Detector, settings: EvalSettings, chat: bool) -> dict[str, Any]:
    config = detector.config
    return {
        "split": settings.split,
        "eval_size": settings.eval_size,
        "pixel_resolution": "original" if settings.eval_size == 0 else f"{settings.eval_size}x{settings.eval_size}",
        "smooth_sigma": float(settings.smooth_sigma),
        "model_smooth_sigma": float(config.map.score_smoothing_sigma),
        "chat": chat,
        "self_improve": settings.self_improve,
        "batch_size": settings.batch_size,
        "aupro_fpr_limit": AUPRO_FPR_LIMIT,
        "threshold": float(config.map.threshold),
        "resize_mode": config.vision.resize_mode,
        "shots": settings.shots,
        "shot_seeds": list(settings.shot_seeds) if settings.shots else [],
        **({"few_shot_weight": float(config.map.few_shot_weight),
            "few_shot_features": config.map.few_shot_features,
            "max_bank_patches": config.map.max_bank_patches} if settings.shots else {}),
    }
