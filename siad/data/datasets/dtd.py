"""DTD-Synthetic (Aota et al., WACV 2023): 12 texture classes of the Describable Textures Dataset with
synthetic defects, in MVTec layout (`siad.data.datasets.mvtec_layout`); tested with the MVTec AD
checkpoint in the cross-dataset protocol."""

from __future__ import annotations

from siad.data.datasets.mvtec_layout import MvtecLayout
from siad.data.descriptions import plain
from siad.data.spec import DatasetSpec

CLASSES: tuple[str, ...] = ("Woven_001", "Woven_127", "Stratified_154", "Blotchy_099", "Woven_068", "Woven_125",
                            "Marbled_078", "Perforated_037", "Mesh_114", "Fibrous_183", "Matted_069", "Woven_104")

# Table 11 of the paper.
DESCRIPTIONS: dict[str, str] = {name: plain(f"a {name}") for name in CLASSES}

LAYOUT = MvtecLayout()

SPEC = DatasetSpec(name="dtd", title="DTD-Synthetic", read=LAYOUT, classes=CLASSES, example_class="Woven_001",
                   descriptions=DESCRIPTIONS, uzad_source="mvtec", class_folders=LAYOUT.class_folders)
