"""Images per second of map-only inference, torch eager against the exported ONNX graph on onnxruntime (and
OpenVINO when installed), batch 1 and 8, measured in one run of this script on this CPU.

    python benchmarks/bench_export.py [--model checkpoints/siad-mini | --build-mini] [--class gear]
        [--shots 0] [--batch-sizes 1 8] [--threads N] [--seconds 5] [--repeats 3] [--openvino] [--json FILE]

The model is exported once (`siad.export.export_onnx`, into a temporary folder) for the class, zero-shot or
with `--shots K` references (K normal gear pictures from examples/images, flipped and turned). Two
measurements per batch size B, on the same B images (examples/images pictures, as `PreparedImage`s of
480 x 640 originals, so that the maps go back to that size):

- graph: the computation alone on a prepared uint8 batch: `SIADModel.map_and_score` (torch eager, no
  gradient, the exported code itself) against `ExportedDetector.run` (onnxruntime, and the OpenVINO IR);
- detect: `SIADModel.detect(images, class, chat=False)` against `ExportedDetector.detect(images)` (the
  same normalisation, maps brought back to 480 x 640, verdicts); their largest differences (maps and
  scores) are printed too.

Each runtime gets the same number of threads (`--threads`, default every core: torch.set_num_threads
and onnxruntime's intra_op_num_threads / OpenVINO's INFERENCE_NUM_THREADS). Each figure is the median over
`--repeats` rounds, each as many calls as fit in `--seconds` (at least 2), after one warm-up call; the
rounds interleave all runtimes and paths; images/s = B x calls / time. On a machine shared with other
work give `--threads 1`: threads that wait for a descheduled sibling make multi-threaded figures (torch's
OpenMP above all) say more about the load than about the runtime. `--build-mini` builds siad-mini v3 (`SIADConfig.mini()`: the ImageNet
EfficientNet-Lite0 backbone and random trainable parts, the same architecture and so the same speed as
the trained model) instead of loading `--model`. A script, not a test: nothing is asserted; the figures
depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
EXAMPLES = REPO / "examples" / "images"
PICTURES = ("gear_missing.png", "gear_good.png", "capsule_stain.png", "connector_crack.png", "wood_scratch.png",
            "gravel_hole.png", "bracket_contamination.png", "capsule_good.png")


def timed(calls: dict[str, Callable[[], object]], seconds: float, repeats: int) -> dict[str, float]:
    """The median over `repeats` rounds of each call's seconds per call, after one warm-up call each. The
    rounds interleave the calls (a, b, c, a, b, c, ...), so that a change of the machine's load during the
    run falls on all of them alike."""
    for call in calls.values():
        call()
    per_call: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            count, start = 0, time.perf_counter()
            while count < 2 or time.perf_counter() - start < seconds:
                call()
                count += 1
            per_call[name].append((time.perf_counter() - start) / count)
    return {name: statistics.median(values) for name, values in per_call.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default=str(REPO / "checkpoints" / "siad-mini"))
    source.add_argument("--build-mini", action="store_true", help="build siad-mini v3 (SIADConfig.mini()) instead")
    parser.add_argument("--class", dest="class_name", default="gear")
    parser.add_argument("--shots", type=int, default=0, help="few-shot references in the graph (0: zero-shot)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--openvino", action="store_true", help="also time the OpenVINO IR")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from PIL import Image

    from siad import SIADConfig, SIADModel
    from siad.deploy import ExportedDetector
    from siad.export import export_onnx
    from siad.image import PreparedImage, encoder_inputs

    torch.set_num_threads(args.threads)
    if args.build_mini:
        torch.manual_seed(0)
        model = SIADModel(SIADConfig.mini()).eval()
        model_name = "siad-mini v3 built by SIADConfig.mini() (random trainable parts)"
    else:
        model = SIADModel.from_pretrained(args.model).eval()
        model_name = args.model
    side = model.config.vision.image_size
    pictures = [Image.open(EXAMPLES / PICTURES[i % len(PICTURES)]).convert("RGB") for i in range(max(args.batch_sizes))]
    prepared = [PreparedImage(pixels=np.asarray(p.resize((side, side), Image.Resampling.BICUBIC)),
                              original_size=(480, 640)) for p in pictures]
    bank = None
    if args.shots:
        good = Image.open(EXAMPLES / "gear_good.png").convert("RGB")
        variants = [good, good.rotate(90), good.transpose(Image.Transpose.FLIP_LEFT_RIGHT), good.rotate(180),
                    good.transpose(Image.Transpose.FLIP_TOP_BOTTOM), good.rotate(270)]
        bank = model.build_references([np.asarray(v) for v in variants[:args.shots]], args.class_name)
    rows = []
    with tempfile.TemporaryDirectory(prefix="siad-bench-export-") as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = export_onnx(model, args.class_name, Path(folder) / "graph.onnx", bank=bank, openvino=args.openvino)
        runtimes = {"onnxruntime": ExportedDetector(report.path, threads=args.threads)}
        if report.openvino_path is not None:
            runtimes["openvino"] = ExportedDetector(report.openvino_path, threads=args.threads)
        text = model.class_text_features([args.class_name])
        for batch in args.batch_sizes:
            images = prepared[:batch]
            pixels, _ = encoder_inputs(images, model.config)
            tensor = torch.from_numpy(pixels)

            def eager_graph() -> object:
                with torch.no_grad():
                    return model.map_and_score(tensor, text, bank)

            def eager_detect() -> object:
                return model.detect(images, args.class_name, chat=False, batch_size=batch, references=bank)

            calls: dict[str, Callable[[], object]] = {"graph|torch eager": eager_graph,
                                                      "detect|torch eager": eager_detect}
            for name, detector in runtimes.items():
                calls[f"graph|{name}"] = lambda d=detector: d.run(pixels)
                calls[f"detect|{name}"] = lambda d=detector: d.detect(images, batch_size=batch)
            seconds = timed(calls, args.seconds, args.repeats)
            row: dict = {"batch": batch, "graph": {}, "detect": {}, "max_difference": {}}
            for key, value in seconds.items():
                what, name = key.split("|")
                row[what][name] = batch / value
            expected = eager_detect()
            for name, detector in runtimes.items():  # parity on the same images: maps at 480 x 640, scores
                got = detector.detect(images, batch_size=batch)
                row["max_difference"][name] = {
                    "maps": max(float(np.abs(a.anomaly_map - b.anomaly_map).max()) for a, b in zip(got, expected)),
                    "scores": max(abs(a.score - b.score) for a, b in zip(got, expected))}
            rows.append(row)
    mode = "zero-shot" if not args.shots else f"{args.shots}-shot"
    print(f"{model_name}, class {args.class_name!r}, {mode}, {side} x {side} input, {args.threads} threads, "
          f"torch {torch.__version__}")
    names = ["torch eager", *runtimes]
    print("| batch | what | " + " | ".join(f"{n} (images/s)" for n in names) + " | " +
          " | ".join(f"{n} / torch" for n in names[1:]) + " |")
    print("|---" * (2 + 2 * len(names) - 1) + "|")
    for row in rows:
        for what in ("graph", "detect"):
            figures = row[what]
            print(f"| {row['batch']} | {what} | " + " | ".join(f"{figures[n]:.1f}" for n in names) + " | " +
                  " | ".join(f"{figures[n] / figures['torch eager']:.2f} x" for n in names[1:]) + " |")
    for row in rows:
        for name, difference in row["max_difference"].items():
            print(f"batch {row['batch']}, {name} vs SIADModel.detect: max |difference| {difference['maps']:.1e} in the "
                  f"maps, {difference['scores']:.1e} in the scores")
    if args.json is not None:
        args.json.write_text(json.dumps({"model": model_name, "class": args.class_name, "mode": mode,
                                         "threads": args.threads, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
