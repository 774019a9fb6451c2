"""Command line: `python -m siad.data prepare NAME ROOT [--cache-dir DIR]`.

`prepare` reads the train and test splits of the dataset at ROOT (in its distributed layout) and
writes `ROOT/meta.json` (the zero-shot repositories' schema), then prints the number of normal and
anomalous images per class and split. Raw KolektorSDD ("sdd") is tiled into `--cache-dir`, which
must lie inside ROOT (meta.json paths are relative to ROOT; default `ROOT/<the dataset's cache_folder>`,
`ROOT/sdd_tiles` for SDD).
Exit status: 0 on success, 1 when the data cannot be read or ROOT is not writable, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from siad.data.meta import META_FILENAME, write_meta
from siad.data.readers import load_dataset
from siad.data.registry import dataset_spec, dataset_specs
from siad.data.sample import SPLITS, Sample


def _check_writable(root: Path) -> None:
    """Raise OSError with a clear message if a file cannot be created in `root`."""
    probe = root / f".siad-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as error:
        raise OSError(f"cannot write {root / META_FILENAME}: {root} is not writable ({error.strerror or error})") \
            from error
    finally:
        if probe.exists():
            probe.unlink()


def _counts_table(splits: dict[str, list[Sample]]) -> str:
    lines = [f"{'split':<6} {'class':<24} {'normal':>7} {'anomalous':>9} {'masks':>6}"]
    for split, samples in splits.items():
        normal = Counter(s.class_name for s in samples if s.label == 0)
        anomalous = Counter(s.class_name for s in samples if s.label == 1)
        masks = Counter(s.class_name for s in samples if s.mask_path is not None)
        for name in dict.fromkeys(s.class_name for s in samples):
            lines.append(f"{split:<6} {name:<24} {normal[name]:>7} {anomalous[name]:>9} {masks[name]:>6}")
        lines.append(f"{split:<6} {'(all)':<24} {sum(normal.values()):>7} {sum(anomalous.values()):>9} "
                     f"{sum(masks.values()):>6}")
    return "\n".join(lines)


def prepare(name: str, root: Path, cache_dir: Path | None = None) -> Path:
    """Write ROOT/meta.json for dataset `name`; returns its path (prints the counts)."""
    spec = dataset_spec(name)
    if spec.index_file:
        raise ValueError(f"'{name}' is already a meta.json folder; prepare reads a dataset in its own layout")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist or is not a folder")
    _check_writable(root)
    if cache_dir is None and spec.cache_folder is not None:
        cache_dir = root / spec.cache_folder
    if cache_dir is not None:
        base, cache = os.path.abspath(root), os.path.abspath(cache_dir)
        if os.path.commonpath([base, cache]) != base:
            raise ValueError(f"--cache-dir {cache_dir} must lie inside {root}: meta.json paths are relative to it")
    splits = {split: load_dataset(name, root, split, cache_dir=cache_dir) for split in SPLITS}
    try:
        path = write_meta(root, splits)
    except OSError as error:
        raise OSError(f"cannot write {root / META_FILENAME}: {error}") from error
    print(_counts_table(splits))
    print(f"wrote {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m siad.data", description="SIAD-LLM dataset tools")
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="write ROOT/meta.json for a dataset folder")
    prep.add_argument("name", choices=[s.name for s in dataset_specs() if not s.index_file], help="dataset name")
    prep.add_argument("root", type=Path, help="the dataset folder, as distributed")
    prep.add_argument("--cache-dir", type=Path, default=None,
                      help="where raw KolektorSDD tiles go (inside ROOT; default ROOT/sdd_tiles)")
    args = parser.parse_args(argv)
    try:
        prepare(args.name, args.root, args.cache_dir)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
