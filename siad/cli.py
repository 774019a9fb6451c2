"""The `siad` command (installed with the package):

    siad detect --model M --class NAME IMAGE [IMAGE ...] [--out DIR] [--description TEXT]
                [--references NORMAL_IMAGE_OR_DIR ...] [--no-chat] [--no-self-improve] [--device cpu] [--dtype float32]
    siad predict ...      = python -m siad.predict ...     (overlays and predictions.csv for many images;
                                                            --onnx FILE: an exported graph, without torch)
    siad evaluate ...     = python -m siad.evaluate ...    (the paper's metrics, reports)
    siad calibrate ...    = python -m siad.calibrate ...   (the decision threshold)
    siad export ...       = python -m siad.export ...      (map and score of one class as an ONNX graph)

`detect` prints, for each image, the score and verdict and the answers (refined R' and first R);
with --out it also writes `<out>/<stem>_overlay.png`, the map over the image. `--references`: normal
images of the class (files and/or folders) make one few-shot bank for every image (as `siad predict`). predict, evaluate,
calibrate and export take exactly the options of their `python -m` forms (`siad predict --help`).

Overlays need only the base install (OpenCV's jet); the figures of `siad evaluate` need matplotlib
(`pip install "siad-llm[plots]"`, or `--no-plots`), which the command says before any model is loaded.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

from PIL import Image

from siad.image import load_rgb
from siad.predict import UniqueNames, collect_images
from siad.run_options import check_output_folder, device_argument
from siad.visualize import overlay

# subcommand -> (module whose main() it runs, one-line help)
DELEGATED: dict[str, tuple[str, str]] = {
    "predict": ("siad.predict", "overlays and predictions.csv for many images (python -m siad.predict)"),
    "evaluate": ("siad.evaluate", "per-class metrics and reports, as the paper's Table 1 (python -m siad.evaluate)"),
    "calibrate": ("siad.calibrate", "choose the decision threshold (python -m siad.calibrate)"),
    "export": ("siad.export", "map and score of one class as an ONNX graph, for inference without PyTorch "
                              "(python -m siad.export)"),
}
PLOTS_HINT = 'matplotlib: pip install "siad-llm[plots]"'


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siad", description="SIAD-LLM: explainable zero-shot anomaly detection (maps, scores, answers).",
        epilog="Example:\n  siad detect --model checkpoints/siad-mini --class gear part.png --out runs/overlays",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    detect = commands.add_parser("detect", help="score, verdict and answers for a few images",
                                 description="Detect anomalies in images of one class: print the score, the verdict "
                                             "and the answers; --out writes the overlays.")
    detect.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    detect.add_argument("--model", required=True, help="SIAD model folder or Hub id (or a baseline: zero-shot:..., self-reference:..., patchcore:... with --references)")
    detect.add_argument("--class", dest="class_name", required=True, help="the class name of the images")
    detect.add_argument("--description", default=None, help="class description for the language model (default: "
                                                             "the paper's table, or the generic one)")
    detect.add_argument("--out", type=Path, default=None, help="write <stem>_overlay.png here (created)")
    detect.add_argument("--references", nargs="+", default=None, metavar="PATH",
                        help="few-shot: normal images of the class (files and/or folders; default: zero-shot)")
    detect.add_argument("--no-chat", action="store_true", help="map and score only: no language model, no answers")
    detect.add_argument("--no-self-improve", action="store_true", help="pass 1 only (answer R, no refined pass)")
    detect.add_argument("--device", default="cpu", type=device_argument, help="torch device (default cpu)")
    detect.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    for name, (_, text) in DELEGATED.items():
        commands.add_parser(name, help=text, add_help=False)  # listed here, parsed by their own main()
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in DELEGATED:
        command, rest = args[0], args[1:]
        needs_plots = command == "evaluate" and "--no-plots" not in rest
        if needs_plots and not {"-h", "--help"} & set(rest) and importlib.util.find_spec("matplotlib") is None:
            print(f"siad {command}: the figures need {PLOTS_HINT} (or pass --no-plots)", file=sys.stderr)
            return 2
        return importlib.import_module(DELEGATED[command][0]).main(rest)
    parser = _parser()
    parsed = parser.parse_args(args)
    return detect(parser, parsed)


def detect(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`siad detect`: 0 when every image was scored, 1 when some could not be read; bad arguments or
    a model that does not load exit with status 2."""
    if not args.class_name.strip():
        parser.error("--class must not be empty")
    from siad.baseline import load_detector, parse_dtype  # deferred: torch (siad predict --onnx, --help need none)

    references, absent = collect_images(args.references or [])
    if absent or (args.references is not None and not references):
        parser.exit(2, f"siad detect: error: no reference images at {' '.join(map(str, absent or args.references))}\n")
    try:
        if args.out is not None:
            check_output_folder(args.out)  # before the model runs
        detector = load_detector(args.model, dtype=parse_dtype(args.dtype), device=args.device)
        few_shot = {"references": detector.build_references(references, args.class_name)} if references else {}
    except (FileNotFoundError, ValueError, OSError) as error:
        parser.exit(2, f"siad detect: error: {error}\n")
    chat = not args.no_chat and detector.can_answer
    names = UniqueNames()
    failed = 0
    for path in args.images:
        try:
            rgb = load_rgb(path, detector.config.vision.max_input_side).rgb
            result = detector.detect([rgb], args.class_name, descriptions=args.description, chat=chat,
                                     self_improve=not args.no_self_improve, **few_shot)[0]
        except (ValueError, OSError, RuntimeError) as error:
            print(f"{path}: error: {error}")
            failed += 1
            continue
        verdict = "anomalous" if result.is_anomalous else "normal"
        print(f"{path}: score {result.score:.4f} (pass 1: {result.initial_score:.4f}), {verdict} "
              f"(threshold {detector.config.map.threshold:.4f}), {result.mode}")
        if result.answer is not None:
            print(f"  answer: {result.answer}")
            if result.initial_answer != result.answer:
                print(f"  first answer: {result.initial_answer}")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            target = args.out / names(path.stem)
            Image.fromarray(overlay(rgb, result.anomaly_map)).save(target)
            print(f"  overlay: {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
