"""Batch prediction: an overlay PNG and a CSV row for every image.

    python -m siad.predict --model M --class NAME PATHS_OR_DIRS... --out DIR [--no-chat] [--batch-size 8]
        [--references NORMAL_PATHS_OR_DIRS...]

For each image: `<out>/<stem>_overlay.png`, the anomaly map in jet (alpha 0.5) over the image (names
are made unique when stems repeat: `<stem>-2_overlay.png`, ...), and a row of `<out>/predictions.csv`
with the columns

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
skipped. The CSV is written as the run goes, so an interrupted run keeps its rows.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
CSV_NAME = "predictions.csv"
COLUMNS = ("path", "score", "verdict", "initial_score", "answer", "initial_answer", "mode", "overlay", "error")

__all__ = ["collect_images", "predict_paths", "Prediction", "main", "COLUMNS", "CSV_NAME"]


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


class _UniqueNames:
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


def predict_paths(detector: Any, paths: Sequence[Path], class_name: str, out: Path, *, chat: bool = True,
                  self_improve: bool = True, batch_size: int = 8, alpha: float = 0.5,
                  description: str | None = None, missing: Sequence[Path] = (),
                  progress: bool = True, references: Any = None) -> list[Prediction]:
    """Run `detector` over `paths` in batches, write the overlays and predictions.csv under `out`,
    and return the rows (one per path, in order; `missing` paths first, as errors). references: a
    few-shot `ReferenceBank` of the class (or anything `SIADModel.detect` takes as references)."""
    from PIL import Image
    from tqdm.auto import tqdm

    from siad.image import load_rgb
    from siad.visualize import overlay

    out.mkdir(parents=True, exist_ok=True)
    names = _UniqueNames()
    rows: list[Prediction] = [Prediction(path=str(p), error="no such file or folder") for p in missing]
    with (out / CSV_NAME).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow(row.row())
        bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress, file=sys.stderr)
        for start in range(0, len(paths), batch_size):
            chunk = list(paths[start:start + batch_size])
            loaded: list[tuple[Path, np.ndarray]] = []
            chunk_rows: dict[Path, Prediction] = {}
            for path in chunk:
                try:
                    loaded.append((path, load_rgb(path, detector.config.max_input_side,
                                                  detector.config.max_input_pixels).rgb))
                except (ValueError, OSError) as error:
                    chunk_rows[path] = Prediction(path=str(path), error=str(error))
            for path, rgb, result, error in _detect_each(detector, loaded, class_name, description, chat,
                                                         self_improve, references):
                if result is None:
                    chunk_rows[path] = Prediction(path=str(path), error=error)
                    continue
                name = names(path.stem)
                Image.fromarray(overlay(rgb, result.anomaly_map, alpha)).save(out / name)
                chunk_rows[path] = Prediction(
                    path=str(path), score=float(result.score),
                    verdict="anomalous" if result.is_anomalous else "normal",
                    initial_score=float(result.initial_score), answer=result.answer,
                    initial_answer=result.initial_answer, mode=result.mode, overlay=name)
            for path in chunk:
                rows.append(chunk_rows[path])
                writer.writerow(chunk_rows[path].row())
            handle.flush()
            bar.update(len(chunk))
        bar.close()
    return rows


def _detect_each(detector: Any, loaded: list[tuple[Path, np.ndarray]], class_name: str, description: str | None,
                 chat: bool, self_improve: bool, references: Any = None) -> list[tuple[Path, np.ndarray, Any, str | None]]:
    """Detect a batch; if the batch fails, image by image, so that one bad image fails alone."""
    if not loaded:
        return []
    kwargs: dict[str, Any] = dict(descriptions=description, chat=chat, self_improve=self_improve)
    if references is not None:  # the zero-shot baseline takes no references argument
        kwargs["references"] = references
    try:
        results = detector.detect([rgb for _, rgb in loaded], class_name, batch_size=len(loaded), **kwargs)
        return [(path, rgb, result, None) for (path, rgb), result in zip(loaded, results)]
    except (ValueError, RuntimeError) as batch_error:
        if len(loaded) == 1:
            return [(loaded[0][0], loaded[0][1], None, f"{type(batch_error).__name__}: {batch_error}")]
    out = []
    for path, rgb in loaded:
        try:
            out.append((path, rgb, detector.detect([rgb], class_name, batch_size=1, **kwargs)[0], None))
        except (ValueError, RuntimeError) as error:
            out.append((path, rgb, None, f"{type(error).__name__}: {error}"))
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m siad.predict",
        description="Anomaly maps, scores, verdicts and answers for many images: an overlay PNG per image and "
                    "predictions.csv in --out.",
        epilog="Examples:\n  python -m siad.predict --model runs/siad --class bottle photos/ extra.png --out runs/pred\n"
               "  python -m siad.predict --model runs/siad --class bottle photos/ --references good/ --out runs/pred\n"
               "CSV columns: " + ", ".join(COLUMNS),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="PATH_OR_DIR", help="image files and/or folders (recursive)")
    parser.add_argument("--model", required=True, help="SIAD model folder, Hub id, or zero-shot:<encoder>")
    parser.add_argument("--class", dest="class_name", required=True, help="the class name of the images")
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
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
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
    if not args.class_name.strip():
        parser.error("--class must not be empty")
    paths, missing = collect_images(args.inputs, exclude=args.out)
    if not paths and not missing:
        parser.exit(2, f"{parser.prog}: error: no image files in {' '.join(args.inputs)}\n")
    from siad.baseline import ZERO_SHOT_PREFIX, has_llm, load_detector, parse_dtype

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
        detector = load_detector(args.model, dtype=parse_dtype(args.dtype), device=args.device)
        bank = (detector.build_references(references, args.class_name, batch_size=args.batch_size)
                if references else None)
    except (FileNotFoundError, ValueError, OSError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    chat = not args.no_chat and has_llm(detector)
    rows = predict_paths(detector, paths, args.class_name, args.out, chat=chat, self_improve=not args.no_self_improve,
                         batch_size=args.batch_size, alpha=args.alpha, description=args.description,
                         missing=missing, progress=not args.quiet, references=bank)
    errors = sum(1 for r in rows if r.error)
    anomalous = sum(1 for r in rows if r.verdict == "anomalous")
    mode = bank.mode if bank is not None else "zero-shot"
    print(f"{len(rows) - errors} images scored, {mode} ({anomalous} anomalous at threshold "
          f"{detector.config.threshold}), {errors} unreadable; wrote {args.out / CSV_NAME} and the overlays")
    return 0


if __name__ == "__main__":
    sys.exit(main())
