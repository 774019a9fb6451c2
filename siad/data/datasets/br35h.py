"""Br35H (Kaggle, "Brain Tumor Detection 2020"): `yes/` and `no/` (`siad.data.datasets.yes_no`; the
unlabelled `pred/` is ignored). In the paper's cross-dataset protocol it trains the checkpoint that tests
BrainMRI and HeadCT, and is tested with the BrainMRI checkpoint."""

from __future__ import annotations

from siad.data.datasets.yes_no import BRAIN, read_yes_no
from siad.data.descriptions import medical
from siad.data.spec import DatasetSpec

# Table 14 of the paper.
DESCRIPTIONS: dict[str, str] = {BRAIN: medical("a brain")}

SPEC = DatasetSpec(name="br35h", title="Br35H", read=read_yes_no, classes=(BRAIN,), descriptions=DESCRIPTIONS,
                   uzad_source="brainmri")
