"""siad-mini v2 and v3 side by side, in one run: images/s of map-only inference (batch 8) and the latency
of one detect with chat (batch 1: both passes of Algorithm 1, two answers).

    python benchmarks/bench_versions.py [--models checkpoints/siad-mini-v2 checkpoints/siad-mini]
        [--images 32] [--repeats 5] [--threads N]

Images: the README's examples (examples/images/*.png, masks left out), repeated to --images. Map-only:
`detect(chat=False, batch_size=8)` over all of them after one warm-up batch; images/s = images / wall
time, best of --repeats. Chat: `detect(image, chat=True)` on one image, a different one each time (so
that the follow-up cache never answers), median of --repeats after a warm-up. Models are loaded once;
the ratio v3 / v2 is from this run. A script, not a test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from siad import SIADModel

ROOT = Path(__file__).resolve().parents[1]


def example_images(count: int) -> list[Path]:
    files = sorted(p for p in (ROOT / "examples" / "images").glob("*.png") if not p.stem.endswith("_mask"))
    return [files[i % len(files)] for i in range(count)]


def class_of(path: Path) -> str:
    return path.stem.split("_")[0]


@torch.no_grad()
def measure(model: SIADModel, images: list[Path], repeats: int) -> tuple[float, float]:
    names = [class_of(p) for p in images]
    model.detect(images[:8], names[:8], chat=False, batch_size=8)  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.detect(images, names, chat=False, batch_size=8)
        rates.append(len(images) / (time.perf_counter() - start))
    model.clear_chat_cache()
    model.detect(images[0], names[0], chat=True)  # warm-up
    latencies = []
    for i in range(repeats):
        model.clear_chat_cache()
        path = images[(i + 1) % len(images)]
        start = time.perf_counter()
        model.detect(path, class_of(path), chat=True)
        latencies.append(time.perf_counter() - start)
    return max(rates), statistics.median(latencies)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/bench_versions.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[str(ROOT / "checkpoints" / "siad-mini-v2"),
                                                        str(ROOT / "checkpoints" / "siad-mini")])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = example_images(args.images)
    print(f"# {len(images)} example images, batch 8 map-only, batch 1 with chat; torch threads {torch.get_num_threads()}")
    print("| model | backbone | map-only images/s (batch 8) | detect with chat, s (batch 1) |")
    print("|---|---|---|---|")
    results = []
    for folder in args.models:
        model = SIADModel.from_pretrained(folder).eval()
        rate, latency = measure(model, images, args.repeats)
        results.append((rate, latency))
        print(f"| {folder} | {model.config.vision.backbone} | {rate:.1f} | {latency:.3f} |", flush=True)
    if len(results) == 2:
        (r0, l0), (r1, l1) = results
        print(f"\nratio second / first: map-only images/s x{r1 / r0:.2f}, chat latency x{l1 / l0:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
