"""The command line of SIAD-Synth.

    python -m siad.data.synth --out DIR [--seed N] [--small] [--size S] [--overwrite] [--quiet]
        SIAD-Synth itself (training and unseen test classes, medical-like scans)
    python -m siad.data.synth families --out DIR [--per-family N] [--size S] [--seed K] [--small] ...
        normal training images of every generator family of TRAIN_FAMILIES
    python -m siad.data.synth heldout --out DIR [--seed K] [--size S] [--small] ...
        a test set (normals, drawn defects, exact masks) of the held-out families
    python -m siad.data.synth realphoto --out DIR [--seed K] [--size S] [--small] ...
        a test set made of real photographs (scikit-image's sample images) with drawn defects
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from siad.data.synth import family_sets as sets
from siad.data.synth.common import SynthError
from siad.data.synth.realphoto import generate_realphoto
from siad.data.synth.writing import DEFAULTS, SMALL, generate

DESCRIPTION = "SIAD-Synth: MVTec-format anomaly-detection data made here, with no download."
COMMANDS = ("families", "heldout", "validation", "realphoto")
_EPILOG = ("other sets: `python -m siad.data.synth families --out DIR` (training images of the generator "
           "families), `python -m siad.data.synth heldout --out DIR` (a test set of the held-out families) and "
           "`python -m siad.data.synth validation --out DIR` (a test set of the validation families) and "
           "`python -m siad.data.synth realphoto --out DIR` (a test set of real photographs with drawn defects); "
           "see their --help")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line: `python -m siad.data.synth --out DIR [--seed N] [--small] [--size S] [--overwrite]`,
    or a subcommand of `COMMANDS` first (`families`, `heldout`, `validation`, `realphoto`)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in COMMANDS:
        return _family_main(arguments[0], arguments[1:])
    parser = argparse.ArgumentParser(prog="python -m siad.data.synth", description=DESCRIPTION, epilog=_EPILOG)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; must be empty)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default 256)")
    parser.add_argument("--small", action="store_true", help="a reduced set (the tests' SMALL counts)")
    parser.add_argument("--overwrite", action="store_true", help="replace a former SIAD-Synth set in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(arguments)
    summary, elapsed = _write(parser, args, generate, dict(SMALL if args.small else DEFAULTS))
    print(f"wrote {summary['total_images']} images and {summary['total_masks']} masks to {args.out} "
          f"in {elapsed:.1f} s (seed {args.seed})")
    return 0


def _write(parser: argparse.ArgumentParser, args: argparse.Namespace, write: Callable[..., dict],
           settings: dict) -> tuple[dict, float]:
    """Run a set's writer with the parsed options (--size overriding the settings); a problem with the
    output folder or a setting exits with status 2. Returns the set's summary and the seconds it took."""
    if args.size is not None:
        settings["size"] = args.size
    start = time.perf_counter()
    try:
        summary = write(args.out, args.seed, overwrite=args.overwrite, progress=not args.quiet, **settings)
    except (SynthError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return summary, time.perf_counter() - start


def _family_main(command: str, arguments: list[str]) -> int:
    prog = f"python -m siad.data.synth {command}"
    if command == "families":
        parser = argparse.ArgumentParser(prog=prog, description=(
            "Normal training images of every generator family (MVTec layout DIR/<family>/train/good), "
            "meta.json, families.json and README.md."))
        parser.add_argument("--per-family", type=int, default=None,
                            help=f"images per family (default {sets.FAMILIES_DEFAULTS['per_family']})")
    else:
        which = {"heldout": "held-out families", "validation": "validation families (kept out of `families`)",
                 "realphoto": "real photographs (scikit-image's sample images, left halves for train/good, right "
                              "halves for test)"}[command]
        parser = argparse.ArgumentParser(prog=prog, description=(
            f"A test set of the {which} in the layout of SIAD-Synth's test split: train/good references, "
            f"test/good, test/<defect> with drawn defects, exact ground_truth masks; meta.json, {command}.json "
            f"and README.md."))
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; must be empty)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default 256)")
    parser.add_argument("--small", action="store_true", help="a reduced set (for tests)")
    parser.add_argument("--overwrite", action="store_true", help="replace a former set of this kind in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(arguments)
    if command == "families":
        settings = dict(sets.FAMILIES_SMALL if args.small else sets.FAMILIES_DEFAULTS)
        if args.per_family is not None:
            settings["per_family"] = args.per_family
        write = sets.generate_families
    else:
        settings = dict(sets.HELDOUT_SMALL if args.small else sets.HELDOUT_DEFAULTS)
        write = {"heldout": sets.generate_heldout, "validation": sets.generate_validation,
                 "realphoto": generate_realphoto}[command]
    summary, elapsed = _write(parser, args, write, settings)
    rate = summary["total_images"] / max(elapsed, 1e-9)
    print(f"wrote {summary['total_images']} images and {summary['total_masks']} masks of "
          f"{len(summary['families'])} families to {args.out} in {elapsed:.1f} s ({rate:.1f} images/s, "
          f"seed {args.seed})")
    return 0
