"""Readers for the nine benchmark datasets, any MVTec-format folder and `meta.json`.

Every reader turns a dataset folder, in the layout it is distributed in (DESIGN section 4), into
a list of `Sample`s: `load_dataset(name, root, split)`.

Conventions (the same for every dataset):

- `label` is 0 for a normal image and 1 for an anomalous one; it is the authority on normality.
- `defect_type` is "good" for every normal image (BTAD's "ok" and the medical sets' "no" included)
  and the dataset's own defect name for an anomalous one ("broken_large", "ko", "anomaly" for VisA,
  "defect" for SDD tiles, "yes" for BrainMRI/Br35H, "hemorrhage" for HeadCT).
- `mask_path` is None for every normal image. An anomalous image of a dataset that has masks always
  has one: a missing mask is an error naming it, never an empty mask. The medical sets have no masks
  (image-level metrics only), so their anomalous images have `mask_path` None.
- Masks are paired with images by file stem (`000.png` <-> `000_mask.png` or `000.bmp`), never by
  sort order. A mask whose size differs from its image's (EXIF orientation applied to both) is
  reported by `load_dataset` with a `MaskSizeWarning` naming both files (`mask_size_mismatch`): it would
  otherwise be stretched to the image without a word.
- Samples come sorted by class, then defect type, then file name.

Splits: "train" holds normal images only; "test" holds normal and anomalous images.

- MVTec AD, MPDD, DTD-Synthetic, BTAD, any MVTec-format folder: `cls/train/good` (BTAD: `ok`) and
  `cls/test/<defect>` with masks in `cls/ground_truth/<defect>`.
- VisA: the rows of `split_csv/1cls.csv` (train: normal only; test: both).
- SDD (KolektorSDD) and the medical sets have no train split of their own: "test" holds every image
  (SDD: every tile), "train" the normal ones only (the paper trains on Br35H and BrainMRI normals).
  Train and test therefore overlap for these sets; they are used across datasets (train on Br35H,
  test on BrainMRI and HeadCT), where that does not matter.
- Raw KolektorSDD (`kosNN/PartN.jpg` + `PartN_label.bmp`) is cut across its height into 3 tiles
  stacked vertically (the images are portrait, about 500 x 1250; each tile is about 500 x 417),
  written as an MVTec-format folder `<cache_dir>/SDD` that the caller names (`cache_dir=`), and
  reused while the sources are unchanged. A tile is anomalous if its part of the label has a set
  pixel. An already tiled MVTec-format SDD folder is read as it is.

A wrong root or layout raises `FileNotFoundError` naming the folder or file that was expected.
"""

from __future__ import annotations

import csv
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps

from siad.jsonfile import short_repr

PathLike = Union[str, "os.PathLike[str]"]

DATASET_NAMES: tuple[str, ...] = (
    "mvtec", "visa", "mpdd", "btad", "dtd", "sdd", "brainmri", "headct", "br35h", "mvtec_format", "meta",
)
SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
NORMAL_DEFECT = "good"
SDD_CLASS = "SDD"
SDD_TILES = 3
_SDD_MANIFEST = "sdd_tiles.json"

# A class name of each MVTec-like dataset, for error messages ("expected e.g. ROOT/bottle/test").
_EXAMPLE_CLASS = {"mvtec": "bottle", "mpdd": "bracket_black", "dtd": "Woven_001", "btad": "01",
                  "mvtec_format": "<class>", "sdd": SDD_CLASS}


class MaskSizeWarning(UserWarning):
    """A ground-truth mask whose size differs from its image's (it is resized to the image's)."""


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    image_path: the image file. mask_path: its ground-truth mask, or None (normal images, and
    anomalous images of the medical sets, which have no masks). class_name: as the dataset spells
    it. defect_type: "good" for normal images, else the dataset's defect name. label: 0 normal,
    1 anomalous.
    """

    image_path: Path
    mask_path: Path | None
    class_name: str
    defect_type: str
    label: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_path", Path(self.image_path))
        if self.mask_path is not None:
            object.__setattr__(self, "mask_path", Path(self.mask_path))
        if self.label not in (0, 1) or isinstance(self.label, bool):
            raise ValueError(f"Sample label must be 0 or 1, got {self.label!r} for {self.image_path}")
        object.__setattr__(self, "label", int(self.label))


# ----------------------------------------------------------------------------- masks
def load_mask(path: PathLike, size: int | tuple[int, int] | None = None, mode: str = "squash") -> np.ndarray:
    """Read a mask file as a bool array: a pixel is set where the mask is > 0.

    Any mask format is binarised the same way: VisA's masks (small non-zero values), 0/255 PNGs,
    KolektorSDD's BMP labels, palette or RGB masks (a pixel is set where any colour channel is > 0).
    An EXIF orientation is applied, as `siad.image.load_rgb` applies it to images.
    `size` (an int for a square, or (height, width)) resizes with nearest neighbours, with the same
    geometry as `siad.image.resize_for_encoder` (mode "squash" or "center_crop"; center_crop needs
    an int size).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        with Image.open(path) as opened:
            upright = ImageOps.exif_transpose(opened)
            array = np.asarray(upright.convert("RGB") if upright.mode == "P" else upright)
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path} is not a mask image that can be read: {error}") from error
    if array.ndim == 3:
        channels = array.shape[2]
        array = array[:, :, :3] if channels >= 3 else array[:, :, :1]  # drop alpha
        array = array.max(axis=2)
    mask = array > 0
    if size is None:
        return mask
    return resize_mask(mask, size, mode)


def mask_size_mismatch(mask_path: PathLike, image_path: PathLike) -> str | None:
    """None when the mask has its image's size (both upright, read from the file headers), else a
    sentence naming both files and sizes. Evaluation resizes a mask to the map's size; a mask of
    another size than its image is then stretched (or shrunk) to it."""
    from siad.image import upright_size  # siad.image imports torch: only when masks are checked

    mask_size, image_size = upright_size(mask_path), upright_size(image_path)
    if mask_size == image_size:
        return None
    (mh, mw), (ih, iw) = mask_size, image_size
    stretched = " (another aspect ratio: it is stretched)" if abs(mw / mh - iw / ih) > 0.01 * iw / ih else ""
    return f"the mask {mask_path} is {mw}x{mh} but its image {image_path} is {iw}x{ih}{stretched}"


def check_mask_sizes(samples: Iterable[Sample]) -> list[str]:
    """Compare every sample's mask with its image (`mask_size_mismatch`); one `MaskSizeWarning` lists
    the masks that differ (the first 10 by name). Returns all the mismatches found."""
    found = []
    for sample in samples:
        if sample.mask_path is not None:
            try:
                problem = mask_size_mismatch(sample.mask_path, sample.image_path)
            except (OSError, SyntaxError, ValueError):
                continue  # an unreadable file is reported where it is read
            if problem is not None:
                found.append(problem)
    if found:
        more = f"; and {len(found) - 10} more" if len(found) > 10 else ""
        warnings.warn(f"{len(found)} mask(s) differ in size from their image and are resized to it: "
                      f"{'; '.join(found[:10])}{more}", MaskSizeWarning, stacklevel=3)
    return found


def resize_mask(mask: np.ndarray, size: int | tuple[int, int], mode: str = "squash") -> np.ndarray:
    """Nearest-neighbour resize of a bool mask with the geometry of `resize_for_encoder`."""
    image = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
    if mode == "squash":
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        return np.asarray(image.resize((width, height), Image.Resampling.NEAREST)) > 0
    if mode != "center_crop":
        raise ValueError(f"resize mode must be 'squash' or 'center_crop', got {mode!r}")
    if not isinstance(size, int):
        raise ValueError(f"center_crop needs a square size (an int), got {size!r}")
    from siad.image import center_crop_geometry  # the encoder's own geometry (siad.image imports torch)

    new_w, new_h, left, top = center_crop_geometry(image.width, image.height, size)
    image = image.resize((new_w, new_h), Image.Resampling.NEAREST)
    return np.asarray(image.crop((left, top, left + size, top + size))) > 0


# ----------------------------------------------------------------------------- helpers
def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _list_images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if _is_image(p)), key=lambda p: p.name)


def _require_dir(folder: Path, what: str) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"expected the folder {folder} ({what}), but it does not exist")
    return folder


def _require_root(root: PathLike) -> Path:
    path = Path(root)
    if not path.exists():
        raise FileNotFoundError(f"dataset root {path} does not exist")
    if not path.is_dir():
        raise FileNotFoundError(f"dataset root {path} is not a folder")
    return path


def _masks_by_stem(folder: Path) -> dict[str, Path]:
    """The mask files of a folder keyed by the stem of the image they belong to.

    `000_mask.png` and `000.bmp` both belong to `000`; the `_mask` form wins if both exist.
    """
    found: dict[str, Path] = {}
    for path in _list_images(folder):
        stem = path.stem
        if stem.endswith("_mask"):
            found[stem[: -len("_mask")]] = path
        else:
            found.setdefault(stem, path)
    return found


# ----------------------------------------------------------------------------- MVTec-like
def _mvtec_class(class_dir: Path, class_name: str, split: str, normal_folder: str = NORMAL_DEFECT) -> list[Sample]:
    """One class folder in MVTec layout: `train/<normal>`, `test/<defect>`, `ground_truth/<defect>`."""
    if split == "train":
        folder = _require_dir(class_dir / "train" / normal_folder, f"normal training images of '{class_name}'")
        return [Sample(p, None, class_name, NORMAL_DEFECT, 0) for p in _list_images(folder)]
    test_dir = _require_dir(class_dir / "test", f"test images of '{class_name}'")
    samples: list[Sample] = []
    for defect_dir in sorted((d for d in test_dir.iterdir() if d.is_dir()), key=lambda d: d.name):
        images = _list_images(defect_dir)
        if defect_dir.name == normal_folder:
            samples.extend(Sample(p, None, class_name, NORMAL_DEFECT, 0) for p in images)
            continue
        if not images:
            continue
        mask_dir = class_dir / "ground_truth" / defect_dir.name
        _require_dir(mask_dir, f"masks of the '{defect_dir.name}' test images of '{class_name}'")
        masks = _masks_by_stem(mask_dir)
        for image in images:
            mask = masks.get(image.stem)
            if mask is None:
                raise FileNotFoundError(
                    f"no mask for the anomalous test image {image}: expected "
                    f"{mask_dir / (image.stem + '_mask.png')} (or {image.stem}.<ext>) in {mask_dir}")
            samples.append(Sample(image, mask, class_name, defect_dir.name, 1))
    return samples


def _mvtec_class_dirs(root: Path, name: str, allow_root_as_class: bool) -> list[tuple[Path, str]]:
    """The class folders (those holding `train/` or `test/`) of an MVTec-layout root; with
    `allow_root_as_class`, the root itself if it is one (it holds `train/good`, `test/good` or
    `ground_truth`)."""
    looks_like_class = any((root / sub).is_dir() for sub in ("train/good", "test/good", "ground_truth"))
    if allow_root_as_class and looks_like_class:
        return [(root, SDD_CLASS if name == "sdd" else root.name)]
    found = [(d, d.name) for d in sorted(root.iterdir(), key=lambda d: d.name)
             if d.is_dir() and not d.name.startswith(".") and ((d / "test").is_dir() or (d / "train").is_dir())]
    if not found:
        example = root / _EXAMPLE_CLASS.get(name, "<class>")
        raise FileNotFoundError(
            f"no class folder in MVTec layout under {root} for dataset '{name}': expected e.g. "
            f"{example / 'train' / ('ok' if name == 'btad' else NORMAL_DEFECT)} and {example / 'test'}")
    return found


def _read_mvtec_like(root: Path, split: str, name: str, wanted: Sequence[str] | None = None) -> list[Sample]:
    normal = "ok" if name == "btad" else NORMAL_DEFECT
    classes = _mvtec_class_dirs(root, name, allow_root_as_class=name == "mvtec_format")
    if wanted is not None:  # read only the classes asked for (the others may be incomplete)
        classes = [(d, c) for d, c in classes if c in wanted]
    return [s for class_dir, class_name in classes for s in _mvtec_class(class_dir, class_name, split, normal)]


# ----------------------------------------------------------------------------- VisA
def within(base: str, path: str) -> bool:
    """Whether `path` lies inside the directory `base` (absolute; `..` resolved lexically, as the path
    is written, links not followed)."""
    return os.path.commonpath([os.path.abspath(path), base]) == base


def path_inside_root(root: Path, relative: Any, what: str) -> Path:
    """root / relative for a path an index file gives (meta.json, VisA's split CSV): a string relative to
    the root that stays inside it (no absolute path, no `..` out of the root), else a ValueError naming
    `what` (the file, the entry and the field)."""
    base = os.path.abspath(root)
    if not isinstance(relative, str) or not within(base, os.path.join(base, relative)):
        raise ValueError(f"{what} {short_repr(relative)} is not a path inside the dataset root {base}; the "
                         f"paths of an index file are relative to the root")
    return root / relative


def _read_visa(root: Path, split: str) -> list[Sample]:
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
            mask = _masks_by_stem(mask_dir).get(image.stem) if mask_dir.is_dir() else None
            mask = mask if mask is not None else mask_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise FileNotFoundError(f"{csv_path} line {line}: no mask for the anomalous image {image}: "
                                    f"expected {mask}")
        samples.append(Sample(image, mask, row["object"], "anomaly", 1))
    samples.sort(key=lambda s: (s.class_name, s.defect_type, s.image_path.name))
    return samples


# ----------------------------------------------------------------------------- medical sets
def _read_yes_no(root: Path, split: str, name: str) -> list[Sample]:
    """BrainMRI and Br35H: `yes/` (tumour) and `no/` (normal); Br35H's unlabelled `pred/` is ignored."""
    no_dir = _require_dir(root / "no", f"normal images of {name}")
    yes_dir = _require_dir(root / "yes", f"anomalous images of {name}")
    normals = [Sample(p, None, "brain", NORMAL_DEFECT, 0) for p in _list_images(no_dir)]
    if split == "train":
        return normals
    return normals + [Sample(p, None, "brain", "yes", 1) for p in _list_images(yes_dir)]


def _read_headct(root: Path, split: str) -> list[Sample]:
    """HeadCT: `head_ct/*.png` (or the Kaggle zip's `head_ct/head_ct/*.png`) and `labels.csv`
    with columns `id` and ` hemorrhage` (leading space in the real file)."""
    csv_path = root / "labels.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"HeadCT labels not found: expected {csv_path}")
    image_dir = root / "head_ct"
    if (image_dir / "head_ct").is_dir():
        image_dir = image_dir / "head_ct"
    _require_dir(image_dir, "HeadCT images")
    by_id: dict[int, Path] = {}
    for path in _list_images(image_dir):
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
            samples.append(Sample(image, None, "brain", "hemorrhage" if label else NORMAL_DEFECT, label))
    samples.sort(key=lambda s: (s.class_name, s.defect_type, s.image_path.name))
    return samples


# ----------------------------------------------------------------------------- SDD
def _tile_bounds(length: int, count: int = SDD_TILES) -> list[tuple[int, int]]:
    """`count` consecutive [start, stop) ranges covering 0..length as evenly as possible."""
    edges = [round(k * length / count) for k in range(count + 1)]
    return [(edges[k], edges[k + 1]) for k in range(count)]


def _sdd_raw_pairs(root: Path) -> list[tuple[str, Path, Path]]:
    """(kos folder name, image, label) for every part of a raw KolektorSDD folder, label by stem."""
    pairs: list[tuple[str, Path, Path]] = []
    for kos in sorted((d for d in root.iterdir() if d.is_dir() and d.name.lower().startswith("kos")),
                      key=lambda d: d.name):
        files = _list_images(kos)
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
    from tqdm import tqdm

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


def _read_sdd(root: Path, split: str, cache_dir: PathLike | None) -> list[Sample]:
    if _is_raw_sdd(root):
        if cache_dir is None:
            raise ValueError(f"{root} holds raw KolektorSDD (kosNN folders), which is cut into tiles: pass "
                             f"cache_dir=<a folder for the tiles> (never the working directory by default)")
        tiled = tile_sdd(root, cache_dir)
        classes = [(tiled, SDD_CLASS)]
    else:
        classes = _mvtec_class_dirs(root, "sdd", allow_root_as_class=True)
    samples: list[Sample] = []
    for class_dir, class_name in classes:
        if split == "train" and (class_dir / "train" / NORMAL_DEFECT).is_dir():
            samples.extend(_mvtec_class(class_dir, class_name, "train"))
        elif split == "train":  # no train split of its own: the normal test tiles
            samples.extend(s for s in _mvtec_class(class_dir, class_name, "test") if s.label == 0)
        else:
            samples.extend(_mvtec_class(class_dir, class_name, "test"))
    return samples


# ----------------------------------------------------------------------------- entry point
def group_by_class(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    """The samples of each class, classes in order of first appearance, samples in their order."""
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.class_name, []).append(sample)
    return groups


def load_dataset(name: str, root: PathLike, split: str, *, cache_dir: PathLike | None = None,
                 classes: Iterable[str] | None = None) -> list[Sample]:
    """The samples of one split ("train" or "test") of a dataset folder.

    name: one of `DATASET_NAMES` ("mvtec", "visa", "mpdd", "btad", "dtd", "sdd", "brainmri",
    "headct", "br35h", "mvtec_format" for any MVTec-layout folder, "meta" for a folder holding
    meta.json). root: the dataset folder as distributed. cache_dir: where raw KolektorSDD tiles are
    written (needed for raw "sdd" only). classes: keep only these classes (each must exist). Masks
    whose size differs from their image's are reported with one `MaskSizeWarning` (`check_mask_sizes`).
    """
    key = name.lower()
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = _require_root(root)
    wanted = None if classes is None else list(dict.fromkeys(classes))
    if key in ("mvtec", "mpdd", "dtd", "btad", "mvtec_format"):
        samples = _read_mvtec_like(path, split, key, wanted)
    elif key == "visa":
        samples = _read_visa(path, split)
    elif key == "sdd":
        samples = _read_sdd(path, split, cache_dir)
    elif key in ("brainmri", "br35h"):
        samples = _read_yes_no(path, split, key)
    elif key == "headct":
        samples = _read_headct(path, split)
    else:
        from siad.data.meta import read_meta

        samples = read_meta(path, split)
    if wanted is not None:
        present = sorted({s.class_name for s in samples})
        unknown = [c for c in wanted if c not in present]
        if unknown:
            raise ValueError(f"class(es) {unknown} not in the {split} split of {name} at {path}; "
                             f"available: {present}")
        samples = [s for s in samples if s.class_name in set(wanted)]
    check_mask_sizes(samples)
    return samples
