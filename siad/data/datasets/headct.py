"""HeadCT (Kaggle, "Head CT - hemorrhage"): `head_ct/*.png` (or the Kaggle zip's `head_ct/head_ct/*.png`)
and `labels.csv` with columns `id` and ` hemorrhage` (leading space in the real file); one class "brain",
no masks. "test" holds every image, "train" the normal ones. Tested with the Br35H checkpoint in the
paper's cross-dataset protocol."""

from __future__ import annotations

import csv
from pathlib import Path

from siad.data.datasets.yes_no import BRAIN
from siad.data.descriptions import medical
from siad.data.sample import NORMAL_DEFECT, Sample, list_images, require_dir
from siad.data.spec import DatasetSpec, ReadOptions

# Table 16 of the paper.
DESCRIPTIONS: dict[str, str] = {BRAIN: medical("a brain")}


def read_headct(root: Path, split: str, options: ReadOptions) -> list[Sample]:
    """The images of `labels.csv` (`siad.data.spec.Reader`): anomalous where `hemorrhage` is 1."""
    csv_path = root / "labels.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"HeadCT labels not found: expected {csv_path}")
    image_dir = root / "head_ct"
    if (image_dir / "head_ct").is_dir():
        image_dir = image_dir / "head_ct"
    require_dir(image_dir, "HeadCT images")
    by_id: dict[int, Path] = {}
    for path in list_images(image_dir):
        if path.stem.isdigit():
            by_id[int(path.stem)] = path
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "id" not in columns or "hemorrhage" not in columns:
            raise ValueError(f"{csv_path}: expected columns 'id' and 'hemorrhage', header is {columns}")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    samples: list[Sample] = []
    for line, row in enumerate(rows, start=2):
        try:
            index, label = int(row["id"]), int(row["hemorrhage"])
        except ValueError as error:
            raise ValueError(f"{csv_path} line {line}: id and hemorrhage must be integers, got {row}") from error
        if label not in (0, 1):
            raise ValueError(f"{csv_path} line {line}: hemorrhage must be 0 or 1, got {label}")
        image = by_id.get(index)
        if image is None:
            raise FileNotFoundError(f"{csv_path} line {line}: image of id {index} not found: "
                                    f"expected {image_dir / f'{index:03d}.png'}")
        if split == "test" or label == 0:
            samples.append(Sample(image, None, BRAIN, "hemorrhage" if label else NORMAL_DEFECT, label))
    samples.sort(key=lambda s: (s.class_name, s.defect_type, s.image_path.name))
    return samples


SPEC = DatasetSpec(name="headct", title="HeadCT", read=read_headct, classes=(BRAIN,), descriptions=DESCRIPTIONS,
                   uzad_source="br35h")
