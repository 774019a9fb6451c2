"""Benchmark siad.metrics against scikit-learn, and its memory on an MVTec-AD-size test set.

    .venv/bin/python benchmarks/bench_metrics.py                 # the full run (about a minute)
    .venv/bin/python benchmarks/bench_metrics.py --pixels 4e6 --images 200   # a quick one

1. Pixel AUROC over `--pixels` pixels (default 40 M, as N x 224 x 224): random maps rounded to
   float16 values (many ties), about 3 % anomalous pixels. `siad.metrics.pixel_auroc` and
   `sklearn.metrics.roc_auc_score` are timed in the same run on the same arrays (best of
   `--repeat` for ours, one run of scikit-learn's); prints both times, the speed-up and the
   difference of the two values (must be below 1e-6).
2. AUPRO and pixel AUROC on `--images` images of 224 x 224 (default 1725, MVTec AD's test set)
   with rectangular defects in about 70 % of the images, through `PixelMetricAccumulator` (the
   evaluation-loop path) and through the one-shot functions: time, and peak memory traced by
   `tracemalloc` beyond the input arrays (numpy reports its buffers to tracemalloc), plus the
   process's peak RSS when psutil is there.

scikit-learn is a test dependency; this script needs it.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from siad.metrics import PixelMetricAccumulator, aupro, pixel_auroc  # noqa: E402

SIDE = 224
MB = 1024**2


def _timed(function: Callable[[], Any], repeat: int = 1) -> tuple[Any, float]:
    """(result, best wall time in seconds over `repeat` calls)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return result, best


def _traced_peak(function: Callable[[], Any]) -> tuple[Any, float]:
    """(result, peak MB that numpy and Python allocated during the call, beyond what was held)."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    held, _ = tracemalloc.get_traced_memory()
    result = function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, (peak - held) / MB


def _pixel_auroc_vs_sklearn(n_pixels: int, repeat: int, seed: int) -> bool:
    from sklearn.metrics import roc_auc_score

    n_images = max(1, round(n_pixels / SIDE**2))
    rng = np.random.default_rng(seed)
    masks = rng.random((n_images, SIDE, SIDE), dtype=np.float32) < 0.03
    maps = rng.random(masks.shape, dtype=np.float32)
    maps += 0.25 * masks
    maps = maps.astype(np.float16).astype(np.float32)  # float16 values: some 13 000 distinct, many ties
    print(f"[1] pixel AUROC: {n_images} x {SIDE} x {SIDE} = {masks.size / 1e6:.1f} M pixels, "
          f"{masks.mean() * 100:.2f} % anomalous, {np.unique(maps).size} distinct scores (float32 maps)")
    ours, ours_s = _timed(lambda: pixel_auroc(masks, maps), repeat)
    theirs, theirs_s = _timed(lambda: roc_auc_score(masks.ravel(), maps.ravel()))
    difference = abs(ours - theirs)
    print(f"    siad.metrics.pixel_auroc      {ours_s:8.2f} s   AUROC {ours:.12f}")
    print(f"    sklearn roc_auc_score         {theirs_s:8.2f} s   AUROC {theirs:.12f}")
    print(f"    speed-up {theirs_s / ours_s:.1f}x (target >= 5x); |difference| {difference:.2e} (must be < 1e-6)")
    _, peak = _traced_peak(lambda: pixel_auroc(masks, maps))
    print(f"    pixel_auroc peak memory beyond its input: {peak:.0f} MB "
          f"(input {(maps.nbytes + masks.nbytes) / MB:.0f} MB)")
    return difference < 1e-6 and theirs_s / ours_s >= 5.0


def _mvtec_like(n_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(masks bool, maps float32), both (n_images, 224, 224): rectangles in ~70 % of the images."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_images, SIDE, SIDE), dtype=bool)
    for image in np.flatnonzero(rng.random(n_images) < 0.7):
        for _ in range(rng.integers(1, 4)):
            top, left = rng.integers(0, SIDE - 8, 2)
            height, width = rng.integers(4, 60, 2)
            masks[image, top:top + height, left:left + width] = True
    maps = rng.random(masks.shape, dtype=np.float32)
    maps += 0.5 * masks
    return masks, maps


def _mvtec_size(n_images: int, seed: int) -> None:
    masks, maps = _mvtec_like(n_images, seed)
    print(f"[2] MVTec-size set: {n_images} x {SIDE} x {SIDE} = {masks.size / 1e6:.1f} M pixels, "
          f"{masks.mean() * 100:.1f} % anomalous; input {(maps.nbytes + masks.nbytes) / MB:.0f} MB "
          f"(float32 maps + bool masks)")

    value, seconds = _timed(lambda: aupro(masks, maps))
    _, peak = _traced_peak(lambda: aupro(masks, maps))
    print(f"    aupro (one call, N x H x W arrays)   {seconds:6.2f} s   AUPRO@0.3 {value:.6f}   "
          f"peak beyond input {peak:.0f} MB")
    value, seconds = _timed(lambda: pixel_auroc(masks, maps))
    _, peak = _traced_peak(lambda: pixel_auroc(masks, maps))
    print(f"    pixel_auroc (one call)               {seconds:6.2f} s   AUROC {value:.6f}       "
          f"peak beyond input {peak:.0f} MB")

    def loop() -> tuple[float, float]:
        accumulator = PixelMetricAccumulator()
        for start in range(0, n_images, 32):  # batches as an evaluation loop would give them
            accumulator.update(masks[start:start + 32], maps[start:start + 32])
        return accumulator.aupro(), accumulator.pixel_auroc()

    (loop_aupro, loop_auroc), seconds = _timed(loop)
    _, peak = _traced_peak(loop)
    print(f"    PixelMetricAccumulator: update all + aupro + pixel_auroc {seconds:6.2f} s; "
          f"peak incl. its stored copy {peak:.0f} MB (same values: "
          f"{loop_aupro == aupro(masks, maps) and loop_auroc == value})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pixels", type=float, default=40e6, help="pixels for the AUROC comparison")
    parser.add_argument("--images", type=int, default=1725, help="224 x 224 images for the AUPRO run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours; the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"numpy {np.__version__}, Python {sys.version.split()[0]}")
    passed = _pixel_auroc_vs_sklearn(int(args.pixels), args.repeat, args.seed)
    _mvtec_size(args.images, args.seed)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"process peak RSS over the whole run (scikit-learn's call included): {peak_rss:.0f} MB")
    print("PASS" if passed else "FAIL: speed-up below 5x or values differ")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
