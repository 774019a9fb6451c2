"""Decision thresholds: from normal images only (a false-alarm rate) or from labelled data (F1-max).

The verdict of `SIADModel.detect` is `score >= config.map.threshold`. This module chooses that threshold
and stores it in the model's config.json.

Pure functions (tested on known score lists):

- `threshold_for_fpr(normal_scores, fpr)`: the smallest threshold t such that at most `fpr` of the
  normal scores are >= t. With the normal scores sorted in descending order d_1 >= ... >= d_n and
  k = floor(fpr * n) (the number of false alarms allowed), t is the smallest float64 above
  d_{k+1}: every score strictly above d_{k+1} (at most k of them) is flagged, d_{k+1} and below are
  not. With k >= n every score may be flagged and t = min(normal scores). Ties can make the false
  alarms on the calibration set fewer than k (never more). Unseen normal images exceed t at a rate
  close to `fpr` (the empirical (1 - fpr) quantile), not exactly `fpr`.
- `threshold_f1_max(labels, scores)`: the threshold (one of the scores) at which F1 of `score >= t`
  is largest, and that F1 (equal to `siad.metrics.f1_max`); on a tie the largest such threshold
  (fewer false alarms).

Command line:

    python -m siad.calibrate --model M --class NAME --normal DIR_OR_PATHS... [--fpr 0.01]
    python -m siad.calibrate --model M --dataset NAME --root DIR [--split test] [--classes ...]
    python -m siad.calibrate --model M --dataset NAME --root DIR --normal-only [--fpr 0.05]
    python -m siad.calibrate --model M --class NAME --normal DIR... --references REF_DIR... [--fpr 0.01]

Several processes: `torchrun --nproc_per_node N -m siad.calibrate ...` (or `accelerate launch`, as for
`siad.evaluate`) shares the images' batches among the processes (`siad.runner`); rank 0 gathers every
score in order, so the threshold is the one of a one-process run, and stores it.

`--normal-only` takes the dataset's normal images, each scored with its own class name, and the
false-alarm rule: one threshold for several classes without labelled anomalies.

The score used is the one the verdict uses at inference: the refined score S' of
`detect(chat=True)` by default, or S with `--no-chat` (map only, no LLM; use this when the model
will be run with chat=False). The threshold is written into the model folder's config.json (a local
folder; `--out DIR` saves a calibrated copy instead, which a Hub id needs), or only printed with
`--dry-run`. `--smooth-sigma S` calibrates with that Gaussian smoothing and stores it as well (the
threshold belongs to the smoothing it was chosen with).

Few-shot (`--references PATH...`, the option of `siad.predict`): normal images of the one class being
calibrated (`--class`, or `--dataset` with a single `--classes NAME`) make a reference bank, and every
score is that of detection with it (k-shot scores are not zero-shot scores: the threshold then belongs
to detection with references). A calibration image that is also a reference is refused (its score would
say nothing about unseen images); the zero-shot baseline takes no references.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from siad.config import SIADConfig
from siad.config_format import saved_format_version
from siad.data import group_by_class, load_dataset
from siad.detection import ZERO_SHOT_PREFIX
from siad.model_folder import CONFIG_NAME
from siad.predict import collect_images
from siad.runner import (Batch, BatchItem, MemoryStore, Processes, RunFailed, RunOptions, add_run_arguments,
                          check_failures, check_output_folder, collect, plan_batches, run_shard, start_processes)

__all__ = ["threshold_for_fpr", "threshold_f1_max", "write_threshold", "main"]


def _scores_array(scores: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError(f"{what} are empty")
    if not np.isfinite(values).all():
        raise ValueError(f"{what} hold NaN or infinite values")
    return values


def threshold_for_fpr(normal_scores: Sequence[float] | np.ndarray, fpr: float) -> float:
    """The smallest threshold such that at most `fpr` of `normal_scores` are >= it (see the module
    docstring). fpr in [0, 1]; raises ValueError for empty or non-finite scores."""
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float, np.floating, np.integer)) or not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be a number in [0, 1], got {fpr!r}")
    descending = np.sort(_scores_array(normal_scores, "normal scores"))[::-1]
    allowed = math.floor(float(fpr) * descending.size + 1e-9)  # false alarms allowed (1e-9: 0.1 * 10 is 1)
    if allowed >= descending.size:
        return float(descending[-1])
    return float(np.nextafter(descending[allowed], np.inf))


def threshold_f1_max(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(threshold, F1) where F1 of the prediction `score >= threshold` is largest over every
    distinct score; the largest such threshold on a tie. Needs both labels (ValueError otherwise: with
    anomalous samples only, F1 would be 1 at any threshold up to the lowest score)."""
    s = _scores_array(scores, "scores")
    y = np.asarray(labels).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    y = y.astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("F1 is undefined: there is no anomalous sample")
    if n_pos == y.size:
        raise ValueError(f"the F1-max threshold is undefined: all {n_pos} samples are anomalous (no normal one), so "
                         "every threshold up to the lowest score gives F1 = 1; calibrate with normal images too")
    values = np.unique(s)  # ascending distinct thresholds
    negatives, positives = np.sort(s[~y]), np.sort(s[y])
    true_pos = positives.size - np.searchsorted(positives, values, side="left")  # positives >= t
    false_pos = negatives.size - np.searchsorted(negatives, values, side="left")  # negatives >= t
    f1 = 2.0 * true_pos / (true_pos + false_pos + n_pos)
    best = int(np.flatnonzero(f1 == f1.max())[-1])  # the largest threshold among the best
    return float(values[best]), float(f1[best])


# ------------------------------------------------------------------------------- storing
def _is_local_folder(spec: str) -> bool:
    return Path(spec).expanduser().is_dir()


def check_destination(spec: str, out: Path | None, dry_run: bool) -> None:
    """Fail early (before any image is scored) when the threshold could not be stored (no folder, or one
    that cannot be written)."""
    if dry_run:
        return
    if spec.startswith(ZERO_SHOT_PREFIX):
        raise ValueError("the zero-shot baseline has no model folder to store a threshold in; use --dry-run")
    if out is None and not _is_local_folder(spec):
        raise ValueError(f"'{spec}' is not a local model folder: give --out DIR to save a calibrated copy "
                         f"(or --dry-run to only print the threshold)")
    if out is not None:
        check_output_folder(out)
    else:
        check_output_folder(Path(spec).expanduser(), "the model folder")


def write_threshold(folder: str | Path, threshold: float, smoothing_sigma: float | None = None) -> Path:
    """Set `threshold` (and, if given, `score_smoothing_sigma`) in a model folder's config.json,
    keeping every other field and the file's own config format (a folder of an older format names its
    weights as that format did, `siad.config_format.renamed_weight_keys`, so its config must stay of that format);
    the file is replaced atomically. Returns its path."""
    path = Path(folder).expanduser() / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} is not a SIAD model folder: {CONFIG_NAME} is missing")
    changes: dict[str, Any] = {"threshold": float(threshold)}
    if smoothing_sigma is not None:
        changes["score_smoothing_sigma"] = float(smoothing_sigma)
    text = path.read_text(encoding="utf-8")
    SIADConfig.from_json_string(text, str(path))  # a readable config (errors name the file)
    data = json.loads(text)
    # before format 4 the fields were flat; since then they are in the map part
    (data if saved_format_version(data, str(path)) < 4 else data.setdefault("map", {})).update(changes)
    with warnings.catch_warnings():  # a newer format's warning was given by the first read
        warnings.simplefilter("ignore")
        SIADConfig.from_saved_dict(data, str(path))  # the new values are validated before anything is written
    temporary = path.with_name(f".{CONFIG_NAME}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def _store(spec: str, detector: Any, threshold: float, sigma: float | None, out: Path | None) -> Path:
    if out is not None:
        detector.config = detector.config.replace(map=dict(threshold=threshold))
        detector.save_pretrained(out)
        return out
    return write_threshold(spec, threshold, sigma)


# ------------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m siad.calibrate",
        description="Choose the decision threshold of a SIAD model and store it in its config.json: from normal "
                    "images only (--normal, a false-alarm rate) or from labelled data (--dataset, the F1-max "
                    "threshold).",
        epilog="Examples:\n"
               "  python -m siad.calibrate --model runs/siad --class bottle --normal data/bottle/train/good --fpr 0.01\n"
               "  python -m siad.calibrate --model runs/siad --dataset mvtec --root data/mvtec --classes bottle\n"
               "  python -m siad.calibrate --model runs/siad --dataset mvtec --root data/mvtec --normal-only --fpr 0.05\n"
               "  python -m siad.calibrate --model org/siad-llm --class pcb1 --normal imgs/ --out runs/calibrated",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="SIAD model folder, Hub id, or zero-shot:<encoder> (with --dry-run)")
    source = parser.add_argument_group("normal images (false-alarm rate)")
    source.add_argument("--normal", nargs="+", metavar="PATH", help="normal images: files and/or folders (searched recursively)")
    source.add_argument("--class", dest="class_name", help="the class name of the --normal images")
    source.add_argument("--fpr", type=float, default=0.01,
                        help="false-alarm rate allowed on the normal images (default 0.01)")
    labelled = parser.add_argument_group("labelled data (F1-max)")
    labelled.add_argument("--dataset", help="dataset reader name (mvtec, visa, mpdd, btad, dtd, sdd, brainmri, headct, "
                                            "br35h, mvtec_format, meta)")
    labelled.add_argument("--root", type=Path, help="the dataset folder")
    labelled.add_argument("--split", default="test", choices=["train", "test"], help="split (default test)")
    labelled.add_argument("--classes", nargs="+", help="only these classes (default: all, pooled)")
    labelled.add_argument("--normal-only", action="store_true",
                          help="use only the dataset's normal images, each with its own class name, and the "
                               "false-alarm rule (--fpr) instead of F1-max")
    parser.add_argument("--references", nargs="+", metavar="PATH", default=None,
                        help="few-shot: normal reference images of the class (files and/or folders); the scores are "
                             "those of detection with them (default: zero-shot)")
    parser.add_argument("--no-chat", action="store_true",
                        help="calibrate the pass-1 score S of detect(chat=False) instead of the refined S'")
    parser.add_argument("--smooth-sigma", type=float, default=None,
                        help="Gaussian sigma before scoring; stored with the threshold (default: the model's own)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per detect call (default 8)")
    parser.add_argument("--out", type=Path, default=None,
                        help="save a calibrated copy of the model here instead of editing the model folder")
    parser.add_argument("--dry-run", action="store_true", help="only print the threshold")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_run_arguments(parser)
    return parser


def _score_all(detector: Any, images: list[Path], class_name: str, chat: bool, batch_size: int,
               progress: bool, references: Any = None, run: RunOptions | None = None) -> list[float]:
    """The scores of image files of one class, in order (`siad.runner`: batches of `batch_size`, shared
    among the processes of a distributed run; rank 0 gets every score, the other ranks []). An image
    that cannot be read stops the run (`RunFailed`, naming the rank and the file)."""
    run = run or RunOptions(processes=Processes(device=str(detector.device)))
    few_shot = {} if references is None else {"references": references}  # the baseline takes none

    def work(batch: Batch, items: list[BatchItem]) -> list[float]:
        unreadable = [item for item in items if item.image is None]
        if unreadable:
            raise ValueError(f"cannot read {unreadable[0].path}: {unreadable[0].error}")
        results = detector.detect([item.image for item in items], class_name, chat=chat, self_improve=chat,
                                  batch_size=len(items), **few_shot)
        return [float(r.score) for r in results]

    batches = plan_batches([(class_name, len(images))], batch_size)
    store: MemoryStore[list[float]] = MemoryStore()
    report = run_shard(batches, images, work, store, run.processes, config=detector.config, workers=run.workers,
                       progress=progress, title=f"calibrate {class_name}")
    check_failures(report.failure, run.processes)
    parts = collect(batches, len(batches), lambda b: store.load(b.index), run.processes)
    return [score for _, part in parts for score in part]


def _score_by_class(detector: Any, samples: list, chat: bool, batch_size: int, progress: bool,
                    references: Any = None, run: RunOptions | None = None) -> tuple[list[int], list[float]]:
    """(labels, scores) of dataset samples, each class's images scored with its own class name
    (and the few-shot bank `references`, when given: then there is one class)."""
    labels: list[int] = []
    scores: list[float] = []
    for name, group in group_by_class(samples).items():
        scores += _score_all(detector, [s.image_path for s in group], name, chat, batch_size, progress, references,
                             run=run)
        labels += [s.label for s in group]
    return labels, scores


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring). Returns 0; errors exit with status 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    normal_mode = args.normal is not None
    if normal_mode == (args.dataset is not None):
        parser.error("give either --normal (with --class) or --dataset (with --root)")
    if normal_mode and not args.class_name:
        parser.error("--normal needs --class NAME")
    if not normal_mode and args.root is None:
        parser.error("--dataset needs --root DIR")
    if not 0.0 <= args.fpr <= 1.0:
        parser.error("--fpr must lie in [0, 1]")
    if args.batch_size <= 0:
        parser.error("--batch-size must be positive")
    if args.smooth_sigma is not None and args.smooth_sigma < 0:
        parser.error("--smooth-sigma must be >= 0")
    if args.references is not None:
        if args.model.startswith(ZERO_SHOT_PREFIX):
            parser.error("--references needs a SIAD model: the zero-shot baseline takes no references")
        if not normal_mode and len(set(args.classes or [])) != 1:
            parser.error("--references are normal images of one class: give --class with --normal, or one "
                         "--classes NAME with --dataset")
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    try:
        check_destination(args.model, args.out, args.dry_run)
        return _run(args)
    except (FileNotFoundError, ValueError, OSError, RunFailed) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return 2  # not reached


def _fpr_threshold(scores: list[float], fpr: float) -> float:
    threshold = threshold_for_fpr(scores, fpr)
    if threshold > 1.0:
        raise ValueError(f"the normal scores reach 1.0 (max {max(scores):.6g}): no threshold in [0, 1] keeps the "
                         f"false-alarm rate at or below {fpr}; the model cannot separate these images")
    return threshold


def _reference_paths(args: argparse.Namespace, scored: list[Path]) -> list[Path]:
    """The --references image files; none may be one of the images being scored."""
    references, missing = collect_images(args.references)
    if missing:
        raise FileNotFoundError(f"references not found: {', '.join(str(p) for p in missing)}")
    if not references:
        raise ValueError("no image files among --references")
    shared = sorted({p.resolve() for p in references} & {Path(p).resolve() for p in scored})
    if shared:
        raise ValueError(f"{len(shared)} calibration image(s) are also references (e.g. {shared[0]}): a reference's "
                         "score says nothing about unseen images; keep the references apart")
    return references


def _run(args: argparse.Namespace) -> int:
    from siad.baseline import load_detector, parse_dtype  # deferred: siad.baseline imports torch (argument errors and --help need none)

    chat = not args.no_chat
    if args.normal:
        paths, missing = collect_images(args.normal)
        if missing:
            raise FileNotFoundError(f"not found: {', '.join(str(p) for p in missing)}")
        if not paths:
            raise ValueError("no image files among --normal")
        scored = list(paths)
    else:
        samples = load_dataset(args.dataset, args.root, args.split, classes=args.classes)
        if not samples:
            raise ValueError(f"no images in the {args.split} split of {args.root}")
        scored = [s.image_path for s in samples]
    references = _reference_paths(args, scored) if args.references is not None else []
    run = RunOptions(processes=start_processes(args.device), workers=args.workers)
    detector = load_detector(args.model, dtype=parse_dtype(args.dtype), device=run.processes.device)
    chat = chat and detector.can_answer
    if args.smooth_sigma is not None:
        detector.config = detector.config.replace(map=dict(score_smoothing_sigma=args.smooth_sigma))
    bank = None
    if references:
        bank = detector.build_references(references, args.class_name or args.classes[0], batch_size=args.batch_size)
    which = "S' (detect with chat and self-improvement)" if chat else "S (detect(chat=False), map only)"
    if bank is not None:
        which += f", {bank.mode} with {len(references)} references"
    if args.normal:
        scores = _score_all(detector, list(paths), args.class_name, chat, args.batch_size, not args.quiet, bank,
                            run=run)
        source = f"{len(scores)} normal images of '{args.class_name}' (score {which})"
    elif args.normal_only:
        normal = [s for s in samples if s.label == 0]
        if not normal:
            raise ValueError(f"no normal images in the {args.split} split of {args.root}")
        _, scores = _score_by_class(detector, normal, chat, args.batch_size, not args.quiet, bank, run=run)
        source = f"the {len(scores)} normal images of {args.dataset} ({args.split}; score {which})"
    else:
        labels, scores = _score_by_class(detector, samples, chat, args.batch_size, not args.quiet, bank, run=run)
    if not run.processes.is_main:  # rank 0 has every score: it chooses and stores the threshold
        return 0
    if args.normal or args.normal_only:
        threshold = _fpr_threshold(scores, args.fpr)
        flagged = sum(s >= threshold for s in scores)
        print(f"threshold {threshold!r} from {source}: {flagged} of them ({flagged / len(scores):.4f}) are >= it; "
              f"allowed false-alarm rate {args.fpr}")
    else:
        threshold, f1 = threshold_f1_max(labels, scores)
        print(f"threshold {threshold!r} from {len(scores)} labelled images of {args.dataset} ({args.split}; score "
              f"{which}): F1 {f1:.4f} at this threshold")
    if bank is not None:
        print(f"the threshold holds for detection with these references ({bank.mode}); zero-shot scores differ")
    if args.dry_run:
        print("dry run: nothing stored")
        return 0
    where = _store(args.model, detector, threshold, args.smooth_sigma, args.out)
    print(f"stored in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
