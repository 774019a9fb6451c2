"""The command line of SIAD-Synth: `python -m siad.data.synth --out DIR [--seed N] ...`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional, Sequence

from siad.data.synth.common import SynthError
from siad.data.synth.writing import DEFAULTS, SMALL, generate

DESCRIPTION = "SIAD-Synth: MVTec-format anomaly-detection data made here, with no download."


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line: `python -m siad.data.synth --out DIR [--seed N] [--small] [--size S] [--overwrite]`."""
    parser = argparse.ArgumentParser(prog="python -m siad.data.synth", description=DESCRIPTION)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; must be empty)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default 256)")
    parser.add_argument("--small", action="store_true", help="a reduced set (the tests' SMALL counts)")
    parser.add_argument("--overwrite", action="store_true", help="replace a former SIAD-Synth set in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    settings = dict(SMALL if args.small else DEFAULTS)
    if args.size is not None:
        settings["size"] = args.size
    start = time.perf_counter()
    try:
        summary = generate(args.out, args.seed, overwrite=args.overwrite, progress=not args.quiet, **settings)
    except (SynthError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    elapsed = time.perf_counter() - start
    print(f"wrote {summary['total_images']} images and {summary['total_masks']} masks to {args.out} "
          f"in {elapsed:.1f} s (seed {args.seed})")
    return 0
