"""Time SIAD-Synth: the default set (wall and CPU time) and each generator per image.

    python benchmarks/bench_synth.py [--out DIR] [--seed N] [--per-class]

Without --out, the set is written to a temporary folder that is removed afterwards. For the
"one core" figure, pin the process: `taskset -c 0 env OMP_NUM_THREADS=1 python benchmarks/bench_synth.py`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from siad.data import synth


def time_generators(size: int, repeats: int = 4) -> None:
    """Milliseconds per image for each class's normal and defect generators, and for a scan."""
    for name in synth.TRAIN_CLASSES + synth.TEST_CLASSES:
        start = time.perf_counter()
        for index in range(repeats):
            synth.make_normal(name, synth.rng_for(0, f"{name}/{index}"), size)
        normal = (time.perf_counter() - start) / repeats
        start = time.perf_counter()
        for kind in synth.DEFECT_KINDS:
            synth.make_anomalous(name, kind, synth.rng_for(0, f"{name}/{kind}"), size)
        defect = (time.perf_counter() - start) / len(synth.DEFECT_KINDS)
        print(f"{name:12s} normal {1000 * normal:6.1f} ms   with defect {1000 * defect:6.1f} ms")
    start = time.perf_counter()
    for index in range(repeats):
        synth.make_scan(synth.rng_for(0, f"scan/{index}"), size, lesion=bool(index % 2))
    print(f"{'scan':12s} {1000 * (time.perf_counter() - start) / repeats:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the set here (must be empty)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", action="store_true", help="also time each generator")
    args = parser.parse_args()
    if args.per_class:
        time_generators(synth.DEFAULTS["size"])
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out if args.out is not None else Path(scratch) / "synth"
        wall, cpu = time.perf_counter(), time.process_time()
        summary = synth.generate(out, args.seed, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"default set: {summary['total_images']} images, {summary['total_masks']} masks, "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU")


if __name__ == "__main__":
    main()
