"""VisA, the Visual Anomaly dataset (Zou et al., ECCV 2022; CC BY 4.0): 12 classes indexed by
`split_csv/1cls.csv` (header `object,split,label,image,mask`; train: normal images only, test: both;
masks with small non-zero values). An empty mask cell pairs the image with its mask by stem in
`<class>/Data/Masks/Anomaly`. In the paper's cross-dataset protocol it trains the checkpoint that tests
MVTec AD, and is tested with the MVTec AD checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

from siad.data.descriptions import WITHOUT_DAMAGE, plain
from siad.data.sample import NORMAL_DEFECT, Sample, masks_by_stem, path_inside_root
from siad.data.spec import DatasetSpec, ReadOptions

# Table 9 of the paper.
DESCRIPTIONS: dict[str, str] = {
    "candle": "This is a photo of 4 candles for anomaly detection, every candle should be round, " + WITHOUT_DAMAGE,
    "capsules": "This is a photo of many small capsules for anomaly detection, every capsule is green, "
                "should be " + WITHOUT_DAMAGE,
    "cashew": plain("a cashew"),
    "chewinggum": "This is a photo of a chewinggom for anomaly detection, which should be white, " + WITHOUT_DAMAGE,
    "fryum": "This is a photo of a fryum for anomaly detection on green background, which should be "
             + WITHOUT_DAMAGE,
    "macaroni1": plain("4 macaronis"),
    "macaroni2": plain("4 macaronis"),
    "pcb1": plain("pcb"),
    "pcb2": plain("pcb"),
    "pcb3": plain("pcb"),
    "pcb4": plain("pcb"),
    "pipe_fryum": plain("a pipe fryum"),
}


def read_visa(root: Path, split: str, options: ReadOptions) -> list[Sample]:
    """The rows of `split_csv/1cls.csv` of one split (`siad.data.spec.Reader`)."""
    csv_path = root / "split_csv" / "1cls.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"VisA split file not found: expected {csv_path}")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = {"object", "split", "label", "image", "mask"} - set(columns)
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}; header is {columns}")
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    samples: list[Sample] = []
    for line, row in enumerate(rows, start=2):
        if row["split"] != split:
            continue
        image = path_inside_root(root, row["image"], f"{csv_path} line {line}: image")
        if not image.is_file():
            raise FileNotFoundError(f"{csv_path} line {line}: image file not found: {image}")
        if row["label"] == "normal":
            samples.append(Sample(image, None, row["object"], NORMAL_DEFECT, 0))
            continue
        if row["label"] != "anomaly":
            raise ValueError(f"{csv_path} line {line}: label must be 'normal' or 'anomaly', got {row['label']!r}")
        if row["mask"]:
            mask = path_inside_root(root, row["mask"], f"{csv_path} line {line}: mask")
        else:  # no mask column value: pair by stem in the class's mask folder
            mask_dir = root / row["object"] / "Data" / "Masks" / "Anomaly"
            mask = masks_by_stem(mask_dir).get(image.stem) if mask_dir.is_dir() else None
            mask = mask if mask is not None else mask_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise FileNotFoundError(f"{csv_path} line {line}: no mask for the anomalous image {image}: "
                                    f"expected {mask}")
        samples.append(Sample(image, mask, row["object"], "anomaly", 1))
    samples.sort(key=lambda s: (s.class_name, s.defect_type, s.image_path.name))
    return samples


SPEC = DatasetSpec(name="visa", title="VisA", read=read_visa, classes=tuple(DESCRIPTIONS), example_class="candle",
                   descriptions=DESCRIPTIONS, uzad_source="mvtec")
