"""Datasets of SIAD-LLM: readers, meta.json, pseudo-anomalies and the training dataset.

- `load_dataset(name, root, split)`: the `Sample`s of a benchmark in its distributed layout
  (`DATASET_NAMES`), of any MVTec-format folder, or of a folder holding `meta.json`.
- `group_by_class(samples)`: {class name: its samples}, in order.
- `load_mask(path, size=None)`: any mask file as a bool array (set where > 0).
- `read_meta(root, split)`, `write_meta(root, {split: samples})`: the zero-shot repositories' index.
- `cutpaste_poisson(image, source, rng)`: a CutPaste + Poisson pseudo-anomaly.
- `pseudo_anomaly(image, source, rng, weights)`: a generic pseudo-anomaly (shape x content) drawn from
  a mixture (`siad.data.pseudo`).
- `PseudoAnomalyDataset`, `collate_pairs`: the training batches of eq. 1 (imports torch).
- `python -m siad.data prepare NAME ROOT`: write `ROOT/meta.json`.

Submodules are imported on first use: `import siad.data` imports neither torch nor OpenCV.
SIAD-Synth, the procedural dataset generator, lives in `siad.data.synth`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DATASET_NAMES": "siad.data.readers",
    "SPLITS": "siad.data.readers",
    "Sample": "siad.data.readers",
    "load_dataset": "siad.data.readers",
    "group_by_class": "siad.data.readers",
    "load_mask": "siad.data.readers",
    "resize_mask": "siad.data.readers",
    "tile_sdd": "siad.data.readers",
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
    from siad.data.meta import read_meta, read_meta_splits, write_meta
    from siad.data.pseudo import pseudo_anomaly
    from siad.data.readers import (DATASET_NAMES, SPLITS, Sample, group_by_class, load_dataset, load_mask,
                                   resize_mask, tile_sdd)

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'siad.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
