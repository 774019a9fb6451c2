"""BrainMRI (Kaggle, "Brain MRI Images for Brain Tumor Detection"): `yes/` and `no/`
(`siad.data.datasets.yes_no`). In the paper's cross-dataset protocol it trains the checkpoint that tests
Br35H, and is tested with the Br35H checkpoint."""

from __future__ import annotations

from siad.data.datasets.yes_no import BRAIN, read_yes_no
from siad.data.descriptions import medical
from siad.data.spec import DatasetSpec

# Table 15 of the paper.
DESCRIPTIONS: dict[str, str] = {BRAIN: medical("a brain")}

SPEC = DatasetSpec(name="brainmri", title="BrainMRI", read=read_yes_no, classes=(BRAIN,), descriptions=DESCRIPTIONS,
                   uzad_source="br35h")
