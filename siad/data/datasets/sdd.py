"""SDD, KolektorSDD (Tabernik et al., 2019; CC BY-NC-SA 4.0): electrical commutators, one class "SDD".

Raw KolektorSDD (`kosNN/PartN.jpg` + `PartN_label.bmp`) is cut across its height into 3 tiles stacked
vertically (the images are portrait, about 500 x 1250; each tile is about 500 x 417), written as an
MVTec-format folder `<cache_dir>/SDD` that the caller names (`cache_dir=`), and reused while the sources
are unchanged. A tile is anomalous if its part of the label has a set pixel. An already tiled
MVTec-format SDD folder is read as it is. There is no train split of its own: "test" holds every tile,
"train" the normal ones. Tested with the MVTec AD checkpoint in the paper's cross-dataset protocol.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from siad.data.datasets.mvtec_layout import MvtecLayout, read_class
from siad.data.descriptions import plain
from siad.data.masks import load_mask
from siad.data.sample import NORMAL_DEFECT, PathLike, Sample, list_images
from siad.data.spec import DatasetSpec, ReadOptions

SDD_CLASS = "SDD"
SDD_TILES = 3
_SDD_MANIFEST = "sdd_tiles.json"

# Table 13 of the paper.
DESCRIPTIONS: dict[str, str] = {SDD_CLASS: plain("a electrical_commutators")}

LAYOUT = MvtecLayout(root_as_class=True, root_class_name=SDD_CLASS)


def _tile_bounds(length: int, count: int = SDD_TILES) -> list[tuple[int, int]]:
    """`count` consecutive [start, stop) ranges covering 0..length as evenly as possible."""
    edges = [round(k * length / count) for k in range(count + 1)]
    return [(edges[k], edges[k + 1]) for k in range(count)]


def _sdd_raw_pairs(root: Path) -> list[tuple[str, Path, Path]]:
    """(kos folder name, image, label) for every part of a raw KolektorSDD folder, label by stem."""
    pairs: list[tuple[str, Path, Path]] = []
    for kos in sorted((d for d in root.iterdir() if d.is_dir() and d.name.lower().startswith("kos")),
                      key=lambda d: d.name):
        files = list_images(kos)
        labels = {p.stem[: -len("_label")]: p for p in files if p.stem.endswith("_label")}
        for image in files:
            if image.stem.endswith("_label"):
                continue
            label = labels.get(image.stem)
            if label is None:
                raise FileNotFoundError(f"no label for the KolektorSDD image {image}: expected "
                                        f"{kos / (image.stem + '_label.bmp')}")
            pairs.append((kos.name, image, label))
    return pairs


def _sdd_fingerprint(root: Path, pairs: Sequence[tuple[str, Path, Path]]) -> dict[str, object]:
    sources: dict[str, list[int]] = {}
    for _, image, label in pairs:
        for path in (image, label):
            stat = path.stat()
            sources[path.relative_to(root).as_posix()] = [stat.st_size, stat.st_mtime_ns]
    return {"version": 1, "tiles": SDD_TILES, "source_root": os.path.abspath(root), "sources": sources}


def tile_sdd(root: PathLike, cache_dir: PathLike, progress: bool | None = None) -> Path:
    """Cut raw KolektorSDD into 3 tiles per image, as an MVTec-format folder `<cache_dir>/SDD`.

    Tiles are stacked vertically (the image is cut across its height); `kos01/Part3.jpg` gives
    `SDD/test/{good|defect}/kos01_Part3_{0,1,2}.png` and, for a defect tile,
    `SDD/ground_truth/defect/kos01_Part3_{k}_mask.png` (0/255). The tiles are reused while the
    sources are unchanged (a manifest in `cache_dir` records them). Returns the `SDD` folder.
    `progress`: a tqdm bar (None: only on a terminal).
    """
    from tqdm import tqdm  # deferred: only raw KolektorSDD is tiled, and the registry imports this module

    root, cache = Path(root), Path(cache_dir)
    pairs = _sdd_raw_pairs(root)
    if not pairs:
        raise FileNotFoundError(f"no KolektorSDD images under {root}: expected {root / 'kos01' / 'Part0.jpg'} "
                                f"and {root / 'kos01' / 'Part0_label.bmp'}")
    out = cache / SDD_CLASS
    manifest_path = cache / _SDD_MANIFEST
    fingerprint = _sdd_fingerprint(root, pairs)
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        written = [cache / p for p in old.get("written", [])]
        if {k: old.get(k) for k in fingerprint} == fingerprint and all(p.is_file() for p in written):
            return out
        for path in written:  # remove only the files this function wrote before
            if path.is_file():
                path.unlink()
    written_rel: list[str] = []
    disable = None if progress is None else not progress  # None: tqdm shows a bar only on a terminal
    for kos, image_path, label_path in tqdm(pairs, desc="tiling KolektorSDD", disable=disable):
        with Image.open(image_path) as opened:
            image = np.asarray(opened.convert("L") if opened.mode not in ("L", "RGB") else opened)
        label = load_mask(label_path)
        if label.shape != image.shape[:2]:
            raise ValueError(f"{label_path} is {label.shape[1]}x{label.shape[0]} but its image {image_path} is "
                             f"{image.shape[1]}x{image.shape[0]}")
        for k, (top, bottom) in enumerate(_tile_bounds(image.shape[0])):
            stem = f"{kos}_{image_path.stem}_{k}"
            tile_mask = label[top:bottom]
            defect = "defect" if tile_mask.any() else NORMAL_DEFECT
            targets = [(out / "test" / defect / f"{stem}.png", image[top:bottom])]
            if tile_mask.any():
                targets.append((out / "ground_truth" / defect / f"{stem}_mask.png",
                                tile_mask.astype(np.uint8) * 255))
            for target, pixels in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.ascontiguousarray(pixels)).save(target)
                written_rel.append(target.relative_to(cache).as_posix())
    manifest = dict(fingerprint, written=written_rel)
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest), encoding="utf-8")
    os.replace(tmp, manifest_path)
    return out


def _is_raw_sdd(root: Path) -> bool:
    return any(d.is_dir() and d.name.lower().startswith("kos") for d in root.iterdir())


def read_sdd(root: Path, split: str, options: ReadOptions) -> list[Sample]:
    """Raw KolektorSDD (tiled into `options.cache_dir`) or a tiled MVTec-format folder (`siad.data.spec.Reader`)."""
    if _is_raw_sdd(root):
        if options.cache_dir is None:
            raise ValueError(f"{root} holds raw KolektorSDD (kosNN folders), which is cut into tiles: pass "
                             f"cache_dir=<a folder for the tiles> (never the working directory by default)")
        tiled = tile_sdd(root, options.cache_dir)
        classes = [(tiled, SDD_CLASS)]
    else:
        classes = LAYOUT.class_dirs(root, options)
    samples: list[Sample] = []
    for class_dir, class_name in classes:
        if split == "train" and (class_dir / "train" / NORMAL_DEFECT).is_dir():
            samples.extend(read_class(class_dir, class_name, "train"))
        elif split == "train":  # no train split of its own: the normal test tiles
            samples.extend(s for s in read_class(class_dir, class_name, "test") if s.label == 0)
        else:
            samples.extend(read_class(class_dir, class_name, "test"))
    return samples


SPEC = DatasetSpec(name="sdd", title="KolektorSDD", read=read_sdd, classes=(SDD_CLASS,), example_class=SDD_CLASS,
                   descriptions=DESCRIPTIONS, uzad_source="mvtec", cache_folder="sdd_tiles")
