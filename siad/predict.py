"""Batch prediction: an overlay PNG and a CSV row for every image.

    python -m siad.predict --model M --class NAME PATHS_OR_DIRS... --out DIR [--no-chat] [--batch-size 8]
        [--references NORMAL_PATHS_OR_DIRS...] [--workers 2] [--resume]
    torchrun --nproc_per_node N -m siad.predict ... --device cuda      (N processes, see below)
    python -m siad.predict --onnx FILE.onnx PATHS_OR_DIRS... --out DIR [--workers 2] [--resume]   (no torch)

For each image: `<out>/<stem>_overlay.png`, the anomaly map in jet (alpha 0.5) over the image (names
are made unique when stems repeat, in the order of the inputs: `<stem>-2_overlay.png`, ...), and a row
of `<out>/predictions.csv` with the columns

    path, score, verdict, initial_score, answer, initial_answer, mode, overlay, error

score is the refined score S' (S with --no-chat or --no-self-improve), verdict "anomalous" when
score >= the model's threshold, else "normal"; initial_score / initial_answer are pass 1 (S, R);
answers are empty with --no-chat; mode is "zero-shot" or "k-shot"; overlay is the PNG's file name.

Few-shot (`--references`, beyond the paper): normal images of the class (files and/or folders, searched
like the inputs) make one reference bank (`SIADModel.build_references`) used for every image, whose maps
are then fused with the reference maps (`siad.references`); the mode column says "k-shot". A reference
that cannot be read stops the run before any prediction (exit status 2); an input that is also a
reference is predicted, with a warning (its score says little). The zero-shot baseline takes no references. A file that cannot be read (or a
path that does not exist) gets a row with only path and error, and the run goes on. Folders are
searched recursively for image files (png, jpg, jpeg, bmp, tif, tiff); files under --out are
skipped. An image that cannot be scored is also logged on stderr (with the rank, in a distributed run).

Exported graphs (`--onnx FILE`, `siad export`; FILE.onnx with onnxruntime, or its OpenVINO IR FILE.xml): the
same CSV and overlays from `siad.deploy.ExportedDetector`, which imports no torch: the maps and scores of
pass 1 (answers empty, as with --no-chat) for the file's class (`--class`, if given, must be it), zero-shot
or with the references it was exported with (mode column); one process, the images read by `--workers`
threads. --references, --device, --dtype and launchers are refused with it.

Streaming and resuming: the CSV is written batch by batch as the run goes (memory stays flat with the
number of images; an interrupted run keeps its rows), and each finished batch's rows are kept in
`<out>/.siad-resume/predict-<hash>/batch-<i>.npz` (written atomically) until the run ends: a rerun with
`--resume` and the same model files, images and settings skips those batches (their overlays are
already written) and writes the whole CSV again, equal to an uninterrupted run's. `--workers W`
DataLoader worker processes read and resize the images while the model runs.

Several processes (`torchrun` or `accelerate launch`, as for `siad.evaluate`; `siad.runner`): the
batches are shared among the processes (no image twice), each writes the overlays of its images, and
rank 0 writes predictions.csv in the order of the inputs, equal to a one-process run's. On several
machines `--out` must be a shared folder for the overlays to land in one place (the CSV comes to rank 0
through torch.distributed either way).
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from siad.deploy import ExportedDetector
from siad.detection import ZERO_SHOT_PREFIX, normalise_class_name
from siad.runner import (Batch, BatchItem, Processes, RunFailed, RunOptions, add_run_arguments, barrier,
                          check_failures, check_output_folder, collect, file_identity, from_json_array, json_array,
                          launched_world_size, log, owner_of, plan_batches, run_shard, start_processes)
from siad.visualize import overlay

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
CSV_NAME = "predictions.csv"
COLUMNS = ("path", "score", "verdict", "initial_score", "answer", "initial_answer", "mode", "overlay", "error")

__all__ = ["collect_images", "predict_paths", "overlay_names", "Prediction", "PredictionCounts", "main",
           "COLUMNS", "CSV_NAME"]


def collect_images(inputs: Iterable[str | Path], exclude: Path | None = None) -> tuple[list[Path], list[Path]]:
    """(image files, paths that do not exist) for files and folders given on a command line.

    A file is taken whatever its suffix (so that a broken file is reported, not skipped); a folder
    gives its image files (by suffix, recursively, hidden files skipped, sorted). Files under
    `exclude` are left out; every file appears once.
    """
    found: list[Path] = []
    missing: list[Path] = []
    excluded = exclude.resolve() if exclude is not None else None

    def keep(path: Path) -> bool:
        return excluded is None or not path.resolve().is_relative_to(excluded)

    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            found.extend(p for p in files if keep(p))
        elif path.is_file():
            if keep(path):
                found.append(path)
        else:
            missing.append(path)
    unique = list(dict.fromkeys(found))
    return unique, missing


@dataclass
class Prediction:
    """One row of predictions.csv (None for an empty cell)."""

    path: str
    score: float | None = None
    verdict: str | None = None
    initial_score: float | None = None
    answer: str | None = None
    initial_answer: str | None = None
    mode: str | None = None
    overlay: str | None = None
    error: str | None = None

    def row(self) -> dict[str, str]:
        values = {name: getattr(self, name) for name in COLUMNS}
        return {k: "" if v is None else (repr(v) if isinstance(v, float) else str(v)) for k, v in values.items()}


class UniqueNames:
    """`<stem>_overlay.png`, or `<stem>-2_overlay.png`, ... when the name is taken."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def __call__(self, stem: str) -> str:
        name, counter = f"{stem}_overlay.png", 1
        while name.lower() in self._used:
            counter += 1
            name = f"{stem}-{counter}_overlay.png"
        self._used.add(name.lower())
        return name


def overlay_names(paths: Sequence[Path]) -> list[str]:
    """Each image's overlay file name, from the whole ordered list (repeated stems made unique in
    order), so that every process of a distributed run names an image the same way."""
    names = UniqueNames()
    return [names(Path(p).stem) for p in paths]


@dataclass
class PredictionCounts:
    """What a prediction run wrote: rows (one per input), unreadable ones, anomalous verdicts."""

    rows: int = 0
    errors: int = 0
    anomalous: int = 0


class _CsvSink:
    """predictions.csv on rank 0, rows appended batch by batch and flushed (so memory stays flat and an
    interrupted run keeps its rows); on the other ranks nothing is written."""

    def __init__(self, path: Path, active: bool) -> None:
        self.path = path
        self.active = active
        self.counts = PredictionCounts()
        self._handle: Any = None
        self._writer: Any = None

    def __enter__(self) -> "_CsvSink":
        if self.active:
            self._handle = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._handle, fieldnames=list(COLUMNS))
            self._writer.writeheader()
        return self

    def write(self, rows: Sequence[Prediction]) -> None:
        if not self.active:
            return
        for row in rows:
            self._writer.writerow(row.row())
            self.counts.rows += 1
            self.counts.errors += row.error is not None
            self.counts.anomalous += row.verdict == "anomalous"
        self._handle.flush()

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.close()


def predict_paths(detector: Any, paths: Sequence[Path], class_name: str, out: Path, *, chat: bool = True,
                  self_improve: bool = True, batch_size: int = 8, alpha: float = 0.5,
                  description: str | None = None, missing: Sequence[Path] = (),
                  progress: bool = True, references: Any = None, run: RunOptions | None = None,
                  identity: Mapping[str, Any] | None = None) -> PredictionCounts | None:
    """Run `detector` over `paths` in batches, write the overlays and predictions.csv under `out`
    (one row per path, in order; `missing` paths first, as errors), and return the counts. references:
    a few-shot `ReferenceBank` of the class (or anything `SIADModel.detect` takes as references).

    The rows go to the CSV batch by batch (memory does not grow with the number of images). run:
    processes, DataLoader workers and resumption (`siad.runner.RunOptions`); with several processes
    each runs its shard of the batches and writes their overlays, rank 0 writes the CSV (its own
    batches as they finish, then the others' in order) and returns the counts, the others None.
    identity: what the results depend on beyond the images and these settings (the model's files, the
    references), so that `--resume` only reuses batches of the same run."""
    run = run or RunOptions(processes=Processes(device=str(detector.device)))
    processes = run.processes
    out.mkdir(parents=True, exist_ok=True)
    names = overlay_names(paths)
    batches = plan_batches([(class_name, len(paths))], batch_size)
    key = {"identity": identity or {}, "paths": [str(p) for p in paths], "class": class_name, "chat": chat,
           "self_improve": self_improve, "batch_size": batch_size, "alpha": alpha, "description": description,
           "config": detector.config.to_dict()}
    store = run.store("predict", key, _encode_rows, _decode_rows)
    with _CsvSink(out / CSV_NAME, processes.is_main) as sink:
        sink.write([Prediction(path=str(p), error="no such file or folder") for p in missing])

        def work(batch: Batch, items: list[BatchItem]) -> list[Prediction]:
            rows = _predict_batch(detector, items, names[batch.start:batch.stop], class_name, out, description, chat,
                                  self_improve, alpha, references)
            for row in rows:
                if row.error:
                    log(processes, f"predict: cannot score {row.path}: {row.error}")
            return rows

        report = run_shard(batches, paths, work, store, processes, config=detector.config, workers=run.workers,
                           resume=run.resume, for_overlays=True, progress=progress, title="predict", threads=run.threads,
                           each=lambda _, rows: sink.write(rows))
        check_failures(report.failure, processes)
        others = [b for b in batches if owner_of(b.index, len(batches), processes.world) != 0]
        for _, rows in collect(others, len(batches), lambda b: store.load(b.index), processes):
            sink.write(rows)
    barrier(processes)
    store.discard()
    return sink.counts if processes.is_main else None


def _predict_batch(detector: Any, items: list[BatchItem], names: list[str], class_name: str, out: Path,
                   description: str | None, chat: bool, self_improve: bool, alpha: float,
                   references: Any) -> list[Prediction]:
    """One batch: detect the readable images, save their overlays, one row per item in order."""
    readable = [(item, name) for item, name in zip(items, names) if item.image is not None]
    results = _detect_each(detector, [item.image for item, _ in readable], class_name, description, chat,
                           self_improve, references)
    rows = {item.index: Prediction(path=item.path, error=item.error) for item in items if item.image is None}
    for (item, name), (result, error) in zip(readable, results):
        if result is None:
            rows[item.index] = Prediction(path=item.path, error=error)
            continue
        Image.fromarray(overlay(item.rgb, result.anomaly_map, alpha)).save(out / name)
        rows[item.index] = Prediction(
            path=item.path, score=float(result.score), verdict="anomalous" if result.is_anomalous else "normal",
            initial_score=float(result.initial_score), answer=result.answer, initial_answer=result.initial_answer,
            mode=result.mode, overlay=name)
    return [rows[item.index] for item in items]


def _encode_rows(rows: list[Prediction]) -> dict[str, np.ndarray]:
    return {"rows": json_array([asdict(row) for row in rows])}


def _decode_rows(arrays: Mapping[str, np.ndarray]) -> list[Prediction]:
    return [Prediction(**row) for row in from_json_array(arrays["rows"])]


def _detect_each(detector: Any, images: list[Any], class_name: str, description: str | None, chat: bool,
                 self_improve: bool, references: Any = None) -> list[tuple[Any, str | None]]:
    """Detect a batch: (result, None) per image; if the batch fails, image by image, so that one bad
    image fails alone (None, its error)."""
    if not images:
        return []
    kwargs: dict[str, Any] = dict(descriptions=description, chat=chat, self_improve=self_improve)
    if references is not None:  # the zero-shot baseline takes no references argument
        kwargs["references"] = references
    try:
        return [(result, None) for result in detector.detect(images, class_name, batch_size=len(images), **kwargs)]
    except (ValueError, RuntimeError) as batch_error:
        if len(images) == 1:
            return [(None, f"{type(batch_error).__name__}: {batch_error}")]
    out: list[tuple[Any, str | None]] = []
    for image in images:
        try:
            out.append((detector.detect([image], class_name, batch_size=1, **kwargs)[0], None))
        except (ValueError, RuntimeError) as error:
            out.append((None, f"{type(error).__name__}: {error}"))
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m siad.predict",
        description="Anomaly maps, scores, verdicts and answers for many images: an overlay PNG per image and "
                    "predictions.csv in --out.",
        epilog="Examples:\n  python -m siad.predict --model runs/siad --class bottle photos/ extra.png --out runs/pred\n"
               "  python -m siad.predict --model runs/siad --class bottle photos/ --references good/ --out runs/pred\n"
               "  python -m siad.predict --onnx runs/bottle.onnx photos/ --out runs/pred   (no torch: siad export)\n"
               "  torchrun --nproc_per_node 8 -m siad.predict --device cuda ...   (one process per GPU; README: launchers)\n"
               "CSV columns: " + ", ".join(COLUMNS),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="PATH_OR_DIR", help="image files and/or folders (recursive)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="SIAD model folder, Hub id, or a baseline (zero-shot:..., self-reference:..., patchcore:... with --references)")
    source.add_argument("--onnx", type=Path, metavar="FILE",
                        help="an exported graph (siad export: FILE.onnx, or its OpenVINO IR FILE.xml), run without torch: "
                             "maps and scores of pass 1 for its class, zero-shot or with the references it was exported with")
    parser.add_argument("--class", dest="class_name", default=None,
                        help="the class name of the images (required with --model; with --onnx, the file's class)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--description", default=None, help="class description for the LLM (default: the paper's "
                                                             "table, or the generic one)")
    parser.add_argument("--references", nargs="+", metavar="PATH_OR_DIR", default=None,
                        help="few-shot: normal images of the class (files and/or folders), one reference bank for "
                             "every image (default: zero-shot)")
    parser.add_argument("--no-chat", action="store_true", help="maps and scores only: no LLM, no answers (faster)")
    parser.add_argument("--no-self-improve", action="store_true", help="pass 1 only (answer R, no refined pass)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the map (default 0.5)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per detect call (default 8)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_run_arguments(parser, resume="skip the batches an interrupted run with the same model, images and settings finished "
                             "(kept in <out>/.siad-resume until the run ends)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring). Returns 0 (also when some files were
    unreadable: they are in the CSV); bad arguments or an unloadable model exit with status 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        parser.error("--batch-size must be positive")
    if not 0.0 <= args.alpha <= 1.0:
        parser.error("--alpha must lie in [0, 1]")
    if args.class_name is not None and not args.class_name.strip():
        parser.error("--class must not be empty")
    if args.class_name is None and args.onnx is None:
        parser.error("--class is required with --model")
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    paths, missing = collect_images(args.inputs, exclude=args.out)
    if not paths and not missing:
        parser.exit(2, f"{parser.prog}: error: no image files in {' '.join(args.inputs)}\n")
    if args.onnx is not None:
        return _predict_exported(parser, args, paths, missing)
    from siad.baseline import load_detector, parse_dtype  # deferred: siad.baseline imports torch (--onnx never does)

    references: list[Path] = []
    if args.references is not None:
        if args.model.startswith(ZERO_SHOT_PREFIX):
            parser.error("--references needs a SIAD model: the zero-shot baseline takes no references")
        references, absent = collect_images(args.references, exclude=args.out)
        if absent:
            parser.exit(2, f"{parser.prog}: error: references not found: {', '.join(str(p) for p in absent)}\n")
        if not references:
            parser.exit(2, f"{parser.prog}: error: no image files among --references\n")
        shared = {p.resolve() for p in references} & {p.resolve() for p in paths}
        if shared:
            print(f"warning: {len(shared)} input image(s) are also references; their scores say little",
                  file=sys.stderr)
    try:
        check_output_folder(args.out)  # before the model runs
        processes = start_processes(args.device)
        detector = load_detector(args.model, dtype=parse_dtype(args.dtype), device=processes.device)
        bank = (detector.build_references(references, args.class_name, batch_size=args.batch_size)
                if references else None)
    except (FileNotFoundError, ValueError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    chat = not args.no_chat and detector.can_answer
    run = RunOptions(processes=processes, workers=args.workers, folder=args.out, resume=args.resume)
    identity = {"model": file_identity(args.model), "references": [str(p) for p in references]}
    try:
        counts = predict_paths(detector, paths, args.class_name, args.out, chat=chat,
                               self_improve=not args.no_self_improve, batch_size=args.batch_size, alpha=args.alpha,
                               description=args.description, missing=missing, progress=not args.quiet,
                               references=bank, run=run, identity=identity)
    except RunFailed as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if counts is None:  # not rank 0
        return 0
    mode = bank.mode if bank is not None else "zero-shot"
    print(f"{counts.rows - counts.errors} images scored, {mode} ({counts.anomalous} anomalous at threshold "
          f"{detector.config.map.threshold}), {counts.errors} unreadable; wrote {args.out / CSV_NAME} and the overlays")
    return 0


def _predict_exported(parser: argparse.ArgumentParser, args: argparse.Namespace, paths: list[Path],
                      missing: list[Path]) -> int:
    """`--onnx FILE`: the same CSV and overlays from an exported graph (`siad.deploy.ExportedDetector`), in
    this one process, the images read by `--workers` threads; torch is never imported."""
    refused = [(args.references is not None, "--references (a bank goes into the graph when it is exported: "
                                             "siad export --references ...)"),
               (args.device != "cpu", "--device (onnxruntime runs on the CPU here)"),
               (args.dtype != "float32", "--dtype (the graph is float32)"),
               (launched_world_size() > 1, "several processes (torchrun, accelerate launch): run one process")]
    for given, what in refused:
        if given:
            parser.error(f"--onnx does not take {what}")
    try:
        detector = ExportedDetector(args.onnx)
    except (FileNotFoundError, ValueError, ImportError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if args.class_name is not None and normalise_class_name(args.class_name) != detector.class_name:
        parser.exit(2, f"{parser.prog}: error: {args.onnx} was exported for class {detector.class_name!r}, not "
                       f"{normalise_class_name(args.class_name)!r}\n")
    run = RunOptions(processes=Processes(), workers=args.workers, folder=args.out, resume=args.resume, threads=True)
    identity = {"onnx": file_identity(str(args.onnx))}
    try:
        counts = predict_paths(detector, paths, detector.class_name, args.out, chat=False, self_improve=False,
                               batch_size=args.batch_size, alpha=args.alpha, missing=missing,
                               progress=not args.quiet, run=run, identity=identity)
    except RunFailed as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    assert counts is not None
    print(f"{counts.rows - counts.errors} images scored with {args.onnx}, {detector.mode} ({counts.anomalous} anomalous "
          f"at threshold {detector.threshold}), {counts.errors} unreadable; wrote {args.out / CSV_NAME} and the overlays")
    return 0


if __name__ == "__main__":
    sys.exit(main())
