"""Evaluation like the paper's Table 1: per-class metrics and their mean, for both passes.

    python -m siad.evaluate --model M --dataset NAME --root DIR --out DIR [--classes C ...]
        [--map-only | --no-self-improve] [--eval-size 224] [--smooth-sigma 4] [--batch-size 8]
        [--shots K [--shot-seeds 0 1 2]]
        [--device cpu] [--dtype float32] [--qualitative 8] [--no-plots] [--quiet] [--workers 2] [--resume]
    torchrun --nproc_per_node N -m siad.evaluate ... --device cuda      (N processes: see "Scale" below)
    python -m siad.evaluate --protocol uzad --models mvtec=DIR1 visa=DIR2 br35h=DIR3 brainmri=DIR4 \\
        --datasets visa=ROOT mvtec=ROOT headct=ROOT ... --out DIR

Model (`--model`): a SIAD model folder or Hub id, or `zero-shot:<encoder>`, the WinCLIP-style
reference of `siad.baseline` (ImageBind + prompt ensemble, no training): `zero-shot:<SIAD model
folder or Hub id>` uses that model's ImageBind encoder, `zero-shot:<imagebind_huge.pth>` the
official weights, `zero-shot:tiny` the tiny random preset.

What is measured, per class of the test split (`load_dataset(NAME, ROOT, split)`), for each pass:

- pass 1: the image score S and map M of `detect` (`initial_score`, `initial_map`), answer R;
- pass 2 (self-improvement, Algorithm 1): S', M', R' (`score`, `anomaly_map`, `answer`).

The defaults are the paper's protocol: Algorithm 1 runs (both passes; the paper reports S', M'),
pixel metrics at each image's original resolution, no smoothing of the maps. The fast settings are
named options: `--map-only` (no LLM: pass 1 maps and scores), `--eval-size 224` (pixel metrics on
224 x 224 maps and masks), `--smooth-sigma 4` (Gaussian smoothing before scoring, as some zero-shot
repositories do; not the paper's).

Metrics (`siad.metrics`): image AUROC, AP and F1-max from the image scores; pixel AUROC and
AUPRO (FPR limit 0.3) from the maps, only for classes with masks ("-" otherwise, e.g. the medical
sets); the mean over classes (of the classes where a metric is defined). A class of one label (only
normal or only anomalous test images) has no image AUROC, AP or F1-max (without normal images AP and
F1-max would be 1 whatever the scores): they are reported as undefined, left out of the mean, and an
`UndefinedMetricWarning` and a note of the report name the class. Unless `--map-only`, also the
answer accuracy: `answer_is_anomalous(answer)` against the label, an answer that says neither yes
nor no counts as wrong (and is counted); and the answer-verdict agreement: the share of images whose
answer says "yes" exactly when the score of the same pass reaches the model's threshold (an answer that
says neither disagrees).

Passes: by default Algorithm 1 runs (both passes, both answers); `--no-self-improve` gives pass 1
with R; `--map-only` runs no LLM (`detect(chat=False)`): maps and scores of pass 1 only, since
self-improvement needs the LLM's answer R. The zero-shot baseline has no LLM: pass 1 only.

Settings: `--smooth-sigma` is the Gaussian sigma applied to the 224 x 224 map before scoring and
before the map goes back to the image size (default 0: none, as in the paper); it is passed to
`detect` for this run only (the model's config is never changed). Pixel metrics are computed at
each image's original resolution (default; exact, memory grows with the pixels of a class: about 5
bytes a pixel per pass), or at `--eval-size` x `--eval-size`: the map is resized bilinearly
(antialiased when shrinking) and the mask with nearest neighbours.

`--card` (with a local SIAD model folder) writes the measured means into that folder's model card:
its `model-index` and a results table (`siad.model_card.write_card_results`), filed under the dataset
(`--card-dataset ID`, needed for mvtec_format and meta; `--card-name` for display), replacing earlier
results for the same dataset and split. Nothing but measured results ever goes into a card's metadata.

Output in `--out` (required; files of the same names are replaced):

- `report.md`: the table (rows: classes and the mean; columns: the metrics of pass 1, then of pass
  2, then answer accuracies), in percent with one decimal, "-" where undefined, the gain of
  self-improvement on the mean, and notes;
- `report.json`: every number (fractions in [0, 1], null where undefined), the command, model,
  dataset, root, split and settings, per-class counts and answer statistics;
- `report.csv`: one row per class and pass and a "mean" row per pass: dataset, class, pass, shots,
  seed, n_images, n_normal, n_anomalous, image_auroc, pixel_auroc, aupro, image_ap, image_f1_max,
  answer_accuracy, answer_agreement, answers_neither (fractions, empty where undefined);
- `scores.csv`: one row per image: path, class, defect_type, label, score_pass1, score_pass2,
  answer_pass1, answer_pass2;
- plots: `roc_<class>.png` (image-level ROC of each pass), `qualitative.png` (image, ground truth,
  pass-1 map, pass-2 map for a few anomalous images, as in the paper's Fig. 4), `histograms.png`
  (image scores of normal and anomalous images, per pass).

Few-shot (`--shots K`, beyond the paper; `siad.references`): for each seed of `--shot-seeds` (default
0), K normal images of each test class are drawn from the same dataset's train split
(`load_dataset(NAME, ROOT, "train")`, normal images only, any test image left out: no test image is
ever a reference) with `siad.references.draw_references` (seeded by the seed and the class name), the
class's bank is built from them (`SIADModel.build_references`), and every test image of the class is
detected with it (both passes fuse their maps with the reference maps): the WinCLIP / AnomalyGPT
protocol. A class with fewer than K such normal images is an error before any work. Output: each seed's
complete report (the files above) in `<out>/seed_<seed>/`, with the references it drew in its
report.json; `<out>/report.{md,json,csv}` holds the mean over seeds (per class and the mean over
classes, both passes) and a table of each seed's mean; report.csv's `seed` column names the seed or
"mean". `--shots 0` (the default) is zero-shot: the report above, `shots` 0 and an empty `seed`. The
zero-shot baseline takes no references.

Scale (DESIGN 10, `siad.runner`): launched by `torchrun --nproc_per_node N -m siad.evaluate ...` or
`accelerate launch [--multi_gpu] --num_processes N [--config_file ...] -m siad.evaluate ...` (several
machines: the launcher's multi-node options), the N processes share the batches of each dataset (each
class cut into batches of `--batch-size`, the same batches as in one process; contiguous blocks of the
batch list per process, no image twice); Accelerate gives each its GPU (`--device cuda` becomes
`cuda:<local rank>`; `--device cpu`: gloo). Rank 0 gathers each class's results (the images' scores,
answers and labels in order, the `siad.metrics.PixelState` of the maps, merged exactly) and writes the
one report, whose numbers equal a one-process run's (`processes` in report.json says how many ran).
`--workers W` DataLoader worker processes per process read and resize the images while the model runs.
Every finished batch is kept in `<out>/.siad-resume/evaluate-<hash>/batch-<i>.npz` (written atomically:
scores, answers, the batch's pixel state, about 4 bytes a pixel per pass at the original resolution, and
its qualitative rows); a rerun with `--resume` and the same model files, data and settings skips them.
The folder is removed once the report is written.

`--protocol uzad` runs the paper's cross-dataset protocol: each test dataset is evaluated with the
checkpoint trained on its source dataset (`UZAD_PROTOCOL`: MVTec -> VisA, MPDD, DTD, SDD, BTAD;
VisA -> MVTec; Br35H -> BrainMRI, HeadCT; BrainMRI -> Br35H). `--models TRAIN=M ...` names the
checkpoints by training set (only those needed by the datasets given), or `--model M` uses one
model for every dataset (the zero-shot baseline). `--datasets NAME=ROOT ...` names the test sets.
Each dataset gets its own report in `<out>/<NAME>/`, and `<out>/report.{md,json,csv}` gathers the
mean rows (rows: datasets). Each checkpoint is loaded once.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import re
import shlex
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from siad.runner import (Batch, BatchItem, Processes, RunFailed, RunOptions, add_run_arguments, barrier,
                          check_failures, check_output_folder, collect, file_identity, from_json_array, in_turns,
                          json_array, plan_batches, run_shard, start_processes)

PASSES: tuple[str, str] = ("pass1", "pass2")
SCORE_SYMBOL = {"pass1": "S", "pass2": "S'"}
MAP_SYMBOL = {"pass1": "M", "pass2": "M'"}
ANSWER_SYMBOL = {"pass1": "R", "pass2": "R'"}
METRICS: tuple[str, ...] = ("image_auroc", "pixel_auroc", "aupro", "image_ap", "image_f1_max")
PIXEL_METRICS = frozenset({"pixel_auroc", "aupro"})
METRIC_TITLES = {"image_auroc": "I-AUROC", "pixel_auroc": "P-AUROC", "aupro": "AUPRO", "image_ap": "AP",
                 "image_f1_max": "F1-max"}
AUPRO_FPR_LIMIT = 0.3
CSV_COLUMNS: tuple[str, ...] = ("dataset", "class", "pass", "shots", "seed", "n_images", "n_normal", "n_anomalous",
                                *METRICS, "answer_accuracy", "answer_agreement", "answers_neither")
SCORE_COLUMNS: tuple[str, ...] = ("path", "class", "defect_type", "label", "score_pass1", "score_pass2",
                                  "answer_pass1", "answer_pass2")

# The paper's cross-dataset protocol: test dataset -> the training dataset of its checkpoint.
UZAD_PROTOCOL: dict[str, str] = {
    "visa": "mvtec", "mpdd": "mvtec", "dtd": "mvtec", "sdd": "mvtec", "btad": "mvtec",
    "mvtec": "visa",
    "brainmri": "br35h", "headct": "br35h",
    "br35h": "brainmri",
}


# ------------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class EvalSettings:
    """How an evaluation runs (see the module docstring); the defaults are the paper's protocol."""

    eval_size: int = 0
    smooth_sigma: float = 0.0
    chat: bool = True
    self_improve: bool = True
    batch_size: int = 8
    split: str = "test"
    qualitative: int = 8
    progress: bool = True
    shots: int = 0
    shot_seeds: tuple[int, ...] = (0,)


@dataclass
class AnswerStats:
    """Yes/no answers against the labels (`correct`) and against the verdict of the same pass's score
    (`agree`: the answer says yes exactly when the score reaches the threshold); `neither` answers
    (no yes, no no) count as wrong and as disagreeing."""

    total: int = 0
    correct: int = 0
    neither: int = 0
    agree: int = 0

    def add(self, answer: str | None, label: int, verdict: bool) -> None:
        from siad.prompts import answer_is_anomalous

        says = answer_is_anomalous(answer or "")
        self.total += 1
        if says is None:
            self.neither += 1
            return
        self.correct += says == bool(label)
        self.agree += says == bool(verdict)

    @property
    def wrong(self) -> int:
        return self.total - self.correct

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None

    @property
    def agreement(self) -> float | None:
        return self.agree / self.total if self.total else None

    def as_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "agreement": self.agreement, "correct": self.correct, "wrong": self.wrong,
                "neither": self.neither, "agree": self.agree, "total": self.total}


@dataclass
class ClassResult:
    """The numbers of one class: counts, metrics[pass][metric] (None: undefined) and answers[pass]."""

    name: str
    n_images: int
    n_normal: int
    n_anomalous: int
    has_masks: bool
    metrics: dict[str, dict[str, float | None]]
    answers: dict[str, AnswerStats] = field(default_factory=dict)


@dataclass
class ImageRecord:
    """One test image: its label and, per pass, its score and answer."""

    path: str
    class_name: str
    defect_type: str
    label: int
    scores: dict[str, float]
    answers: dict[str, str | None]


@dataclass
class DatasetEvaluation:
    """Everything one dataset's report holds."""

    dataset: str
    root: str
    model: str
    passes: tuple[str, ...]
    chat: bool
    settings: dict[str, Any]
    classes: list[ClassResult]
    mean: dict[str, dict[str, float | None]]
    mean_answers: dict[str, dict[str, Any]]
    records: list[ImageRecord]
    qualitative: list[Any]
    notes: list[str]
    seconds: float = 0.0
    processes: int = 1  # how many processes shared the images (the numbers do not depend on it)
    shots: int = 0
    seed: int | None = None  # the seed of the references' draw (None: zero-shot, or the mean over seeds)
    references: dict[str, list[str]] = field(default_factory=dict)  # class -> the reference images
    per_seed: list["DatasetEvaluation"] = field(default_factory=list)  # few-shot: each seed's evaluation


# ------------------------------------------------------------------------------------ helpers
def resize_map(anomaly_map: np.ndarray, size: int) -> np.ndarray:
    """An H x W float map -> size x size float32: bilinear (align_corners=False), antialiased when shrinking."""
    import torch
    import torch.nn.functional as F

    source = torch.from_numpy(np.ascontiguousarray(anomaly_map, dtype=np.float32))[None, None]
    if source.shape[-2:] == (size, size):
        return source[0, 0].numpy().copy()
    out = F.interpolate(source, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].numpy()


def eval_mask(mask_path: Path | None, shape: tuple[int, int]) -> np.ndarray:
    """The ground truth at `shape` (H, W): the mask file resized with nearest neighbours, or all
    False for an image without a mask (a normal image)."""
    from siad.data import load_mask, resize_mask

    if mask_path is None:
        return np.zeros(shape, dtype=bool)
    mask = load_mask(mask_path)
    return mask if mask.shape == tuple(shape) else resize_mask(mask, tuple(shape))


def _defined(function: Any, *args: Any, **kwargs: Any) -> float | None:
    """A metric's value, or None where it is undefined (one class only, no region, ...)."""
    try:
        return float(function(*args, **kwargs))
    except ValueError:
        return None


def passes_for(detector: Any, settings: EvalSettings) -> tuple[str, ...]:
    """The passes an evaluation reports: pass 2 only with the LLM and self-improvement."""
    from siad.baseline import has_llm

    if settings.chat and settings.self_improve and has_llm(detector) and detector.config.map.use_self_improvement:
        return PASSES
    return PASSES[:1]


def safe_name(name: str) -> str:
    """A class name as a file-name part."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


# ------------------------------------------------------------------------------------ evaluation
def evaluate_samples(detector: Any, samples: Sequence[Any], *, dataset: str, settings: EvalSettings,
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
    from siad.baseline import has_llm
    from siad.data import group_by_class

    if not samples:
        raise ValueError(f"no images in the {settings.split} split of {dataset}")
    run = run or RunOptions(processes=Processes(device=str(detector.device)))
    processes = run.processes
    chat = settings.chat and has_llm(detector)
    passes = passes_for(detector, settings)
    groups = group_by_class(samples)
    ordered = [sample for group in groups.values() for sample in group]
    batches = plan_batches([(name, len(group)) for name, group in groups.items()], settings.batch_size)
    shown = _qualitative_picks(groups, settings.qualitative)
    has_masks = {name: any(s.mask_path is not None for s in group) for name, group in groups.items()}
    description = {"dataset": dataset, "root": root, "model": model, "model_files": file_identity(model),
                   "settings": {k: v for k, v in asdict(settings).items() if k not in ("progress", "workers")},
                   "config": detector.config.to_dict(), "seed": seed,
                   "references": {c: [str(p) for p in paths] for c, paths in (references or {}).items()},
                   "samples": [(str(s.image_path), str(s.mask_path), s.class_name, s.defect_type, s.label)
                               for s in ordered]}
    store = run.store("evaluate", description, _encode_batch, _decode_batch)
    banks: dict[str, Any] = {}  # the few-shot bank of the class being run (batches come class by class)

    def work(batch: Batch, items: list[BatchItem]) -> EvalBatch:
        if batch.group not in banks and references is not None:
            banks.clear()
            banks[batch.group] = detector.build_references(references[batch.group], batch.group, seed=seed or 0,
                                                           batch_size=settings.batch_size)
        return _evaluate_batch(detector, ordered[batch.start:batch.stop], items, batch.group, dataset, settings,
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
            result, class_records, rows = _class_result(name, group, parts, passes, chat, has_masks[name],
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
    evaluation.notes = _notes(detector, settings, evaluation)
    warn_undefined(evaluation)
    return evaluation


def reference_pools(test_samples: Sequence[Any], train_samples: Sequence[Any]) -> dict[str, list[Path]]:
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
    from siad.references import draw_references

    short = {name: len(pool) for name, pool in pools.items() if len(pool) < shots}
    if short:
        raise ValueError(f"--shots {shots}: too few normal images in the train split of {dataset or 'the dataset'} "
                         f"(test images left out) for class(es) {short}; references come from the train split only")
    return {name: draw_references(pool, shots, seed=seed, class_name=name) for name, pool in pools.items()}


def evaluate_few_shot(detector: Any, samples: Sequence[Any], train_samples: Sequence[Any], *, dataset: str,
                      settings: EvalSettings, root: str = "", model: str = "",
                      run: RunOptions | None = None) -> DatasetEvaluation | None:
    """The few-shot protocol (module docstring): one `evaluate_samples` per seed of
    `settings.shot_seeds`, each with `settings.shots` references per class drawn from
    `train_samples`; returns their mean over seeds (`combine_seeds`), which holds them in `per_seed`.
    Every draw is checked before the first image is detected. The draws depend only on the pools, the
    seed and the class, so every process of a distributed run draws the same references (rank 0 returns
    the evaluation, the other ranks None)."""
    if settings.shots < 1:
        raise ValueError("evaluate_few_shot needs settings.shots >= 1")
    if not hasattr(detector, "build_references") or getattr(detector, "method", None) == "self-reference":
        raise ValueError("--shots needs a detector that takes references (a SIAD model or patchcore:...); "
                         f"{getattr(detector, 'name', 'this baseline')} takes none")
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
        metrics = {p: {m: _mean_defined([r.metrics[p][m] for r in rows]) for m in METRICS} for p in first.passes}
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


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


@dataclass
class EvalBatch:
    """What one batch of an evaluation gives: its images' records (in order), the `PixelState` of its
    maps for each pass (classes with masks), and the qualitative rows of its images that were picked."""

    records: list[ImageRecord]
    states: dict[str, Any]
    rows: list[Any]


def _evaluate_batch(detector: Any, samples: list[Any], items: list[BatchItem], name: str, dataset: str,
                    settings: EvalSettings, passes: tuple[str, ...], chat: bool, has_masks: bool,
                    shown: set[Path], bank: Any = None) -> EvalBatch:
    """Detect one batch of one class (`items`: its images from the DataLoader) and reduce it."""
    from siad.metrics import PixelMetricAccumulator
    from siad.prompts import describe

    unreadable = [item for item in items if item.image is None]
    if unreadable:
        raise ValueError(f"cannot read {unreadable[0].path}: {unreadable[0].error}")
    few_shot = {} if bank is None else {"references": bank}  # the zero-shot baseline takes none
    results = detector.detect([item.image for item in items], name, descriptions=describe(name, dataset), chat=chat,
                              self_improve=settings.self_improve, batch_size=len(items),
                              score_smoothing_sigma=settings.smooth_sigma, **few_shot)
    accumulators = {p: PixelMetricAccumulator() for p in passes} if has_masks else {}
    records: list[ImageRecord] = []
    rows: list[Any] = []
    for sample, result in zip(samples, results):
        maps = {"pass1": result.initial_map, "pass2": result.anomaly_map}
        scores = {"pass1": float(result.initial_score), "pass2": float(result.score)}
        texts = {"pass1": result.initial_answer, "pass2": result.answer}
        if has_masks:
            shape = (settings.eval_size,) * 2 if settings.eval_size else maps["pass1"].shape
            mask = eval_mask(sample.mask_path, shape)
            for p in passes:
                accumulators[p].update(mask, resize_map(maps[p], settings.eval_size) if settings.eval_size else maps[p])
        records.append(ImageRecord(
            path=str(sample.image_path), class_name=name, defect_type=sample.defect_type, label=sample.label,
            scores={p: scores[p] for p in passes}, answers={p: texts[p] for p in passes} if chat else {}))
        if sample.image_path in shown:
            rows.append(_qualitative_row(sample, {p: maps[p] for p in passes}, scores, settings))
    return EvalBatch(records=records, states={p: a.state() for p, a in accumulators.items()}, rows=rows)


def _class_result(name: str, samples: list[Any], parts: list[EvalBatch], passes: tuple[str, ...], chat: bool,
                  has_masks: bool, threshold: float) -> tuple[ClassResult, list[ImageRecord], list[Any]]:
    """One class's numbers from its batches' results (in order): image metrics from the scores, pixel
    metrics from the merged `PixelState`s, answer statistics from the records."""
    from siad.metrics import PixelState, average_precision, f1_max, image_auroc

    records = [record for part in parts for record in part.records]
    labels = np.array([r.label for r in records])
    answers = {p: AnswerStats() for p in passes} if chat else {}
    for record in records:
        for p in answers:
            answers[p].add(record.answers[p], record.label, record.scores[p] >= threshold)
    metrics: dict[str, dict[str, float | None]] = {}
    # AP and F1-max of a class without normal images are 1 whatever the scores: undefined, as AUROC is
    one_label = labels.min() == labels.max()
    for p in passes:
        image_scores = np.array([r.scores[p] for r in records])
        state = PixelState.merge([part.states[p] for part in parts]) if has_masks else None
        metrics[p] = {
            "image_auroc": _defined(image_auroc, labels, image_scores),
            "pixel_auroc": _defined(state.pixel_auroc) if state is not None else None,
            "aupro": _defined(state.aupro, fpr_limit=AUPRO_FPR_LIMIT) if state is not None else None,
            "image_ap": None if one_label else _defined(average_precision, labels, image_scores),
            "image_f1_max": None if one_label else _defined(f1_max, labels, image_scores),
        }
    n_anomalous = int(labels.sum())
    result = ClassResult(name=name, n_images=len(samples), n_normal=len(samples) - n_anomalous,
                         n_anomalous=n_anomalous, has_masks=has_masks, metrics=metrics, answers=answers)
    return result, records, [row for part in parts for row in part.rows]


def _encode_batch(batch: EvalBatch) -> dict[str, np.ndarray]:
    """An `EvalBatch` as named arrays (for `siad.runner.DiskStore`; `_decode_batch` reads it back)."""
    arrays: dict[str, np.ndarray] = {"records": json_array([asdict(r) for r in batch.records])}
    for p, state in batch.states.items():
        arrays.update({f"{p}.{key}": value for key, value in state.to_arrays().items()})
    rows = []
    for i, row in enumerate(batch.rows):
        rows.append({"caption": row.caption, "maps": list(row.maps), "mask": row.mask is not None})
        arrays[f"row{i}.image"] = row.image
        if row.mask is not None:
            arrays[f"row{i}.mask"] = row.mask
        arrays.update({f"row{i}.map{j}": m for j, m in enumerate(row.maps.values())})
    arrays["rows"] = json_array(rows)
    return arrays


def _decode_batch(arrays: Mapping[str, np.ndarray]) -> EvalBatch:
    from siad.metrics import PixelState
    from siad.visualize import QualitativeRow

    records = [ImageRecord(**r) for r in from_json_array(arrays["records"])]
    states = {p: PixelState.from_arrays({key.split(".", 1)[1]: value for key, value in arrays.items()
                                         if key.startswith(p + ".")})
              for p in PASSES if f"{p}.counts" in arrays}
    rows = [QualitativeRow(caption=r["caption"], image=arrays[f"row{i}.image"],
                           mask=arrays[f"row{i}.mask"] if r["mask"] else None,
                           maps={m: arrays[f"row{i}.map{j}"] for j, m in enumerate(r["maps"])})
            for i, r in enumerate(from_json_array(arrays["rows"]))]
    return EvalBatch(records=records, states=states, rows=rows)


def _qualitative_picks(groups: dict[str, list[Any]], total: int) -> dict[str, set[Path]]:
    """The images of each class shown in the qualitative grid: up to `total` in all, an equal quota per
    class (`_pick_qualitative`), classes in order."""
    quota = max(1, math.ceil(total / len(groups))) if total > 0 else 0
    picks: dict[str, set[Path]] = {}
    taken = 0
    for name, group in groups.items():
        picks[name] = _pick_qualitative(group, min(quota, total - taken))
        taken += len(picks[name])
    return picks


def _pick_qualitative(samples: list[Any], count: int) -> set[Path]:
    """Up to `count` anomalous images of a class for the qualitative grid, one defect type after
    the other (the first image of each type, then the second, ...), so that the rows differ."""
    by_type: dict[str, list[Any]] = {}
    for sample in samples:
        if sample.label == 1:
            by_type.setdefault(sample.defect_type, []).append(sample)
    picked: list[Path] = []
    depth = 0
    while len(picked) < count and any(depth < len(group) for group in by_type.values()):
        picked += [group[depth].image_path for group in by_type.values() if depth < len(group)]
        depth += 1
    return set(picked[:count])


def _qualitative_row(sample: Any, maps: dict[str, np.ndarray], scores: dict[str, float],
                     settings: EvalSettings) -> Any:
    from PIL import Image

    from siad.image import load_rgb
    from siad.visualize import QualitativeRow

    size = settings.eval_size or 224
    image = np.asarray(Image.fromarray(load_rgb(sample.image_path).rgb).resize((size, size), Image.Resampling.BILINEAR))
    mask = eval_mask(sample.mask_path, (size, size)) if sample.mask_path is not None else None
    caption = f"{sample.class_name} / {sample.defect_type}\n" + "  ".join(
        f"{SCORE_SYMBOL[p]}={scores[p]:.3f}" for p in maps)
    named = {f"pass {p[-1]} map ({MAP_SYMBOL[p]})": resize_map(m, size) for p, m in maps.items()}
    return QualitativeRow(caption=caption, image=image, mask=mask, maps=named)


def _means(classes: list[ClassResult], passes: tuple[str, ...]) -> tuple[dict, dict]:
    mean: dict[str, dict[str, float | None]] = {}
    mean_answers: dict[str, dict[str, Any]] = {}
    for p in passes:
        mean[p] = {}
        for metric in METRICS:
            values = [c.metrics[p][metric] for c in classes if c.metrics[p][metric] is not None]
            mean[p][metric] = float(np.mean(values)) if values else None
        stats = [c.answers[p] for c in classes if p in c.answers]
        if stats:
            accuracies = [s.accuracy for s in stats if s.accuracy is not None]
            agreements = [s.agreement for s in stats if s.agreement is not None]
            mean_answers[p] = {"accuracy": float(np.mean(accuracies)) if accuracies else None,
                               "agreement": float(np.mean(agreements)) if agreements else None,
                               "correct": sum(s.correct for s in stats), "wrong": sum(s.wrong for s in stats),
                               "neither": sum(s.neither for s in stats), "agree": sum(s.agree for s in stats),
                               "total": sum(s.total for s in stats)}
    return mean, mean_answers


def _baseline_description(detector: Any) -> str:
    method = getattr(detector, "method", None)
    backbone = detector.config.vision.backbone
    if method == "self-reference":
        return (f"Self-reference baseline ({backbone} stages {list(detector.config.vision.stages)}, no training: each "
                f"patch against the same image's patches outside its neighbourhood)")
    if method == "patchcore":
        return (f"PatchCore-style baseline ({backbone} stages {list(detector.config.vision.stages)}, no training: "
                f"each patch's nearest-neighbour distance to the class's normal references)")
    return "Zero-shot baseline (ImageBind + prompt ensemble, no training, WinCLIP-style)"


def _settings_dict(detector: Any, settings: EvalSettings, chat: bool) -> dict[str, Any]:
    return {
        "split": settings.split,
        "eval_size": settings.eval_size,
        "pixel_resolution": "original" if settings.eval_size == 0 else f"{settings.eval_size}x{settings.eval_size}",
        "smooth_sigma": float(settings.smooth_sigma),
        "model_smooth_sigma": float(detector.config.map.score_smoothing_sigma),
        "chat": chat,
        "self_improve": settings.self_improve,
        "batch_size": settings.batch_size,
        "aupro_fpr_limit": AUPRO_FPR_LIMIT,
        "threshold": float(detector.config.map.threshold),
        "resize_mode": detector.config.vision.resize_mode,
        "shots": settings.shots,
        "shot_seeds": list(settings.shot_seeds) if settings.shots else [],
        **({"few_shot_weight": float(detector.config.map.few_shot_weight),
            "few_shot_features": detector.config.map.few_shot_features,
            "max_bank_patches": detector.config.map.max_bank_patches} if settings.shots else {}),
    }


def undefined_image_metrics(classes: Sequence[ClassResult]) -> list[str]:
    """The classes whose image metrics are undefined: only normal or only anomalous images (image AUROC
    needs both; AP and F1-max would be 1 whatever the scores without normal images)."""
    return [c.name for c in classes if c.n_normal == 0 or c.n_anomalous == 0]


def _one_label_counts(classes: Sequence[ClassResult], names: Sequence[str]) -> str:
    return ", ".join(f"{c.name}: {c.n_normal} normal, {c.n_anomalous} anomalous" for c in classes if c.name in names)


def warn_undefined(evaluation: DatasetEvaluation) -> None:
    """A warning naming the classes whose image metrics are undefined and left out of the means."""
    undefined = undefined_image_metrics(evaluation.classes)
    if undefined:
        warnings.warn(f"{evaluation.dataset}: image AUROC, AP and F1-max are undefined for {len(undefined)} class(es) "
                      f"with one label only ({_one_label_counts(evaluation.classes, undefined)}); reported as "
                      f"undefined and left out of the means", UndefinedMetricWarning, stacklevel=2)


class UndefinedMetricWarning(UserWarning):
    """A metric of a class is undefined (one label only) and left out of the means."""


def _notes(detector: Any, settings: EvalSettings, evaluation: DatasetEvaluation) -> list[str]:
    from siad.baseline import has_llm

    notes = []
    if not has_llm(detector):
        notes.append(f"{_baseline_description(detector)}: no LLM, so pass 1 only and no answers.")
    elif not settings.chat:
        notes.append("--map-only: the LLM did not run, so there is no self-improvement pass (pass 2, S' and M', "
                     "needs the LLM's answer R) and no answers. Leave --map-only out for the paper's protocol.")
    elif not settings.self_improve:
        notes.append("--no-self-improve: pass 1 only (S, M and the answer R).")
    elif len(evaluation.passes) == 1:
        notes.append("The model's config switches self-improvement off (use_self_improvement=false): pass 1 only.")
    if evaluation.shots:
        config = detector.config
        notes.append(f"{evaluation.shots}-shot: {evaluation.shots} normal images of each class drawn from the train "
                     f"split with the seed (no test image), one reference bank per class "
                     f"({config.map.few_shot_features} features, at most {config.map.max_bank_patches} rows per stage); both "
                     f"passes fuse their stage maps with the reference maps, weight {config.map.few_shot_weight:g} "
                     "(not the paper's protocol, which is zero-shot). The references are listed in report.json.")
    size = settings.eval_size
    where = "each image's original resolution" if size == 0 else (
        f"{size} x {size} (maps resized bilinearly, masks with nearest neighbours)")
    if any(c.has_masks for c in evaluation.classes):
        notes.append(f"Pixel metrics at {where}; AUPRO up to FPR {AUPRO_FPR_LIMIT}.")
    sigma = evaluation.settings["smooth_sigma"]
    notes.append("No smoothing of the maps before scoring (the paper's protocol)." if sigma == 0 else
                 f"Gaussian smoothing sigma {sigma:g} on the map before scoring (not the paper's protocol).")
    no_masks = [c.name for c in evaluation.classes if not c.has_masks]
    if no_masks:
        notes.append(f"No masks for {', '.join(no_masks)}: pixel metrics '-' (image metrics only).")
    undefined = undefined_image_metrics(evaluation.classes)
    if undefined:
        notes.append(f"Image AUROC, AP and F1-max undefined for {', '.join(undefined)} (one label only: "
                     f"{_one_label_counts(evaluation.classes, undefined)}); the mean leaves them out.")
    if evaluation.chat:
        notes.append("Answer accuracy: the answer's yes/no (answer_is_anomalous) against the label; agreement: the "
                     f"answer's yes/no against the verdict of the same pass (score >= the model's threshold "
                     f"{detector.config.map.threshold:.3f}); an answer that says neither counts as wrong and as disagreeing.")
        model_sigma = evaluation.settings["model_smooth_sigma"]
        if model_sigma != sigma:
            notes.append(f"The model's threshold was set for smoothing sigma {model_sigma:g}; the scores here use "
                         f"{sigma:g}, so agreement compares the answers with verdicts the model would not give.")
    return notes


# ------------------------------------------------------------------------------------ writing
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.1f}"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def _table_header(passes: tuple[str, ...], chat: bool, first: list[str]) -> list[str]:
    header = list(first)
    for p in passes:
        for metric in METRICS:
            symbol = MAP_SYMBOL[p] if metric in PIXEL_METRICS else SCORE_SYMBOL[p]
            header.append(f"{METRIC_TITLES[metric]} ({symbol})")
    if chat:
        header += [f"acc. ({ANSWER_SYMBOL[p]})" for p in passes]
        header += [f"agree ({ANSWER_SYMBOL[p]})" for p in passes]
    return header


def _table_cells(metrics: dict[str, dict[str, float | None]], answers: dict[str, Any], passes: tuple[str, ...],
                 chat: bool) -> list[str]:
    cells = [_pct(metrics[p][m]) for p in passes for m in METRICS]
    if chat:
        for key in ("accuracy", "agreement"):
            for p in passes:
                stats = answers.get(p)
                cells.append(_pct(getattr(stats, key) if isinstance(stats, AnswerStats) else (stats or {}).get(key)))
    return cells


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _gain_line(mean: dict[str, dict[str, float | None]], passes: tuple[str, ...]) -> str | None:
    if len(passes) < 2:
        return None
    parts = []
    for metric in METRICS:
        a, b = mean["pass1"][metric], mean["pass2"][metric]
        if a is not None and b is not None:
            parts.append(f"{METRIC_TITLES[metric]} {100.0 * (b - a):+.1f}")
    return "Gain of self-improvement (pass 2 - pass 1, mean, points): " + (", ".join(parts) if parts else "-")


def markdown_report(evaluation: DatasetEvaluation, command: str, plots: bool = True) -> str:
    """The text of report.md (`plots`: whether the plot files are written beside it)."""
    e = evaluation
    lines = [f"# Evaluation: {e.dataset} ({e.settings['split']}) with {e.model}, {_mode_title(e)}", "",
             f"Command: `{command}`", "",
             "Pass 1: S, M (and R); pass 2 (self-improvement): S', M' (and R'). Values in percent; '-': undefined.",
             ""]
    header = _table_header(e.passes, e.chat, ["class", "images"])
    rows = [[c.name, str(c.n_images), *_table_cells(c.metrics, c.answers, e.passes, e.chat)] for c in e.classes]
    rows.append(["**mean**", str(sum(c.n_images for c in e.classes)),
                 *_table_cells(e.mean, e.mean_answers, e.passes, e.chat)])
    lines += _markdown_table(header, rows) + [""]
    if e.per_seed:
        lines += [f"Per seed (mean over classes; seed_<seed>/report.md has each seed's classes):", ""]
        seed_rows = [[f"seed {s.seed}", str(sum(c.n_images for c in s.classes)),
                      *_table_cells(s.mean, s.mean_answers, e.passes, e.chat)] for s in e.per_seed]
        seed_rows.append(["**mean over seeds**", str(sum(c.n_images for c in e.classes)),
                          *_table_cells(e.mean, e.mean_answers, e.passes, e.chat)])
        lines += _markdown_table(_table_header(e.passes, e.chat, ["seed", "images"]), seed_rows) + [""]
    gain = _gain_line(e.mean, e.passes)
    if gain:
        lines += [gain, ""]
    if e.chat:
        neither = ", ".join(f"{e.mean_answers[p]['neither']} ({ANSWER_SYMBOL[p]})" for p in e.passes
                            if p in e.mean_answers)
        over = " over all seeds" if e.per_seed else ""
        lines += [f"Answers that say neither yes nor no (counted as wrong){over}: {neither}.", ""]
    lines += ["Notes:", ""] + [f"- {note}" for note in e.notes] + [""]
    if e.per_seed:
        files = "report.json (every number, as fractions), report.csv; seed_<seed>/ (each seed's report)"
        count = f"{sum(c.n_images for c in e.classes)} images x {len(e.per_seed)} seeds"
    else:
        files = "report.json (every number, as fractions), report.csv, scores.csv"
        if plots:
            files += ", roc_<class>.png, histograms.png" + (", qualitative.png" if e.qualitative else "")
        count = f"{len(e.records)} images"
    where = f" on {e.processes} processes" if e.processes > 1 else ""
    lines += [f"{count} in {e.seconds:.1f} s{where}. Files: {files}.", ""]
    return "\n".join(lines)


def _mode_title(evaluation: DatasetEvaluation) -> str:
    """"zero-shot", "4-shot (seed 1)" or "4-shot (mean over seeds 0, 1, 2)"."""
    e = evaluation
    if not e.shots:
        return "zero-shot"
    if e.per_seed:
        return f"{e.shots}-shot (mean over seeds {', '.join(str(s.seed) for s in e.per_seed)})"
    return f"{e.shots}-shot (seed {e.seed})"


def report_dict(evaluation: DatasetEvaluation, command: str) -> dict[str, Any]:
    """The content of report.json."""
    from siad import __version__

    e = evaluation
    return {
        "command": command,
        "siad_version": __version__,
        "model": e.model,
        "dataset": e.dataset,
        "root": e.root,
        "split": e.settings["split"],
        "passes": list(e.passes),
        "metrics": list(METRICS),
        "settings": e.settings,
        "classes": {c.name: {"n_images": c.n_images, "n_normal": c.n_normal, "n_anomalous": c.n_anomalous,
                             "has_masks": c.has_masks, **{p: c.metrics[p] for p in e.passes},
                             "answers": {p: s.as_dict() for p, s in c.answers.items()}}
                    for c in e.classes},
        "mean": {"n_images": sum(c.n_images for c in e.classes), **{p: e.mean[p] for p in e.passes},
                 "answers": e.mean_answers},
        "shots": e.shots,
        **({"seed": e.seed, "references": e.references} if e.shots and not e.per_seed else {}),
        **({"seeds": {str(s.seed): {"report": f"{seed_folder(s.seed)}/report.json",
                                    "mean": {p: s.mean[p] for p in e.passes}, "answers": s.mean_answers,
                                    "references": s.references} for s in e.per_seed}} if e.per_seed else {}),
        "notes": e.notes,
        "seconds": e.seconds,
        "processes": e.processes,
    }


def seed_folder(seed: int | None) -> str:
    """The folder of one seed's report inside a few-shot report's folder."""
    return f"seed_{seed}"


def csv_rows(evaluation: DatasetEvaluation) -> list[dict[str, str]]:
    """The rows of report.csv (see the module docstring)."""
    e = evaluation
    rows = [row for one in e.per_seed for row in csv_rows(one)]  # few-shot: each seed's rows, then the mean
    seed = "mean" if e.per_seed else ("" if e.seed is None else e.seed)
    entries = [(c.name, c.n_images, c.n_normal, c.n_anomalous, c.metrics,
                {p: s.as_dict() for p, s in c.answers.items()}) for c in e.classes]
    entries.append(("mean", sum(c.n_images for c in e.classes), sum(c.n_normal for c in e.classes),
                    sum(c.n_anomalous for c in e.classes), e.mean, e.mean_answers))
    for name, n, n_normal, n_anomalous, metrics, answers in entries:
        for p in e.passes:
            row = {"dataset": e.dataset, "class": name, "pass": p, "shots": e.shots, "seed": seed, "n_images": n,
                   "n_normal": n_normal, "n_anomalous": n_anomalous, **{m: metrics[p][m] for m in METRICS},
                   "answer_accuracy": answers.get(p, {}).get("accuracy"),
                   "answer_agreement": answers.get(p, {}).get("agreement"),
                   "answers_neither": answers.get(p, {}).get("neither")}
            rows.append({k: _cell(v) for k, v in row.items()})
    return rows


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_report(evaluation: DatasetEvaluation, out: Path, command: str, plots: bool = True) -> list[Path]:
    """Write report.md/.json/.csv, scores.csv and the plots into `out` (created). Returns the paths.
    A few-shot mean over seeds (`combine_seeds`) writes each seed's report into `out/seed_<seed>/`
    and the mean's report.md/.json/.csv into `out`."""
    from siad.visualize import plot_histograms, plot_qualitative, plot_roc

    e = evaluation
    out.mkdir(parents=True, exist_ok=True)
    written = [path for one in e.per_seed for path in write_report(one, out / seed_folder(one.seed), command, plots)]
    written += [out / "report.md", out / "report.json"]
    written[-2].write_text(markdown_report(e, command, plots), encoding="utf-8")
    written[-1].write_text(json.dumps(report_dict(e, command), indent=2) + "\n", encoding="utf-8")
    written.append(_write_csv(out / "report.csv", CSV_COLUMNS, csv_rows(e)))
    if e.per_seed:
        return written
    score_rows = [{"path": r.path, "class": r.class_name, "defect_type": r.defect_type, "label": r.label,
                   **{f"score_{p}": r.scores.get(p) for p in PASSES}, **{f"answer_{p}": r.answers.get(p) for p in PASSES}}
                  for r in e.records]
    written.append(_write_csv(out / "scores.csv", SCORE_COLUMNS, [{k: _cell(v) for k, v in row.items()}
                                                                   for row in score_rows]))
    if not plots:
        return written
    for c in e.classes:
        group = [r for r in e.records if r.class_name == c.name]
        labels = [r.label for r in group]
        curves = {f"pass {p[-1]} ({SCORE_SYMBOL[p]})": (labels, [r.scores[p] for r in group]) for p in e.passes}
        written.append(plot_roc(out / f"roc_{safe_name(c.name)}.png", f"{e.dataset} / {c.name}", curves))
    labels = [r.label for r in e.records]
    groups = {f"pass {p[-1]} ({SCORE_SYMBOL[p]})": (labels, [r.scores[p] for r in e.records]) for p in e.passes}
    written.append(plot_histograms(out / "histograms.png", groups))
    if e.qualitative:
        written.append(plot_qualitative(out / "qualitative.png", e.qualitative))
    return written


def write_summary(evaluations: list[DatasetEvaluation], out: Path, command: str) -> list[Path]:
    """The protocol summary in `out`: report.md/.json/.csv with the mean row of every dataset."""
    out.mkdir(parents=True, exist_ok=True)
    chat = any(e.chat for e in evaluations)
    passes = PASSES if any(len(e.passes) == 2 for e in evaluations) else PASSES[:1]
    header = _table_header(passes, chat, ["dataset", "model", "images"])
    rows = []
    for e in evaluations:
        mean = {p: e.mean.get(p, {m: None for m in METRICS}) for p in passes}
        rows.append([e.dataset, e.model, str(sum(c.n_images for c in e.classes)),
                     *_table_cells(mean, e.mean_answers, passes, chat)])
    lines = [f"# Evaluation: UZAD cross-dataset protocol, {_mode_title(evaluations[0])}", "", f"Command: `{command}`", "",
             "Mean over the classes of each test dataset; each dataset is evaluated with the checkpoint trained on "
             "its source dataset. Values in percent; '-': undefined. Per-dataset reports: `<dataset>/report.md`.", ""]
    lines += _markdown_table(header, rows) + [""]
    md = out / "report.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    data = {"command": command, "protocol": "uzad", "mapping": UZAD_PROTOCOL,
            "shots": evaluations[0].shots,
            "datasets": {e.dataset: {"model": e.model, "root": e.root, "report": f"{e.dataset}/report.json",
                                     "passes": list(e.passes), "n_images": sum(c.n_images for c in e.classes),
                                     **{p: e.mean[p] for p in e.passes}, "answers": e.mean_answers}
                         for e in evaluations}}
    js = out / "report.json"
    js.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    csv_all = [row for e in evaluations for row in csv_rows(e) if row["class"] == "mean"]
    return [md, js, _write_csv(out / "report.csv", CSV_COLUMNS, csv_all)]


# ------------------------------------------------------------------------------------ command line
def _pairs(values: Sequence[str] | None, option: str) -> dict[str, str]:
    """["KEY=VALUE", ...] -> {key (lower case): value}."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{option} takes NAME=VALUE items, got {item!r}")
        key = key.strip().lower()
        if key in pairs:
            raise ValueError(f"{option}: {key} given twice")
        pairs[key] = value.strip()
    return pairs


@dataclass(frozen=True)
class Job:
    """One dataset to evaluate with one model."""

    dataset: str
    root: Path
    model: str


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    """The (dataset, root, model) runs the arguments ask for; ValueError for inconsistent arguments."""
    if args.protocol is None:
        if args.models or args.datasets:
            raise ValueError("--models and --datasets belong to --protocol uzad; use --model and --dataset/--root")
        if not (args.model and args.dataset and args.root):
            raise ValueError("give --model, --dataset and --root (or --protocol uzad)")
        return [Job(args.dataset.lower(), Path(args.root), args.model)]
    if args.dataset or args.root:
        raise ValueError("--protocol uzad takes --datasets NAME=ROOT ..., not --dataset/--root")
    if args.classes:
        raise ValueError("--classes applies to one dataset; it cannot be combined with --protocol uzad")
    if bool(args.model) == bool(args.models):
        raise ValueError("--protocol uzad needs either --models TRAIN=M ... (the checkpoints by training set) or "
                         "--model M (one model for every dataset, e.g. the zero-shot baseline)")
    datasets = _pairs(args.datasets, "--datasets")
    if not datasets:
        raise ValueError("--protocol uzad needs --datasets NAME=ROOT ...")
    unknown = [d for d in datasets if d not in UZAD_PROTOCOL]
    if unknown:
        raise ValueError(f"--datasets: {unknown} not in the UZAD protocol; expected some of {sorted(UZAD_PROTOCOL)}")
    if args.model:
        return [Job(d, Path(root), args.model) for d, root in datasets.items()]
    models = _pairs(args.models, "--models")
    sources = sorted(set(UZAD_PROTOCOL.values()))
    bad = [m for m in models if m not in sources]
    if bad:
        raise ValueError(f"--models: {bad} are not training sets of the protocol; expected some of {sources}")
    needed = {d: UZAD_PROTOCOL[d] for d in datasets}
    missing = sorted({train for train in needed.values() if train not in models})
    if missing:
        wanted = ", ".join(f"{d} (trained on {t})" for d, t in needed.items() if t in missing)
        raise ValueError(f"--models lacks the checkpoint(s) {missing}, needed for {wanted}")
    return [Job(d, Path(root), models[needed[d]]) for d, root in datasets.items()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m siad.evaluate",
        description="Per-class image/pixel AUROC, AUPRO, AP and F1-max (and answer accuracy) of a SIAD model or a "
                    "baseline (zero-shot:, self-reference:, patchcore:), for both passes of self-improvement, like the "
                    "paper's Table 1.",
        epilog="Examples:\n"
               "  python -m siad.evaluate --model runs/siad --dataset mvtec --root data/mvtec --out runs/eval\n"
               "  python -m siad.evaluate --model zero-shot:runs/siad --dataset visa --root data/visa --out runs/zs\n"
               "  python -m siad.evaluate --model self-reference:checkpoints/siad-mini --dataset mvtec --root data/mvtec "
               "--out runs/self\n"
               "  python -m siad.evaluate --model runs/siad --dataset mvtec --root data/mvtec --shots 4 --shot-seeds 0 1 2 "
               "--out runs/4shot\n"
               "  python -m siad.evaluate --protocol uzad --models mvtec=runs/m visa=runs/v br35h=runs/b brainmri=runs/r \\\n"
               "      --datasets visa=data/visa mvtec=data/mvtec headct=data/headct --out runs/uzad\n"
               "  torchrun --nproc_per_node 8 -m siad.evaluate --device cuda ...   (one process per GPU; README: launchers)\n"
               "See the module docstring (python -c 'import siad.evaluate; help(siad.evaluate)') for the file formats.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="SIAD model folder or Hub id, or an untrained baseline: zero-shot:<SIAD folder "
                                        "| Hub id | imagebind_huge.pth | tiny> (ImageBind + prompts), self-reference:<SIAD "
                                        "folder | backbone name> (zero-shot) or patchcore:<SIAD folder | backbone name> "
                                        "(needs --shots)")
    parser.add_argument("--dataset", help="dataset reader: mvtec, visa, mpdd, btad, dtd, sdd, brainmri, headct, br35h, "
                                          "mvtec_format, meta")
    parser.add_argument("--root", type=Path, help="the dataset folder, as distributed")
    parser.add_argument("--classes", nargs="+", help="only these classes (default: all)")
    parser.add_argument("--split", default="test", choices=["train", "test"], help="split (default test)")
    parser.add_argument("--protocol", choices=["uzad"], default=None,
                        help="uzad: the paper's cross-dataset protocol over --datasets with --models")
    parser.add_argument("--models", nargs="+", metavar="TRAIN=MODEL",
                        help="with --protocol uzad: checkpoints by training set (mvtec, visa, br35h, brainmri)")
    parser.add_argument("--datasets", nargs="+", metavar="NAME=ROOT", help="with --protocol uzad: the test datasets")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the report and plots (created)")
    parser.add_argument("--smooth-sigma", type=float, default=0.0,
                        help="Gaussian sigma on the map before scoring (default 0: none, the paper's protocol)")
    parser.add_argument("--eval-size", type=int, default=0,
                        help="side of the maps and masks for pixel metrics (default 0: each image's original "
                             "resolution, the paper's protocol; 224 is faster)")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--map-only", action="store_true",
                       help="no LLM: pass 1 maps and scores only (fast; no answers, no self-improvement)")
    modes.add_argument("--no-self-improve", action="store_true", help="pass 1 with its answer R only")
    modes.add_argument("--chat", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old commands
    parser.add_argument("--batch-size", type=int, default=8, help="images per detect call (default 8)")
    parser.add_argument("--shots", type=int, default=0,
                        help="few-shot: K normal references per class from the dataset's train split (default 0: "
                             "zero-shot)")
    parser.add_argument("--shot-seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="with --shots: the seeds of the references' draw, one evaluation each, reported with "
                             "their mean (default: 0)")
    parser.add_argument("--qualitative", type=int, default=8, help="rows of qualitative.png (default 8; 0: none)")
    parser.add_argument("--no-plots", action="store_true", help="write the reports only")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where raw KolektorSDD is tiled (default: <out>/cache)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_run_arguments(parser, resume="skip the batches an interrupted run with the same model, data and settings finished "
                             "(kept in <out>/.siad-resume until the report is written)")
    parser.add_argument("--card", action="store_true",
                        help="write the measured results into the evaluated model folder's card (README.md "
                             "model-index and a results table); the model must be a local SIAD folder")
    parser.add_argument("--card-dataset", default=None, metavar="ID",
                        help="with --card: the dataset id the results are filed under (default: --dataset; needed "
                             "for mvtec_format and meta, e.g. siad-synth-unseen)")
    parser.add_argument("--card-name", default=None, metavar="NAME",
                        help="with --card: the dataset's display name (default: the id)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring). Returns 0; errors exit with status 2."""
    parser = _parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(arguments)
    if args.batch_size <= 0:
        parser.error("--batch-size must be positive")
    if args.eval_size < 0:
        parser.error("--eval-size must be >= 0")
    if args.smooth_sigma < 0:
        parser.error("--smooth-sigma must be >= 0")
    if args.qualitative < 0:
        parser.error("--qualitative must be >= 0")
    if args.shots < 0:
        parser.error("--shots must be >= 0")
    if args.shot_seeds is not None and args.shots == 0:
        parser.error("--shot-seeds needs --shots K (K >= 1)")
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    seeds = tuple(dict.fromkeys(args.shot_seeds or [0]))
    try:
        jobs = plan_jobs(args)
    except ValueError as error:
        parser.error(str(error))
    from siad.baseline import PATCHCORE_PREFIX, SELF_REFERENCE_PREFIX, ZERO_SHOT_PREFIX

    if args.shots and any(job.model.startswith((ZERO_SHOT_PREFIX, SELF_REFERENCE_PREFIX)) for job in jobs):
        parser.error("--shots needs a detector that takes references (a SIAD model or patchcore:...): the zero-shot "
                     "and self-reference baselines take none")
    if not args.shots and any(job.model.startswith(PATCHCORE_PREFIX) for job in jobs):
        parser.error("patchcore:... compares images with normal references of their class: give --shots K")
    if args.card:  # checked before anything runs
        if any(job.model.startswith((ZERO_SHOT_PREFIX, SELF_REFERENCE_PREFIX, PATCHCORE_PREFIX))
               or not (Path(job.model) / "config.json").is_file() for job in jobs):
            parser.error("--card writes into a local SIAD model folder's card: give --model a folder (not a Hub id "
                         "or the zero-shot baseline)")
        if args.card_dataset is None and any(job.dataset in ("mvtec_format", "meta") for job in jobs):
            parser.error("--card with mvtec_format or meta needs --card-dataset ID (what the results are filed under)")
        if args.card_dataset is not None and len(jobs) > 1:
            parser.error("--card-dataset names one dataset: give it with --dataset, not --protocol")
    command = "python -m siad.evaluate " + shlex.join(arguments)
    settings = EvalSettings(eval_size=args.eval_size, smooth_sigma=args.smooth_sigma, chat=not args.map_only,
                            self_improve=not args.no_self_improve, batch_size=args.batch_size, split=args.split,
                            qualitative=args.qualitative, progress=not args.quiet, shots=args.shots,
                            shot_seeds=seeds)
    try:
        check_output_folder(args.out)  # before any model runs
        processes = start_processes(args.device)
        evaluations = run_jobs(jobs, settings, args, command, processes)
    except (FileNotFoundError, ValueError, OSError, RunFailed) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if not processes.is_main:
        return 0
    for e in evaluations:
        values = ", ".join(f"{METRIC_TITLES[m]} {_pct(e.mean[p][m])}" for p in e.passes for m in ("image_auroc",
                                                                                                   "pixel_auroc"))
        print(f"{e.dataset}: {sum(c.n_images for c in e.classes)} images, {_mode_title(e)}, mean {values} "
              f"({', '.join(e.passes)})")
    print(f"report: {args.out / 'report.md'}")
    return 0


def run_jobs(jobs: list[Job], settings: EvalSettings, args: argparse.Namespace, command: str,
             processes: Processes | None = None) -> list[DatasetEvaluation]:
    """Read every dataset first (a wrong root fails before any model loads), then evaluate them
    grouped by model, loading each model once, and write the reports. With several processes every
    process reads the datasets (`in_turns`: raw KolektorSDD is tiled into the cache once) and runs its
    shards; rank 0 writes the reports and returns the evaluations, the other ranks return []."""
    from siad.baseline import detector_name, load_detector, parse_dtype
    from siad.data import load_dataset

    processes = processes or Processes(device=args.device)
    cache_dir = args.cache_dir or args.out / "cache"

    def read_splits() -> dict[str, list[Any]]:
        return {job.dataset: load_dataset(job.dataset, job.root, settings.split, cache_dir=cache_dir,
                                          classes=args.classes) for job in jobs}

    samples = in_turns(processes, read_splits)
    for job in jobs:
        if not samples[job.dataset]:
            raise ValueError(f"no images in the {settings.split} split of {job.dataset} at {job.root}")
    train: dict[str, list[Any]] = {}
    if settings.shots:  # the references' pools, and every draw, checked before any model loads
        for job in jobs:
            train[job.dataset] = load_dataset(job.dataset, job.root, "train", cache_dir=cache_dir,
                                              classes=sorted({s.class_name for s in samples[job.dataset]}))
            pools = reference_pools(samples[job.dataset], train[job.dataset])
            for seed in settings.shot_seeds:
                draw_class_references(pools, settings.shots, seed, job.dataset)
    single = len(jobs) == 1 and args.protocol is None
    done: dict[str, DatasetEvaluation] = {}
    for spec in dict.fromkeys(job.model for job in jobs):
        detector = load_detector(spec, dtype=parse_dtype(args.dtype), device=processes.device)
        for job in (j for j in jobs if j.model == spec):
            name = detector_name(detector, spec)
            out = args.out if single else args.out / job.dataset
            run = RunOptions(processes=processes, workers=args.workers, folder=out, resume=args.resume)
            if settings.shots:
                evaluation = evaluate_few_shot(detector, samples[job.dataset], train[job.dataset], dataset=job.dataset,
                                               settings=settings, root=str(job.root), model=name, run=run)
            else:
                evaluation = evaluate_samples(detector, samples[job.dataset], dataset=job.dataset, settings=settings,
                                              root=str(job.root), model=name, run=run)
            if evaluation is not None:  # rank 0
                write_report(evaluation, out, command, plots=not args.no_plots)
                done[job.dataset] = evaluation
        del detector
        _release_memory()
    if not processes.is_main:
        return []
    evaluations = [done[job.dataset] for job in jobs]
    if not single:
        write_summary(evaluations, args.out, command)
    if args.card:
        write_cards(jobs, done, args, command)
    return evaluations


def card_results(evaluation: DatasetEvaluation, dataset_type: str, dataset_name: str) -> dict[str, Any]:
    """One dataset's measured results in the shape `siad.model_card.write_card_results` takes: the mean
    over classes of every metric and, with answers, their accuracy and agreement, for each pass."""
    shots = f", {evaluation.shots}-shot (mean of {len(evaluation.per_seed)} seeds)" if evaluation.shots else ""
    metrics = []
    for p in evaluation.passes:
        label = f"pass {p[-1]}"
        for m in METRICS:
            symbol = MAP_SYMBOL[p] if m in PIXEL_METRICS else SCORE_SYMBOL[p]
            metrics.append({"type": m, "name": f"{METRIC_TITLES[m]} ({symbol}), {label}{shots}",
                            "value": evaluation.mean[p][m]})
        answers = evaluation.mean_answers.get(p, {})
        for key in ("accuracy", "agreement"):
            if answers.get(key) is not None:
                metrics.append({"type": f"answer_{key}", "name": f"answer {key} ({ANSWER_SYMBOL[p]}), {label}{shots}",
                                "value": answers[key]})
    suffix = f":{evaluation.shots}-shot" if evaluation.shots else ""
    return {"dataset_type": dataset_type + suffix, "dataset_name": dataset_name + (f" ({evaluation.shots}-shot)" if
            evaluation.shots else ""), "split": evaluation.settings["split"], "metrics": metrics}


def write_cards(jobs: list[Job], done: dict[str, DatasetEvaluation], args: argparse.Namespace, command: str) -> None:
    """--card: each evaluated model folder's README.md gets the results measured on its weights
    (`siad.model_card.write_card_results`), one entry per dataset."""
    from siad.model_card import write_card_results

    by_model: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        name = args.card_dataset or job.dataset
        by_model.setdefault(job.model, []).append(card_results(done[job.dataset], name, args.card_name or name))
    for model, results in by_model.items():
        path = write_card_results(Path(model), results, command=command)
        print(f"card: wrote {len(results)} measured result(s) into {path}")


def _release_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
