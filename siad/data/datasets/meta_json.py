"""Any folder holding `meta.json`, the index of the zero-shot repositories (`siad.data.meta`). Not a
benchmark: results are filed under a name the user gives."""

from __future__ import annotations

from pathlib import Path

from siad.data.meta import read_meta
from siad.data.sample import Sample
from siad.data.spec import DatasetSpec, ReadOptions


def read_meta_folder(root: Path, split: str, options: ReadOptions) -> list[Sample]:
    """The samples of one split of `root/meta.json` (`siad.data.spec.Reader`)."""
    return read_meta(root, split)


SPEC = DatasetSpec(name="meta", title="meta.json folder", read=read_meta_folder, example_class="<class>",
                   generic=True, index_file=True)
