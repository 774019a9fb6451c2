"""Benchmark: pseudo-anomalies per second at 224 x 224 on one core.

CutPaste + Poisson (`cutpaste_poisson`), target at least 200 per second (`cv2.setNumThreads(1)`, one
process), with how often the Poisson blend succeeded (the rest fell back to a plain paste); the
generic mixture (`siad.data.pseudo.pseudo_anomaly`, default weights), target at least 150 per second,
and with `--kinds` the rate of every kind alone and how often it fell back to the push. With
`--dataset`, the rate of whole `PseudoAnomalyDataset` items (PNG decode + resize of two images +
cut-paste), on images written to a temporary folder that is removed afterwards. `--root` takes the
images from an MVTec-format folder (`ROOT/*/train/good/*.png`, resized to the size) instead of the
synthetic scenes.

    python benchmarks/bench_cutpaste.py [--count 1000] [--size 224] [--kinds] [--dataset] [--root DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from siad.data.cutpaste import cutpaste_poisson
from siad.data.pseudo import KINDS, generate, pseudo_anomaly

TARGET_PER_SECOND = 200.0
MIXTURE_TARGET_PER_SECOND = 150.0


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


def folder_images(root: Path, size: int, count: int = 64) -> list[np.ndarray]:
    """Up to `count` normal images of an MVTec-format folder, spread over its classes, at size x size."""
    from siad.image import load_rgb, resize_for_encoder

    paths = sorted(root.glob("*/train/good/*.png"))
    if not paths:
        raise SystemExit(f"no images under {root}/*/train/good")
    step = max(1, len(paths) // count)
    return [resize_for_encoder(load_rgb(p).rgb, size, "squash") for p in paths[::step][:count]]


def bench_mixture(images: list[np.ndarray], count: int) -> tuple[float, float]:
    """The default mixture: (per wall-clock second, per CPU second)."""
    for k in range(10):  # warm-up
        pseudo_anomaly(images[k % len(images)], images[(k + 1) % len(images)], np.random.default_rng(k))
    start, start_cpu = time.perf_counter(), time.process_time()
    for k in range(count):
        pseudo_anomaly(images[k % len(images)], images[(k + 5) % len(images)], np.random.default_rng(k))
    return count / (time.perf_counter() - start), count / (time.process_time() - start_cpu)


def bench_kinds(images: list[np.ndarray], count: int) -> list[tuple[str, float, float]]:
    """Every kind alone: (kind, per CPU second, fraction that fell back to the push)."""
    rates = []
    for kind in KINDS:
        pushed = 0
        start_cpu = time.process_time()
        for k in range(count):
            result = generate(kind, images[k % len(images)], images[(k + 5) % len(images)], np.random.default_rng(k))
            pushed += result.kind.endswith(":push")
        rates.append((kind, count / (time.process_time() - start_cpu), pushed / count))
    return rates


def bench_cutpaste(images: list[np.ndarray], count: int) -> tuple[float, float, float]:
    """(per wall-clock second, per CPU second, fraction Poisson-blended)."""
    for k in range(10):  # warm-up
        cutpaste_poisson(images[k % len(images)], images[(k + 1) % len(images)], np.random.default_rng(k))
    blended = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    for k in range(count):
        result = cutpaste_poisson(images[k % len(images)], images[(k + 5) % len(images)], np.random.default_rng(k))
        blended += result.blended
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return count / elapsed, count / cpu, blended / count


def bench_dataset(count: int, size: int, mixture: bool) -> float:
    from PIL import Image

    from siad.data import PseudoAnomalyDataset, Sample

    with tempfile.TemporaryDirectory() as folder:
        samples = []
        for k in range(16):
            path = Path(folder) / f"{k:03d}.png"
            Image.fromarray(scene(k, 512)).save(path)
            samples.append(Sample(path, None, "bottle", "good", 0))
        options = {}
        if mixture:  # foreign sources need a second class
            options = {"kinds": KINDS, "foreign_prob": 0.3, "name_swap_prob": 0.3}
            samples += [Sample(s.image_path, None, "tile", "good", 0) for s in samples[:4]]
        dataset = PseudoAnomalyDataset(samples, image_size=size, **options)
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
    parser.add_argument("--kinds", action="store_true", help="also time every pseudo-anomaly kind alone")
    parser.add_argument("--root", type=Path, default=None, help="an MVTec-format folder to take images from")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    images = folder_images(args.root, args.size) if args.root else [scene(k, args.size) for k in range(16)]
    where = f"{len(images)} images of {args.root}" if args.root else "synthetic scenes"
    rate, cpu_rate, blended = bench_cutpaste(images, args.count)
    verdict = "OK" if rate >= TARGET_PER_SECOND else "BELOW TARGET"
    print(f"cutpaste_poisson at {args.size}x{args.size}, 1 thread, {where}: {rate:.0f} pseudo-anomalies/s "
          f"(target {TARGET_PER_SECOND:.0f}: {verdict}); {cpu_rate:.0f} per CPU-second (less sensitive to "
          f"other processes on the machine); Poisson-blended {blended:.1%}")
    rate, cpu_rate = bench_mixture(images, args.count)
    verdict = "OK" if rate >= MIXTURE_TARGET_PER_SECOND else "BELOW TARGET"
    print(f"pseudo_anomaly (default mixture): {rate:.0f} pseudo-anomalies/s (target "
          f"{MIXTURE_TARGET_PER_SECOND:.0f}: {verdict}); {cpu_rate:.0f} per CPU-second")
    if args.kinds:
        per_kind = max(20, args.count // 10)
        print(f"per kind ({per_kind} each), per CPU-second, and the share that fell back to the push:")
        for kind, kind_rate, pushed in bench_kinds(images, per_kind):
            print(f"  {kind:20s} {kind_rate:6.0f}/s  push {pushed:5.1%}")
    if args.dataset:
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover
            pass
        items = bench_dataset(max(50, args.count // 4), args.size, mixture=False)
        print(f"PseudoAnomalyDataset items (2 PNG 512x512 decodes + resize + cut-paste): {items:.0f} items/s")
        items = bench_dataset(max(50, args.count // 4), args.size, mixture=True)
        print(f"PseudoAnomalyDataset items, default mixture, foreign_prob 0.3, name_swap_prob 0.3 (1 or 2 PNG "
              f"512x512 decodes + resize + pseudo-anomaly): {items:.0f} items/s")


if __name__ == "__main__":
    main()
