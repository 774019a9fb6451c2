"""The dataset registry: every dataset SIAD reads, by name (`siad.data.spec.DatasetSpec`).

Filled with `siad.data.datasets.BUILTIN`; `register(spec)` adds a dataset at run time (a reader outside
SIAD), after which `load_dataset`, `siad evaluate --dataset`, `DATASET_NAMES`, the class descriptions
of `siad.prompts` and the cross-dataset protocol all know it.

- `dataset_spec(name)`, `dataset_specs()`, `dataset_names()`: what is registered, in order.
- `CLASS_DESCRIPTIONS`: {dataset: {class: the paper's description}}, a read-only view that follows the
  registry (datasets without descriptions left out).
- `class_folders(name, root)`: the class folders an MVTec-layout root holds, without reading images.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from siad.data.datasets import BUILTIN
from siad.data.spec import DatasetSpec

_SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in BUILTIN}


def register(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add a dataset (`replace`: in place of a registered one of the same name); returns it."""
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"register takes a DatasetSpec, got {type(spec).__name__}")
    if spec.name in _SPECS and not replace:
        raise ValueError(f"a dataset named {spec.name!r} is registered already (replace=True replaces it)")
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> DatasetSpec:
    """Remove a registered dataset; returns its spec (ValueError for an unknown name)."""
    spec = dataset_spec(name)
    del _SPECS[spec.name]
    return spec


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset (the name in any case); ValueError naming the registered ones."""
    spec = _SPECS.get(name.lower())
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; expected one of {dataset_names()}")
    return spec


def dataset_specs() -> tuple[DatasetSpec, ...]:
    """Every registered dataset, in registration order."""
    return tuple(_SPECS.values())


def dataset_names() -> tuple[str, ...]:
    """The names of the registered datasets, in registration order (`siad.data.DATASET_NAMES`)."""
    return tuple(_SPECS)


def class_folders(name: str, root: Path) -> list[str]:
    """The class folders of a dataset root found without reading images (MVTec layout: those holding
    `train/`); [] for a dataset whose classes are only known by reading it, or a root that is no folder."""
    finder = dataset_spec(name).class_folders
    return finder(root) if finder is not None and root.is_dir() else []


class _ClassDescriptions(Mapping[str, Mapping[str, str]]):
    """{dataset: {class: description}} of the registered datasets that have descriptions, read from the
    registry at every access."""

    def _tables(self) -> dict[str, Mapping[str, str]]:
        return {spec.name: spec.descriptions for spec in _SPECS.values() if spec.descriptions}

    def __getitem__(self, dataset: str) -> Mapping[str, str]:
        return self._tables()[dataset]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables())

    def __len__(self) -> int:
        return len(self._tables())


CLASS_DESCRIPTIONS: Mapping[str, Mapping[str, str]] = _ClassDescriptions()
