"""Any folder in MVTec layout (`siad.data.datasets.mvtec_layout`), e.g. SIAD-Synth: class folders, or
the root itself as one class folder (named after the root). Not a benchmark: results are filed under a
name the user gives."""

from __future__ import annotations

from siad.data.datasets.mvtec_layout import MvtecLayout
from siad.data.spec import DatasetSpec

LAYOUT = MvtecLayout(root_as_class=True)

SPEC = DatasetSpec(name="mvtec_format", title="MVTec-format folder", read=LAYOUT, example_class="<class>",
                   class_folders=LAYOUT.class_folders, generic=True)
