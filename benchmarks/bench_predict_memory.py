"""Peak memory of `siad.predict` against the number of images: the rows stream to predictions.csv
batch by batch and each batch's results go to disk, so the peak should not grow with the images.

    python benchmarks/bench_predict_memory.py [--model checkpoints/siad-mini] [--counts 100 2000]
        [--side 256] [--chat] [--workers 2]

Writes max(--counts) synthetic PNG images of `--side` px into a temporary folder, then, for each count,
runs `siad.predict.main` on the first `count` of them in a fresh process and prints that process's
peak resident set size (ru_maxrss) and the largest peak of its DataLoader workers (children), with
the wall time. Map-only by default (`--chat` adds the LLM: the same memory picture, slower).
A script, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from siad.predict import main
folder, count, out, model, chat, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
paths = sorted(Path(folder).glob("*.png"))[:count]
argv = ["--model", model, "--class", "gear", *map(str, paths), "--out", out, "--quiet", "--workers", workers]
start = time.perf_counter()
main(argv if chat == "1" else [*argv, "--no-chat"])
print(json.dumps({"count": count, "seconds": time.perf_counter() - start,
                  "self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "children_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def write_images(folder: Path, count: int, side: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side]
    for index in range(count):
        base = 120 + 60 * np.sin(x / (9 + index % 7) + rng.uniform(0, 6)) * np.cos(y / 13.0)
        rgb = np.stack([base, base * 0.8 + 20, base * 0.6 + 40], axis=2) + rng.normal(0, 4, (side, side, 3))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"{index:05d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "checkpoints" / "siad-mini"))
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 2000])
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--chat", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    with tempfile.TemporaryDirectory(prefix="siad-predict-memory-") as base:
        images = Path(base) / "images"
        images.mkdir()
        write_images(images, max(args.counts), args.side)
        print(f"siad.predict, model {args.model}, {'chat' if args.chat else 'map only (--no-chat)'}, "
              f"{args.side} x {args.side} px PNGs, --workers {args.workers}, batch 8")
        print(f"{'images':>7}{'peak RSS MB':>13}{'workers MB':>12}{'seconds':>9}{'img/s':>8}")
        for count in args.counts:
            out = Path(base) / f"out-{count}"
            result = subprocess.run([sys.executable, "-c", CHILD, str(images), str(count), str(out), args.model,
                                     "1" if args.chat else "0", str(args.workers)],
                                    env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(result.stderr[-3000:])
            row = json.loads(result.stdout.strip().splitlines()[-1])
            rows = sum(1 for _ in (out / "predictions.csv").open()) - 1
            assert rows == count, (rows, count)
            print(f"{count:>7}{row['self_kib'] / 1024:>13.0f}{row['children_kib'] / 1024:>12.0f}"
                  f"{row['seconds']:>9.1f}{count / row['seconds']:>8.1f}")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"(whole benchmark: {time.perf_counter() - started:.0f} s)")
