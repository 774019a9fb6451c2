"""The datasets SIAD reads, one module each (its reader, classes, the paper's class descriptions and
its place in the cross-dataset protocol, as a `siad.data.spec.DatasetSpec` named `SPEC`), and
`BUILTIN`, the registry's entries (`siad.data.registry`).

Adding a dataset: write its module here (a `Reader` and a `SPEC`) and add its `SPEC` to `BUILTIN`; or,
outside SIAD, call `siad.data.registry.register(SPEC)`. Layouts that several datasets share:
`mvtec_layout` (MVTec AD, MPDD, DTD-Synthetic, BTAD, any MVTec-format folder, pre-tiled SDD) and
`yes_no` (BrainMRI, Br35H).
"""

from __future__ import annotations

from siad.data.datasets import br35h, brainmri, btad, dtd, headct, meta_json, mpdd, mvtec, mvtec_format, sdd, visa
from siad.data.spec import DatasetSpec

# The registry's entries, in the order names are listed (DATASET_NAMES, --help).
BUILTIN: tuple[DatasetSpec, ...] = (
    mvtec.SPEC,
    visa.SPEC,
    mpdd.SPEC,
    btad.SPEC,
    dtd.SPEC,
    sdd.SPEC,
    brainmri.SPEC,
    headct.SPEC,
    br35h.SPEC,
    mvtec_format.SPEC,
    meta_json.SPEC,
)
