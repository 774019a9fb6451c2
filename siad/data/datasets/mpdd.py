"""MPDD, the Metal Parts Defect Detection dataset (Jezek et al., 2021): 6 classes in MVTec layout
(`siad.data.datasets.mvtec_layout`); tested with the MVTec AD checkpoint in the cross-dataset protocol."""

from __future__ import annotations

from siad.data.datasets.mvtec_layout import MvtecLayout
from siad.data.descriptions import WITHOUT_DAMAGE, plain
from siad.data.spec import DatasetSpec

# Table 10 of the paper.
DESCRIPTIONS: dict[str, str] = {
    "bracket_black": "This is a photo of a bracket_black for anomaly detection, which should be black and "
                     + WITHOUT_DAMAGE,
    "bracket_brown": "This is a photo of a bracket_brown for anomaly detection, which should be brown and "
                     + WITHOUT_DAMAGE,
    "bracket_white": "This is a photo of a bracket_white for anomaly detection, which should be white and "
                     + WITHOUT_DAMAGE,
    "connector": plain("a connector"),
    "metal_plate": "This is a photo of a metal_plate for anomaly detection, which should be without any "
                   "damage, rust, flaw, defect, scratch, hole or broken part.",
    "tubes": plain("a tubes"),
}

LAYOUT = MvtecLayout()

SPEC = DatasetSpec(name="mpdd", title="MPDD", read=LAYOUT, classes=tuple(DESCRIPTIONS), example_class="bracket_black",
                   descriptions=DESCRIPTIONS, uzad_source="mvtec", class_folders=LAYOUT.class_folders)
