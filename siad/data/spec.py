"""What a dataset is to SIAD: a `DatasetSpec` (its name, reader, classes, example class, the paper's
class descriptions and its place in the cross-dataset protocol) and the `Reader` it names.

A dataset is one module of `siad.data.datasets` that defines its reader and its `SPEC`, and one entry
in the registry (`siad.data.datasets.BUILTIN`, or `siad.data.registry.register(spec)` at run time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from siad.data.sample import Sample


@dataclass(frozen=True)
class ReadOptions:
    """What `load_dataset` tells a reader besides the root and the split.

    dataset: the name the dataset was asked by (for messages); example_class: a class name of the
    dataset, for "expected e.g. ROOT/<class>/test" messages; cache_dir: where a reader may write a
    converted copy of raw data (raw KolektorSDD's tiles; None: it must not write); classes: only these
    classes were asked for (a reader may skip reading the others, which may be incomplete; `load_dataset`
    checks and filters in any case)."""

    dataset: str
    example_class: str = "<class>"
    cache_dir: Path | None = None
    classes: tuple[str, ...] | None = None


class Reader(Protocol):
    """A dataset folder in its distributed layout -> the `Sample`s of one split ("train" or "test"),
    sorted by class, then defect type, then file name; a wrong root or layout raises FileNotFoundError
    naming what was expected."""

    def __call__(self, root: Path, split: str, options: ReadOptions) -> list[Sample]: ...


@dataclass(frozen=True, eq=False)
class DatasetSpec:
    """One dataset: what `load_dataset`, `siad evaluate`, `siad.prompts` and training know of it.

    name: what `--dataset` and `load_dataset` take (lower case); title: its display name;
    read: its `Reader`; classes: its classes as distributed (empty: any, e.g. an MVTec-format folder);
    example_class: a class name for messages (default: the first class, else "<class>");
    descriptions: class -> the paper's description of it (tables 8-16; `siad.prompts.describe`);
    uzad_source: in the paper's cross-dataset protocol, the training set whose checkpoint tests this
    dataset (None: not a test set of the protocol);
    class_folders: the class folders a root holds, found without reading images (MVTec layout: the
    folders holding `train/`; training names the classes that have no normal image); None: unknown
    before reading;
    generic: a layout any folder may have, not one benchmark (results are filed under a name the user
    gives, `--card-dataset`);
    index_file: read from an index file (meta.json): `python -m siad.data prepare` has nothing to write;
    cache_folder: the folder under ROOT that `prepare` converts raw data into (None: nothing converted).
    """

    name: str
    title: str
    read: Reader
    classes: tuple[str, ...] = ()
    example_class: str = ""
    descriptions: Mapping[str, str] = field(default_factory=dict)
    uzad_source: str | None = None
    class_folders: Callable[[Path], list[str]] | None = None
    generic: bool = False
    index_file: bool = False
    cache_folder: str | None = None

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.lower() or not self.name.replace("_", "").isalnum():
            raise ValueError(f"a dataset name is lower-case letters, digits and '_', got {self.name!r}")
        unknown = [c for c in self.descriptions if self.classes and c not in self.classes]
        if unknown:
            raise ValueError(f"{self.name}: descriptions of classes {unknown} that are not in its classes")
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "descriptions", MappingProxyType(dict(self.descriptions)))
        if not self.example_class:
            object.__setattr__(self, "example_class", self.classes[0] if self.classes else "<class>")

    def options(self, cache_dir: Path | None = None, classes: tuple[str, ...] | None = None) -> ReadOptions:
        """The `ReadOptions` of a read of this dataset."""
        return ReadOptions(dataset=self.name, example_class=self.example_class, cache_dir=cache_dir,
                           classes=classes)
