"""Writing SIAD-Synth: the zero-shot split, the plan of every image, meta.json, synth.json, README."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

from siad.data.synth.common import ObjectScene, SynthError, _check_size, rng_for
from siad.data.synth.defects import DEFECT_KINDS, apply_defect
from siad.data.synth.medical import MEDICAL_CLASS, make_scan
from siad.data.synth.parts import OBJECT_KINDS, make_object
from siad.data.synth.textures import PHOTO_TEXTURES, TEXTURE_KINDS, make_texture
from siad.prompts import describe

FORMAT_VERSION = 1

# The zero-shot split: no class (and no kind of part or texture) of TEST_CLASSES is in TRAIN_CLASSES.
TRAIN_CLASSES: tuple[str, ...] = (
    "brick", "grass", "woven", "marbled", "grid", "leather",
    "hex_nut", "washer", "screw", "pill_round", "button",
)
TEST_CLASSES: tuple[str, ...] = (
    "gravel", "fibrous", "wood", "perforated",
    "connector", "capsule", "gear", "bracket",
)

# Counts of the default set ("some hundreds of images") and of a reduced set for tests: `generate(out,
# seed, **SMALL)`.
DEFAULTS: Mapping[str, int] = MappingProxyType(
    {"n_train": 20, "n_test_good": 12, "n_test_defect": 16, "n_medical": 60, "size": 256}
)
SMALL: Mapping[str, int] = MappingProxyType(
    {"n_train": 2, "n_test_good": 1, "n_test_defect": 8, "n_medical": 4, "size": 128}
)

_OWN_OUTPUTS: tuple[str, ...] = ("train", "test", "medical", "medical_train", "synth.json", "README.md")


def class_type(name: str) -> str:
    """'texture' or 'object'."""
    if name in TEXTURE_KINDS:
        return "texture"
    if name in OBJECT_KINDS:
        return "object"
    raise ValueError(f"unknown class {name!r}")


def make_normal(name: str, rng: np.random.Generator, size: int = 256) -> ObjectScene:
    """A normal image of any class of `TEXTURE_KINDS` or `OBJECT_KINDS`, as an `ObjectScene` (for a
    texture, the foreground is the whole image and the background is the image itself)."""
    if class_type(name) == "object":
        return make_object(name, rng, size)
    image = make_texture(name, rng, size)
    return ObjectScene(image=image, foreground=np.ones(image.shape[:2], bool), background=image)


def make_anomalous(name: str, defect: str, rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """An image of class `name` with one defect of kind `defect`: (image uint8, exact mask bool)."""
    scene = make_normal(name, rng, size)
    is_object = class_type(name) == "object"
    return apply_defect(defect, scene.image, rng, region=scene.foreground,
                        background=scene.background if is_object else None)


@dataclass(frozen=True)
class _Job:
    """One image to write: its path (relative to the output), its mask's path, how to make it."""

    image: str
    mask: Optional[str]
    make: Callable[[np.random.Generator], tuple[np.ndarray, Optional[np.ndarray]]]


def _normal_job(name: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, None]:
    return make_normal(name, rng, size).image, None


def _defect_job(name: str, defect: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return make_anomalous(name, defect, rng, size)


def _scan_job(size: int, lesion: bool, rng: np.random.Generator) -> tuple[np.ndarray, None]:
    return make_scan(rng, size, lesion=lesion)[0], None


def _class_jobs(split: str, name: str, index: int, size: int, n_train: int, n_good: int,
                n_defect: int) -> list[_Job]:
    jobs = [_Job(f"{split}/{name}/train/good/{i:03d}.png", None, partial(_normal_job, name, size))
            for i in range(n_train)]
    jobs += [_Job(f"{split}/{name}/test/good/{i:03d}.png", None, partial(_normal_job, name, size))
             for i in range(n_good)]
    counters: dict[str, int] = {}
    for i in range(n_defect):
        defect = DEFECT_KINDS[(i + index) % len(DEFECT_KINDS)]
        k = counters.get(defect, 0)
        counters[defect] = k + 1
        jobs.append(_Job(f"{split}/{name}/test/{defect}/{k:03d}.png",
                         f"{split}/{name}/ground_truth/{defect}/{k:03d}_mask.png",
                         partial(_defect_job, name, defect, size)))
    return jobs


def plan(*, n_train: int, n_test_good: int, n_test_defect: int, n_medical: int, size: int) -> list[_Job]:
    """Every image of a set, in a fixed order.

    Training classes: n_train normals, ceil(n_test_good / 4) test normals and ceil(n_test_defect / 4)
    defects. Test classes: ceil(n_train / 2) normals in train/good, n_test_good test normals and
    n_test_defect defects, the kinds taken in turn from DEFECT_KINDS (all of them once n_test_defect >= 8).
    Medical: n_medical scans (half with a lesion) and a training set of ceil(n_medical / 2) normal and
    ceil(n_medical / 4) lesion scans.
    """
    for label, value in (("n_train", n_train), ("n_test_good", n_test_good), ("n_test_defect", n_test_defect),
                         ("n_medical", n_medical)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{label} must be a non-negative integer, got {value!r}")
    size = _check_size(size)
    jobs: list[_Job] = []
    for index, name in enumerate(TRAIN_CLASSES):
        jobs += _class_jobs("train", name, index, size, n_train, -(-n_test_good // 4), -(-n_test_defect // 4))
    for index, name in enumerate(TEST_CLASSES):
        jobs += _class_jobs("test", name, index, size, -(-n_train // 2), n_test_good, n_test_defect)
    medical = (("medical", n_medical // 2, n_medical - n_medical // 2),
               ("medical_train", -(-n_medical // 4), -(-n_medical // 2)))
    for folder, n_yes, n_no in medical:
        jobs += [_Job(f"{folder}/yes/{i:03d}.png", None, partial(_scan_job, size, True)) for i in range(n_yes)]
        jobs += [_Job(f"{folder}/no/{i:03d}.png", None, partial(_scan_job, size, False)) for i in range(n_no)]
    return jobs


def _save_png(path: Path, array: np.ndarray) -> None:
    """Write a PNG with fixed options (no timestamps), so that the bytes depend only on the pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def prepare_output(out: Path, *, overwrite: bool = False) -> Path:
    """Check that `out` can take a set: create it, test that it is writable, and refuse a non-empty folder
    unless `overwrite` (then only a former SIAD-Synth output, recognised by its synth.json, is replaced:
    its own subfolders and files are removed first). Raises SynthError with a clear message."""
    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise SynthError(f"cannot write to output folder '{out}': {error.strerror or error}") from error
    if any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"output folder '{out}' is not empty; choose an empty folder or pass overwrite "
                             "(--overwrite) to replace a former SIAD-Synth set")
        if not (out / "synth.json").is_file():
            raise SynthError(f"output folder '{out}' is not empty and holds no synth.json: refusing to "
                             "overwrite something that is not a SIAD-Synth set")
        for name in _OWN_OUTPUTS:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    return out


def _meta(jobs: list[_Job], split: str) -> dict:
    """The zero-shot repositories' meta.json (DESIGN 4) of DIR/<split>, paths relative to it."""
    meta: dict[str, dict[str, list[dict]]] = {"train": {}, "test": {}}
    for job in jobs:
        parts = job.image.split("/")
        if parts[0] != split:
            continue
        name, phase, specie = parts[1], parts[2], parts[3]
        meta[phase].setdefault(name, []).append({
            "img_path": "/".join(parts[1:]),
            "mask_path": "/".join(job.mask.split("/")[1:]) if job.mask else "",
            "cls_name": name,
            "specie_name": specie,
            "anomaly": 0 if specie == "good" else 1,
        })
    return meta


def _summary(jobs: list[_Job], seed: int, size: int, settings: Mapping[str, int]) -> dict:
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for job in jobs:
        parts = job.image.split("/")
        folder = "/".join(parts[2:-1]) if parts[0] in ("train", "test") else parts[1]
        group = counts.setdefault(parts[0], {})
        key = parts[1] if parts[0] in ("train", "test") else MEDICAL_CLASS
        group.setdefault(key, {})
        group[key][folder] = group[key].get(folder, 0) + 1
    classes = {
        name: {"split": split, "type": class_type(name), "description": describe(name),
               "source": ("scikit-image bundled photograph" if name in PHOTO_TEXTURES else "procedural (numpy)")}
        for split, names in (("train", TRAIN_CLASSES), ("test", TEST_CLASSES)) for name in names
    }
    return {
        "generator": "siad.data.synth",
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "image_size": [size, size],
        "settings": dict(settings),
        "split": {"train": list(TRAIN_CLASSES), "test": list(TEST_CLASSES), "medical": [MEDICAL_CLASS]},
        "classes": classes,
        "defect_kinds": list(DEFECT_KINDS),
        "medical": {"class": MEDICAL_CLASS, "description": describe(MEDICAL_CLASS, "brainmri"),
                    "source": "scikit-image Shepp-Logan phantom, deformed; lesion-like anomalies; labels only"},
        "counts": counts,
        "total_images": len(jobs),
        "total_masks": sum(1 for job in jobs if job.mask),
    }


def _readme(summary: Mapping) -> str:
    lines = [
        "# SIAD-Synth",
        "",
        f"Made by `python -m siad.data.synth` (format {summary['format_version']}), seed {summary['seed']}, "
        f"{summary['image_size'][0]} x {summary['image_size'][1]} px: {summary['total_images']} images, "
        f"{summary['total_masks']} masks. Nothing was downloaded.",
        "",
        "- `train/<class>/`: training classes (MVTec layout): " + ", ".join(summary["split"]["train"]) + ".",
        "- `test/<class>/`: unseen test classes (MVTec layout, drawn defects, exact masks in "
        "`ground_truth/<defect>/NNN_mask.png`): " + ", ".join(summary["split"]["test"]) + ".",
        "- `medical/{yes,no}/`, `medical_train/{yes,no}/`: grayscale brain-like scans, image labels only.",
        "- Defect kinds: " + ", ".join(summary["defect_kinds"]) + ".",
        "- `train/meta.json`, `test/meta.json`: the zero-shot index; `synth.json`: classes, split, counts.",
        "",
    ]
    return "\n".join(lines)


def generate(out: Path | str, seed: int = 0, *, n_train: int = DEFAULTS["n_train"],
             n_test_good: int = DEFAULTS["n_test_good"], n_test_defect: int = DEFAULTS["n_test_defect"],
             n_medical: int = DEFAULTS["n_medical"], size: int = DEFAULTS["size"], overwrite: bool = False,
             progress: bool = True) -> dict:
    """Write a SIAD-Synth set under `out` (see the module docstring and `plan()` for what and how many)
    and return its summary, the content of `out/synth.json`. Same seed and settings: same bytes.

    `generate(out, seed, **SMALL)` writes a reduced set for tests.
    """
    settings = {"n_train": n_train, "n_test_good": n_test_good, "n_test_defect": n_test_defect,
                "n_medical": n_medical, "size": size}
    jobs = plan(**settings)
    rng_for(seed, "check")  # validates the seed before anything is written
    root = prepare_output(Path(out), overwrite=overwrite)
    for job in tqdm(jobs, desc="SIAD-Synth", unit="img", disable=not progress, file=sys.stderr):
        image, mask = job.make(rng_for(seed, job.image))
        _save_png(root / job.image, image)
        if job.mask is not None:
            if mask is None or not mask.any():
                raise RuntimeError(f"empty mask for {job.image}")
            _save_png(root / job.mask, mask.astype(np.uint8) * 255)
    summary = _summary(jobs, seed, int(size), settings)
    for split in ("train", "test"):
        meta = _meta(jobs, split)
        if meta["train"] or meta["test"]:
            (root / split / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (root / "synth.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (root / "README.md").write_text(_readme(summary), encoding="utf-8")
    return summary
