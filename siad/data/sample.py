"""What every dataset reader gives and shares: `Sample`, the splits, and the file helpers of the readers.

- `Sample`: one image (its path, mask path or None, class name, defect type, label).
- `group_by_class(samples)`: {class name: its samples}, in order.
- `list_images`, `require_dir`, `require_root`, `masks_by_stem`: folder listing and checks, the same
  for every reader (`siad.data.datasets`).
- `within`, `path_inside_root`: a path an index file gives (meta.json, VisA's split CSV) must stay
  inside the dataset root.

This module imports nothing of `siad` but `siad.jsonfile`; the readers, `siad.data.meta` and the
registry build on it (no import circle).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from siad.jsonfile import short_repr

PathLike = Union[str, "os.PathLike[str]"]

SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
NORMAL_DEFECT = "good"


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    image_path: the image file. mask_path: its ground-truth mask, or None (normal images, and
    anomalous images of the medical sets, which have no masks). class_name: as the dataset spells
    it. defect_type: "good" for normal images, else the dataset's defect name. label: 0 normal,
    1 anomalous.
    """

    image_path: Path
    mask_path: Path | None
    class_name: str
    defect_type: str
    label: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_path", Path(self.image_path))
        if self.mask_path is not None:
            object.__setattr__(self, "mask_path", Path(self.mask_path))
        if self.label not in (0, 1) or isinstance(self.label, bool):
            raise ValueError(f"Sample label must be 0 or 1, got {self.label!r} for {self.image_path}")
        object.__setattr__(self, "label", int(self.label))


def group_by_class(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    """The samples of each class, classes in order of first appearance, samples in their order."""
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.class_name, []).append(sample)
    return groups


# ----------------------------------------------------------------------------- folders
def is_image(path: Path) -> bool:
    """A visible file with an image extension (`IMAGE_EXTENSIONS`)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """The image files of a folder, sorted by name."""
    return sorted((p for p in folder.iterdir() if is_image(p)), key=lambda p: p.name)


def require_dir(folder: Path, what: str) -> Path:
    """`folder`, or a FileNotFoundError naming it and `what` it should hold."""
    if not folder.is_dir():
        raise FileNotFoundError(f"expected the folder {folder} ({what}), but it does not exist")
    return folder


def require_root(root: PathLike) -> Path:
    """A dataset root that exists and is a folder (FileNotFoundError otherwise)."""
    path = Path(root)
    if not path.exists():
        raise FileNotFoundError(f"dataset root {path} does not exist")
    if not path.is_dir():
        raise FileNotFoundError(f"dataset root {path} is not a folder")
    return path


def masks_by_stem(folder: Path) -> dict[str, Path]:
    """The mask files of a folder keyed by the stem of the image they belong to.

    `000_mask.png` and `000.bmp` both belong to `000`; the `_mask` form wins if both exist.
    """
    found: dict[str, Path] = {}
    for path in list_images(folder):
        stem = path.stem
        if stem.endswith("_mask"):
            found[stem[: -len("_mask")]] = path
        else:
            found.setdefault(stem, path)
    return found


# ----------------------------------------------------------------------------- index files
def within(base: str, path: str) -> bool:
    """Whether `path` lies inside the directory `base` (absolute; `..` resolved lexically, as the path
    is written, links not followed)."""
    return os.path.commonpath([os.path.abspath(path), base]) == base


def path_inside_root(root: Path, relative: Any, what: str) -> Path:
    """root / relative for a path an index file gives (meta.json, VisA's split CSV): a string relative to
    the root that stays inside it (no absolute path, no `..` out of the root), else a ValueError naming
    `what` (the file, the entry and the field)."""
    base = os.path.abspath(root)
    if not isinstance(relative, str) or not within(base, os.path.join(base, relative)):
        raise ValueError(f"{what} {short_repr(relative)} is not a path inside the dataset root {base}; the "
                         f"paths of an index file are relative to the root")
    return root / relative
