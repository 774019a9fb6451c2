"""Datasets of SIAD-LLM: the dataset registry and its readers, meta.json, pseudo-anomalies and the
training dataset.

- `load_dataset(name, root, split)`: the `Sample`s of a registered dataset in its distributed layout
  (`DATASET_NAMES`: the benchmarks, any MVTec-format folder, a folder holding `meta.json`).
- The registry (`siad.data.registry`): one module per dataset in `siad.data.datasets` (reader, classes,
  example class, the paper's class descriptions, cross-dataset protocol membership: a `DatasetSpec`);
  `register(spec)` adds one at run time, `dataset_spec(name)` gives one, `class_folders(name, root)`.
- `group_by_class(samples)`: {class name: its samples}, in order.
- `load_mask(path, size=None)`: any mask file as a bool array (set where > 0).
- `read_meta(root, split)`, `write_meta(root, {split: samples})`: the zero-shot repositories' index.
- `cutpaste_poisson(image, source, rng)`: a CutPaste + Poisson pseudo-anomaly.
- `pseudo_anomaly(image, source, rng, weights)`: a generic pseudo-anomaly (shape x content) drawn from
  a mixture (`siad.data.pseudo`).
- `PseudoAnomalyDataset`, `collate_pairs`: the training batches of eq. 1 (imports torch).
- `python -m siad.data prepare NAME ROOT`: write `ROOT/meta.json`.

Submodules are imported on first use: `import siad.data` imports neither torch nor OpenCV.
`DATASET_NAMES` is read from the registry at each access (it names datasets registered later too).
SIAD-Synth, the procedural dataset generator, lives in `siad.data.synth`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "SPLITS": "siad.data.sample",
    "Sample": "siad.data.sample",
    "group_by_class": "siad.data.sample",
    "load_dataset": "siad.data.readers",
    "DatasetSpec": "siad.data.spec",
    "ReadOptions": "siad.data.spec",
    "register": "siad.data.registry",
    "dataset_spec": "siad.data.registry",
    "class_folders": "siad.data.registry",
    "MaskSizeWarning": "siad.data.masks",
    "load_mask": "siad.data.masks",
    "resize_mask": "siad.data.masks",
    "tile_sdd": "siad.data.datasets.sdd",
    "read_meta": "siad.data.meta",
    "read_meta_splits": "siad.data.meta",
    "write_meta": "siad.data.meta",
    "cutpaste_poisson": "siad.data.cutpaste",
    "PseudoAnomaly": "siad.data.cutpaste",
    "pseudo_anomaly": "siad.data.pseudo",
    "PseudoAnomalyDataset": "siad.data.dataset",
    "collate_pairs": "siad.data.dataset",
}

if TYPE_CHECKING:  # pragma: no cover
    from siad.data.cutpaste import PseudoAnomaly, cutpaste_poisson
    from siad.data.dataset import PseudoAnomalyDataset, collate_pairs
    from siad.data.datasets.sdd import tile_sdd
    from siad.data.masks import MaskSizeWarning, load_mask, resize_mask
    from siad.data.meta import read_meta, read_meta_splits, write_meta
    from siad.data.pseudo import pseudo_anomaly
    from siad.data.readers import load_dataset
    from siad.data.registry import class_folders, dataset_spec, register
    from siad.data.sample import SPLITS, Sample, group_by_class
    from siad.data.spec import DatasetSpec, ReadOptions

    DATASET_NAMES: tuple[str, ...]

__all__ = sorted([*_EXPORTS, "DATASET_NAMES"])


def __getattr__(name: str) -> Any:
    if name == "DATASET_NAMES":  # the registry's names now (datasets may be registered at run time)
        return importlib.import_module("siad.data.registry").dataset_names()
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'siad.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
