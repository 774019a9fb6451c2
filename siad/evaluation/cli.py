"""The command line of `python -m siad.evaluate` / `siad evaluate` (documented in `siad.evaluate`'s
docstring): arguments, the runs they ask for (`plan_jobs`), each dataset read and each model loaded
once (`run_jobs`), the reports and, with `--card`, the model cards."""

from __future__ import annotations

import argparse
import gc
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from siad.data.readers import load_dataset
from siad.data.registry import dataset_names, dataset_spec, dataset_specs
from siad.data.sample import Sample
from siad.evaluation.card import CardEntry, write_cards
from siad.evaluation.metrics import metric
from siad.evaluation.protocols import (draw_class_references, evaluate_few_shot, evaluate_samples, reference_pools,
                                       uzad_protocol)
from siad.evaluation.reports import mode_title, pct, write_report, write_summary
from siad.evaluation.results import DatasetEvaluation, EvalSettings
from siad.runner import (Processes, RunFailed, RunOptions, add_run_arguments, check_output_folder, in_turns,
                         start_processes)


# ------------------------------------------------------------------------------------ the runs asked for
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
    protocol = uzad_protocol()
    unknown = [d for d in datasets if d not in protocol]
    if unknown:
        raise ValueError(f"--datasets: {unknown} not in the UZAD protocol; expected some of {sorted(protocol)}")
    if args.model:
        return [Job(d, Path(root), args.model) for d, root in datasets.items()]
    models = _pairs(args.models, "--models")
    sources = sorted(set(protocol.values()))
    bad = [m for m in models if m not in sources]
    if bad:
        raise ValueError(f"--models: {bad} are not training sets of the protocol; expected some of {sources}")
    needed = {d: protocol[d] for d in datasets}
    missing = sorted({train for train in needed.values() if train not in models})
    if missing:
        wanted = ", ".join(f"{d} (trained on {t})" for d, t in needed.items() if t in missing)
        raise ValueError(f"--models lacks the checkpoint(s) {missing}, needed for {wanted}")
    return [Job(d, Path(root), models[needed[d]]) for d, root in datasets.items()]


# ------------------------------------------------------------------------------------ arguments
def _parser() -> argparse.ArgumentParser:
    """The arguments; the dataset names and the protocol's training sets come from the dataset registry."""
    sources = set(uzad_protocol().values())
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
    parser.add_argument("--dataset", type=str.lower, choices=dataset_names(), metavar="DATASET",
                        help=f"dataset reader: {', '.join(dataset_names())}")
    parser.add_argument("--root", type=Path, help="the dataset folder, as distributed")
    parser.add_argument("--classes", nargs="+", help="only these classes (default: all)")
    parser.add_argument("--split", default="test", choices=["train", "test"], help="split (default test)")
    parser.add_argument("--protocol", choices=["uzad"], default=None,
                        help="uzad: the paper's cross-dataset protocol over --datasets with --models")
    parser.add_argument("--models", nargs="+", metavar="TRAIN=MODEL",
                        help="with --protocol uzad: checkpoints by training set "
                             f"({', '.join(s.name for s in dataset_specs() if s.name in sources)})")
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
                             f"for {' and '.join(s.name for s in dataset_specs() if s.generic)}, e.g. siad-synth-unseen)")
    parser.add_argument("--card-name", default=None, metavar="NAME",
                        help="with --card: the dataset's display name (default: the id)")
    return parser


# ------------------------------------------------------------------------------------ running
def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see `siad.evaluate`'s docstring). Returns 0; errors exit with status 2."""
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
    # deferred: siad.baseline imports torch and the encoders (`--help` and bad arguments need neither)
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
        if args.card_dataset is None and any(dataset_spec(job.dataset).generic for job in jobs):
            generic = " or ".join(s.name for s in dataset_specs() if s.generic)
            parser.error(f"--card with {generic} needs --card-dataset ID (what the results are filed under)")
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
        values = ", ".join(f"{metric(m).title} {pct(e.mean[p][m])}" for p in e.passes
                           for m in ("image_auroc", "pixel_auroc"))
        print(f"{e.dataset}: {e.n_images} images, {mode_title(e)}, mean {values} ({', '.join(e.passes)})")
    print(f"report: {args.out / 'report.md'}")
    return 0


def run_jobs(jobs: list[Job], settings: EvalSettings, args: argparse.Namespace, command: str,
             processes: Processes | None = None) -> list[DatasetEvaluation]:
    """Read every dataset first (a wrong root fails before any model loads), then evaluate them
    grouped by model, loading each model once, and write the reports. With several processes every
    process reads the datasets (`in_turns`: raw KolektorSDD is tiled into the cache once) and runs its
    shards; rank 0 writes the reports and returns the evaluations, the other ranks return []."""
    from siad.baseline import detector_name, load_detector, parse_dtype  # deferred: siad.baseline imports torch

    processes = processes or Processes(device=args.device)
    cache_dir = args.cache_dir or args.out / "cache"

    def read_splits() -> dict[str, list[Sample]]:
        return {job.dataset: load_dataset(job.dataset, job.root, settings.split, cache_dir=cache_dir,
                                          classes=args.classes) for job in jobs}

    samples = in_turns(processes, read_splits)
    for job in jobs:
        if not samples[job.dataset]:
            raise ValueError(f"no images in the {settings.split} split of {job.dataset} at {job.root}")
    train: dict[str, list[Sample]] = {}
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
        write_cards([CardEntry(model=Path(job.model), dataset_type=args.card_dataset or job.dataset,
                               dataset_name=args.card_name or args.card_dataset or job.dataset,
                               evaluation=done[job.dataset]) for job in jobs], command)
    return evaluations


def _release_memory() -> None:
    gc.collect()
    import torch  # deferred: imported by the models anyway; `import siad.evaluate` stays without torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
