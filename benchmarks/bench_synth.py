"""Time SIAD-Synth: the default set (wall and CPU time) and each generator per image; the families
writer (images per second) and each family per image.

    python benchmarks/bench_synth.py [--out DIR] [--seed N] [--per-class] [--families [--per-family N]]
                                     [--per-family-timing]

Without --out, sets are written to a temporary folder that is removed afterwards. For the "one core"
figure, pin the process: `taskset -c 0 env OMP_NUM_THREADS=1 python benchmarks/bench_synth.py --families`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from siad.data import synth
from siad.data.synth import family_sets


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


def time_families(size: int, repeats: int = 4) -> None:
    """Milliseconds per normal image of each family (training and held-out)."""
    for registry, label in ((synth.TRAIN_FAMILIES, "train"), (synth.HELDOUT_FAMILIES, "held-out")):
        for name in registry:
            start = time.perf_counter()
            for index in range(repeats):
                synth.make_family_image(name, synth.rng_for(0, f"{name}/{index}"), size)
            print(f"{name:22s} ({label:8s}) {1000 * (time.perf_counter() - start) / repeats:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the set(s) here (must be empty)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", action="store_true", help="also time each generator")
    parser.add_argument("--families", action="store_true",
                        help="time the families writer instead of SIAD-Synth's default set")
    parser.add_argument("--per-family", type=int, default=family_sets.FAMILIES_DEFAULTS["per_family"],
                        help="images per family for --families (default: the writer's default)")
    parser.add_argument("--per-family-timing", action="store_true", help="also time each family")
    args = parser.parse_args()
    size = synth.DEFAULTS["size"]
    if args.per_class:
        time_generators(size)
    if args.per_family_timing:
        time_families(size)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out if args.out is not None else Path(scratch) / "synth"
        wall, cpu = time.perf_counter(), time.process_time()
        if args.families:
            summary = synth.generate_families(out, args.seed, per_family=args.per_family, size=size, progress=False)
        else:
            summary = synth.generate(out, args.seed, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    what = f"families set ({len(summary['families'])} families x {args.per_family})" if args.families else "default set"
    print(f"{what}: {summary['total_images']} images, {summary['total_masks']} masks, {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU, {summary['total_images'] / wall:.1f} images/s")


if __name__ == "__main__":
    main()
