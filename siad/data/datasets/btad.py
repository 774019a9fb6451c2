"""BTAD, the BeanTech Anomaly Detection dataset (Mishra et al., 2021; CC BY-SA 4.0): classes `01`..`03`
in MVTec layout (`siad.data.datasets.mvtec_layout`) with normal images in `ok` (`train/ok`,
`test/{ok,ko}`, `ground_truth/ko`; .bmp and .png, masks without `_mask`); tested with the MVTec AD
checkpoint in the cross-dataset protocol."""

from __future__ import annotations

from siad.data.datasets.mvtec_layout import MvtecLayout
from siad.data.descriptions import WITHOUT_DAMAGE
from siad.data.spec import DatasetSpec

CLASSES: tuple[str, ...] = ("01", "02", "03")

# Table 12 of the paper.
DESCRIPTIONS: dict[str, str] = {
    name: f"This is a photo of a {name} for anomaly detection, which should be round, " + WITHOUT_DAMAGE
    for name in CLASSES
}

LAYOUT = MvtecLayout(normal_folder="ok")

SPEC = DatasetSpec(name="btad", title="BTAD", read=LAYOUT, classes=CLASSES, example_class="01",
                   descriptions=DESCRIPTIONS, uzad_source="mvtec", class_folders=LAYOUT.class_folders)
