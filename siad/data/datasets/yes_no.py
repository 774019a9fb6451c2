"""The layout of BrainMRI and Br35H: `yes/` (tumour) and `no/` (normal) image folders, one class
"brain", no masks (image metrics only). There is no train split of its own: "test" holds every image,
"train" the normal ones (the paper trains on Br35H and BrainMRI normals; train and test overlap, which
the cross-dataset protocol allows). Br35H's unlabelled `pred/` folder is ignored."""

from __future__ import annotations

from pathlib import Path

from siad.data.sample import NORMAL_DEFECT, Sample, list_images, require_dir
from siad.data.spec import ReadOptions

BRAIN = "brain"


def read_yes_no(root: Path, split: str, options: ReadOptions) -> list[Sample]:
    """`no/` (normal) and, for "test", `yes/` (anomalous) of a BrainMRI or Br35H root (`siad.data.spec.Reader`)."""
    no_dir = require_dir(root / "no", f"normal images of {options.dataset}")
    yes_dir = require_dir(root / "yes", f"anomalous images of {options.dataset}")
    normals = [Sample(p, None, BRAIN, NORMAL_DEFECT, 0) for p in list_images(no_dir)]
    if split == "train":
        return normals
    return normals + [Sample(p, None, BRAIN, "yes", 1) for p in list_images(yes_dir)]
