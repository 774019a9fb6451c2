"""Benchmark: CutPaste + Poisson pseudo-anomalies per second at 224 x 224 on one core.

Target: at least 200 per second (`cv2.setNumThreads(1)`, one process). Also reports how often the
Poisson blend succeeded (the rest fell back to a plain paste) and, with `--dataset`, the rate of
whole `PseudoAnomalyDataset` items (PNG decode + resize of two images + cut-paste), on images
written to a temporary folder that is removed afterwards.

    python benchmarks/bench_cutpaste.py [--count 1000] [--size 224] [--dataset]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from siad.data.cutpaste import cutpaste_poisson

TARGET_PER_SECOND = 200.0


def scene(seed: int, size: int) -> np.ndarray:
    """A textured RGB test image: a noisy background with blobs and lines (uint8)."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur((rng.random((size, size, 3)) * 255).astype(np.uint8), (0, 0), 3)
    image = cv2.addWeighted(base, 0.5, np.full_like(base, 120), 0.5, 0)
    for _ in range(10):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(image, centre, int(rng.integers(size // 40 + 1, size // 5)), colour, -1)
        cv2.line(image, centre, tuple(int(v) for v in rng.integers(0, size, 2)), colour, 2)
    noise = rng.normal(0.0, 6.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def bench_cutpaste(count: int, size: int) -> tuple[float, float, float]:
    """(per wall-clock second, per CPU second, fraction Poisson-blended)."""
    images = [scene(k, size) for k in range(16)]
    for k in range(10):  # warm-up
        cutpaste_poisson(images[k % 16], images[(k + 1) % 16], np.random.default_rng(k))
    blended = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    for k in range(count):
        result = cutpaste_poisson(images[k % 16], images[(k + 5) % 16], np.random.default_rng(k))
        blended += result.blended
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return count / elapsed, count / cpu, blended / count


def bench_dataset(count: int, size: int) -> float:
    from PIL import Image

    from siad.data import PseudoAnomalyDataset, Sample

    with tempfile.TemporaryDirectory() as folder:
        samples = []
        for k in range(16):
            path = Path(folder) / f"{k:03d}.png"
            Image.fromarray(scene(k, 512)).save(path)
            samples.append(Sample(path, None, "bottle", "good", 0))
        dataset = PseudoAnomalyDataset(samples, image_size=size)
        start = time.perf_counter()
        for k in range(count):
            dataset.set_epoch(k // len(dataset))
            dataset[k % len(dataset)]
        return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--dataset", action="store_true", help="also time whole dataset items")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    rate, cpu_rate, blended = bench_cutpaste(args.count, args.size)
    verdict = "OK" if rate >= TARGET_PER_SECOND else "BELOW TARGET"
    print(f"cutpaste_poisson at {args.size}x{args.size}, 1 thread: {rate:.0f} pseudo-anomalies/s "
          f"(target {TARGET_PER_SECOND:.0f}: {verdict}); {cpu_rate:.0f} per CPU-second (less sensitive to "
          f"other processes on the machine); Poisson-blended {blended:.1%}")
    if args.dataset:
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover
            pass
        items = bench_dataset(max(50, args.count // 4), args.size)
        print(f"PseudoAnomalyDataset items (2 PNG 512x512 decodes + resize + cut-paste): {items:.0f} items/s")


if __name__ == "__main__":
    main()
