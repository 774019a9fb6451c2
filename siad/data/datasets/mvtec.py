"""MVTec AD (Bergmann et al., CVPR 2019; CC BY-NC-SA 4.0): 15 classes in MVTec layout
(`siad.data.datasets.mvtec_layout`). In the paper's cross-dataset protocol it trains the checkpoint
that tests VisA, MPDD, DTD-Synthetic, SDD and BTAD, and is tested with the VisA checkpoint."""

from __future__ import annotations

from siad.data.datasets.mvtec_layout import MvtecLayout
from siad.data.descriptions import WITHOUT_DAMAGE, plain
from siad.data.spec import DatasetSpec

# Table 8 of the paper, class names as the dataset spells them.
DESCRIPTIONS: dict[str, str] = {
    "bottle": "This is a photo of a bottle for anomaly detection, which should be round, " + WITHOUT_DAMAGE,
    "cable": "This is a photo of three cables for anomaly detection, cables cannot be missed or "
             "swapped, which should be " + WITHOUT_DAMAGE,
    "capsule": "This is a photo of a capsule for anomaly detection, which should be black and orange, "
               "with print '500', " + WITHOUT_DAMAGE,
    "carpet": plain("carpet"),
    "grid": plain("grid"),
    "hazelnut": plain("a hazelnut"),
    "leather": "This is a photo of leather for anomaly detection, which should be brown and " + WITHOUT_DAMAGE,
    "metal_nut": "This is a photo of a metal nut for anomaly detection, which should be without any "
                 "damage, flaw, defect, scratch, hole or broken part, and shouldn't be fliped.",
    "pill": "This is a photo of a pill for anomaly detection, which should be white, with print 'FF' "
            "and red patterns, " + WITHOUT_DAMAGE,
    "screw": "This is a photo of a screw for anomaly detection, which tail should be sharp, and " + WITHOUT_DAMAGE,
    "tile": plain("tile"),
    "toothbrush": plain("a toothbrush"),
    "transistor": plain("a transistor"),
    "wood": "This is a photo of wood for anomaly detection, which should be brown with patterns, " + WITHOUT_DAMAGE,
    "zipper": plain("a zipper"),
}

LAYOUT = MvtecLayout()

SPEC = DatasetSpec(name="mvtec", title="MVTec AD", read=LAYOUT, classes=tuple(DESCRIPTIONS), example_class="bottle",
                   descriptions=DESCRIPTIONS, uzad_source="visa", class_folders=LAYOUT.class_folders)
