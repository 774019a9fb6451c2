"""`load_dataset(name, root, split)`: the `Sample`s of a registered dataset (`siad.data.registry`) in the
layout it is distributed in (DESIGN section 4): the benchmarks, any MVTec-format folder and `meta.json`.
Each dataset's layout is described in its module of `siad.data.datasets`.

Conventions (the same for every dataset):

- `label` is 0 for a normal image and 1 for an anomalous one; it is the authority on normality.
- `defect_type` is "good" for every normal image (BTAD's "ok" and the medical sets' "no" included)
  and the dataset's own defect name for an anomalous one ("broken_large", "ko", "anomaly" for VisA,
  "defect" for SDD tiles, "yes" for BrainMRI/Br35H, "hemorrhage" for HeadCT).
- `mask_path` is None for every normal image. An anomalous image of a dataset that has masks always
  has one: a missing mask is an error naming it, never an empty mask. The medical sets have no masks
  (image-level metrics only), so their anomalous images have `mask_path` None.
- Masks are paired with images by file stem (`000.png` <-> `000_mask.png` or `000.bmp`), never by
  sort order. A mask whose size differs from its image's (EXIF orientation applied to both) is
  reported by `load_dataset` with a `MaskSizeWarning` naming both files (`siad.data.masks`): it would
  otherwise be stretched to the image without a word.
- Samples come sorted by class, then defect type, then file name.

Splits: "train" holds normal images only; "test" holds normal and anomalous images. SDD and the medical
sets have no train split of their own: "test" holds every image, "train" the normal ones.

A wrong root or layout raises `FileNotFoundError` naming the folder or file that was expected.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from siad.data.masks import check_mask_sizes
from siad.data.registry import dataset_spec
from siad.data.sample import SPLITS, PathLike, Sample, require_root


def load_dataset(name: str, root: PathLike, split: str, *, cache_dir: PathLike | None = None,
                 classes: Iterable[str] | None = None) -> list[Sample]:
    """The samples of one split ("train" or "test") of a dataset folder.

    name: a registered dataset (`siad.data.DATASET_NAMES`: "mvtec", "visa", "mpdd", "btad", "dtd", "sdd",
    "brainmri", "headct", "br35h", "mvtec_format" for any MVTec-layout folder, "meta" for a folder holding
    meta.json, and any added with `siad.data.registry.register`), in any case. root: the dataset folder
    as distributed. cache_dir: where raw data is converted (raw "sdd" tiles; needed for raw "sdd" only).
    classes: keep only these classes (each must exist). Masks whose size differs from their image's are
    reported with one `MaskSizeWarning` (`siad.data.masks.check_mask_sizes`).
    """
    spec = dataset_spec(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = require_root(root)
    wanted = None if classes is None else tuple(dict.fromkeys(classes))
    samples = spec.read(path, split, spec.options(None if cache_dir is None else Path(cache_dir), wanted))
    if wanted is not None:
        present = sorted({s.class_name for s in samples})
        unknown = [c for c in wanted if c not in present]
        if unknown:
            raise ValueError(f"class(es) {unknown} not in the {split} split of {name} at {path}; "
                             f"available: {present}")
        samples = [s for s in samples if s.class_name in set(wanted)]
    check_mask_sizes(samples)
    return samples
