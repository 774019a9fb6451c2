"""`meta.json`: the dataset index of the zero-shot anomaly detection repositories.

Schema: `{"train"|"test": {class: [{"img_path", "mask_path", "cls_name", "specie_name", "anomaly"}]}}`,
paths relative to the dataset root (forward slashes), `mask_path` "" when there is none,
`anomaly` 0 or 1, `specie_name` the defect type ("good" for normal images).

Reading: every path must lie inside the root (relative, no `..` out of it; as writing requires), else
the entry is refused by name; a normal entry gets `mask_path` None whatever the file says; an anomalous entry with
`mask_path` "" gets None (the medical sets have no masks), one naming a file that does not exist is
an error naming it. Writing is atomic (a temporary file, then a rename) and groups the samples by
class in the order the classes first appear, so that write-then-read gives the same list back for
samples grouped by class (as every reader returns them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from siad.data.sample import NORMAL_DEFECT, PathLike, Sample, path_inside_root, within
from siad.jsonfile import MAX_INDEX_BYTES, read_json

META_FILENAME = "meta.json"


def meta_file(root: PathLike) -> Path:
    """The meta.json of a dataset root (`root` may also be the .json file itself)."""
    path = Path(root)
    return path if path.suffix.lower() == ".json" else path / META_FILENAME


def _entry_to_sample(root: Path, entry: Any, where: str) -> Sample:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: an entry must be an object, got {type(entry).__name__}")
    for key in ("img_path", "cls_name", "anomaly"):
        if key not in entry:
            raise ValueError(f"{where}: entry without '{key}': {dict(entry)}")
    try:
        label = int(entry["anomaly"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: 'anomaly' must be 0 or 1, got {entry['anomaly']!r}") from error
    if label not in (0, 1):
        raise ValueError(f"{where}: 'anomaly' must be 0 or 1, got {entry['anomaly']!r}")
    image = path_inside_root(root, entry["img_path"], f"{where}: 'img_path'")
    if not image.is_file():
        raise FileNotFoundError(f"{where}: image file not found: {image}")
    mask: Path | None = None
    mask_rel = entry.get("mask_path") or ""
    if label == 1 and mask_rel:
        mask = path_inside_root(root, mask_rel, f"{where}: 'mask_path'")
        if not mask.is_file():
            raise FileNotFoundError(f"{where}: mask of the anomalous image {image} not found: {mask}")
    defect = str(entry.get("specie_name") or (NORMAL_DEFECT if label == 0 else "anomaly"))
    return Sample(image, mask, str(entry["cls_name"]), defect, label)


def read_meta_splits(root: PathLike) -> dict[str, list[Sample]]:
    """Every split of a meta.json: {split: samples}, in the file's order."""
    path = meta_file(root)
    if not path.is_file():
        raise FileNotFoundError(f"meta file not found: expected {path}")
    base = path.parent
    data = read_json(path, max_bytes=MAX_INDEX_BYTES)  # size and nesting bounded
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: the top level must be an object {{split: {{class: [entries]}}}}")
    splits: dict[str, list[Sample]] = {}
    for split, by_class in data.items():
        if not isinstance(by_class, Mapping):
            raise ValueError(f"{path}: split '{split}' must be an object {{class: [entries]}}")
        samples: list[Sample] = []
        for class_name, entries in by_class.items():
            if not isinstance(entries, list):
                raise ValueError(f"{path}: {split}/{class_name} must be a list of entries")
            for number, entry in enumerate(entries):
                samples.append(_entry_to_sample(base, entry, f"{path} [{split}][{class_name}][{number}]"))
        splits[str(split)] = samples
    return splits


def read_meta(root: PathLike, split: str) -> list[Sample]:
    """The samples of one split ("train" or "test") of `root/meta.json`."""
    splits = read_meta_splits(root)
    if split not in splits:
        raise ValueError(f"{meta_file(root)} has no split {split!r}; it has {sorted(splits)}")
    return splits[split]


def _relative(path: Path, base: str, kind: str) -> str:
    absolute = os.path.abspath(path)
    if not within(base, absolute):
        raise ValueError(f"the {kind} {path} is not inside the dataset root {base}; meta.json paths are "
                         f"relative to the root")
    return Path(os.path.relpath(absolute, base)).as_posix()


def meta_dict(root: PathLike, splits: Mapping[str, Iterable[Sample]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The meta.json content for samples (paths made relative to `root`)."""
    base = os.path.abspath(root)
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for split, samples in splits.items():
        by_class: dict[str, list[dict[str, Any]]] = {}
        for sample in samples:
            by_class.setdefault(sample.class_name, []).append({
                "img_path": _relative(sample.image_path, base, "image"),
                "mask_path": "" if sample.mask_path is None else _relative(sample.mask_path, base, "mask"),
                "cls_name": sample.class_name,
                "specie_name": sample.defect_type,
                "anomaly": int(sample.label),
            })
        out[str(split)] = by_class
    return out


def write_meta(root: PathLike, splits: Mapping[str, Iterable[Sample]]) -> Path:
    """Write `root/meta.json` (or the .json path given) for {split: samples}; returns its path.

    Every image and mask must lie inside the root. Raises OSError if the file cannot be written.
    """
    path = meta_file(root)
    content = json.dumps(meta_dict(path.parent, splits), indent=2) + "\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
