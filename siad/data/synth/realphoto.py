"""A held-out test set from real photographs that ship inside installed packages, with drawn defects.

    python -m siad.data.synth realphoto --out data/siad_realphoto

SIAD-Synth's classes and families are drawn by generators; this set is made of real photographs, so
that the bundled model is also measured on camera images it was never trained on and that no setting
was chosen on. The photographs are the sample images scikit-image ships in its wheel (a dependency of
the `[train]` extra, as SIAD-Synth itself): nothing is downloaded. Each class is one photograph of a
surface or of a tray of objects (`PHOTO_CLASSES`):

- its left half gives the normal references (`train/good`, few-shot), its right half the test images
  (`test/good` and the defective ones), so that no reference shows a test image's own pixels;
- an image is a random square crop of its half (70-100 % of the half's shorter side), turned by a
  multiple of 90 degrees and perhaps mirrored (the photographs are of orientation-free surfaces), with
  a mild gain and offset, resized to `size` x `size` (bicubic);
- a defective image is such a crop with one defect drawn by SIAD-Synth's defect generator
  (`siad.data.synth.defects.apply_defect`, the kinds of `DEFECT_KINDS` in turn) and its exact mask.

The layout is SIAD-Synth's test split (MVTec-like, `meta.json`, `realphoto.json`, README): read it with
`siad.data.readers.load_dataset("mvtec_format", ROOT, "test")`. Same seed and settings: same bytes.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np
from PIL import Image

from siad.data.synth.common import SynthError, _check_size
from siad.data.synth.defects import DEFECT_KINDS, apply_defect
from siad.data.synth.family_sets import (FAMILIES_FORMAT_VERSION, HELDOUT_DEFAULTS, _counts, _Job, _test_set_readme,
                                         _write_set)

REALPHOTO_SUMMARY = "realphoto.json"
REALPHOTO_DEFAULTS: Mapping[str, int] = HELDOUT_DEFAULTS
CROP_RANGE = (0.7, 1.0)  # of the half's shorter side
GAIN_RANGE = (0.92, 1.08)
OFFSET_RANGE = (-8.0, 8.0)


@dataclass(frozen=True)
class PhotoClass:
    """A class of the set: its name (the class name), the package and the file inside it, what it shows."""

    name: str
    package: str
    filename: str
    about: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise SynthError(f"the photograph of class {self.name!r} ships with the '{self.package}' package, which "
                             f"is not installed (pip install scikit-image)")
        path = Path(list(spec.submodule_search_locations)[0]) / self.filename
        if not path.is_file():
            raise SynthError(f"{path} (the photograph of class {self.name!r}) is missing from the installed "
                             f"'{self.package}' package")
        return path


def _registry(entries: list[PhotoClass]) -> Mapping[str, PhotoClass]:
    return MappingProxyType({entry.name: entry for entry in entries})


PHOTO_CLASSES: Mapping[str, PhotoClass] = _registry([
    PhotoClass("brick_wall", "skimage", "data/brick.png", "a brick wall (grey)"),
    PhotoClass("grass", "skimage", "data/grass.png", "a lawn, close up (grey)"),
    PhotoClass("gravel", "skimage", "data/gravel.png", "gravel, from above (grey)"),
    PhotoClass("stained_tissue", "skimage", "data/ihc.png", "a tissue section with immunohistochemical staining"),
    PhotoClass("star_field", "skimage", "data/hubble_deep_field.jpg", "the Hubble deep field: galaxies on black"),
    PhotoClass("lunar_surface", "skimage", "data/moon.png", "craters of the moon's surface (grey)"),
    PhotoClass("coins", "skimage", "data/coins.png", "old coins on a plain background (grey)"),
    PhotoClass("retina", "skimage", "data/retina.jpg", "a fundus photograph of a retina, its vessels"),
])


def load_photo(name: str) -> np.ndarray:
    """The photograph of a class as an RGB uint8 array (grey photographs repeated on three channels)."""
    with Image.open(PHOTO_CLASSES[name].path()) as image:
        return np.asarray(image.convert("RGB"))


def photo_crop(photo: np.ndarray, half: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of the left ("train") or right ("test") half of a photograph, as the module docstring
    says: size x size x 3 uint8."""
    height, width = photo.shape[:2]
    left = 0 if half == "train" else width // 2
    part = photo[:, left:left + width // 2]
    short = min(part.shape[:2])
    side = max(8, int(round(short * rng.uniform(*CROP_RANGE))))
    y = int(rng.integers(0, part.shape[0] - side + 1))
    x = int(rng.integers(0, part.shape[1] - side + 1))
    crop = np.rot90(part[y:y + side, x:x + side], k=int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.BICUBIC), np.float32)
    shifted = resized * rng.uniform(*GAIN_RANGE) + rng.uniform(*OFFSET_RANGE)
    return np.clip(np.round(shifted), 0, 255).astype(np.uint8)


def _normal(name: str, half: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, None]:
    return photo_crop(load_photo(name), half, size, rng), None


def _defective(name: str, defect: str, size: int, rng: np.random.Generator, max_crops: int = 6
               ) -> tuple[np.ndarray, np.ndarray]:
    photo = load_photo(name)
    error: RuntimeError | None = None
    for _ in range(max_crops):  # a crop on which no visible defect can be drawn is replaced (deterministically)
        try:
            return apply_defect(defect, photo_crop(photo, "test", size, rng), rng)
        except RuntimeError as failure:
            error = failure
    raise RuntimeError(f"{name}: {error}")


def plan_realphoto(*, n_train: int, n_test_good: int, n_test_defect: int, size: int,
                   classes: Mapping[str, PhotoClass] = PHOTO_CLASSES) -> list[_Job]:
    """Per class: n_train normals (left half) in train/good, n_test_good (right half) in test/good and
    n_test_defect defects (right half) with the kinds of DEFECT_KINDS taken in turn."""
    for label, value in (("n_train", n_train), ("n_test_good", n_test_good), ("n_test_defect", n_test_defect)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{label} must be a non-negative integer, got {value!r}")
    size = _check_size(size)
    jobs: list[_Job] = []
    for index, name in enumerate(classes):
        jobs += [_Job(f"{name}/train/good/{i:03d}.png", None, partial(_normal, name, "train", size))
                 for i in range(n_train)]
        jobs += [_Job(f"{name}/test/good/{i:03d}.png", None, partial(_normal, name, "test", size))
                 for i in range(n_test_good)]
        counters: dict[str, int] = {}
        for i in range(n_test_defect):
            defect = DEFECT_KINDS[(i + index) % len(DEFECT_KINDS)]
            k = counters.get(defect, 0)
            counters[defect] = k + 1
            jobs.append(_Job(f"{name}/test/{defect}/{k:03d}.png", f"{name}/ground_truth/{defect}/{k:03d}_mask.png",
                             partial(_defective, name, defect, size)))
    return jobs


def _readme(summary: Mapping) -> str:
    text = _test_set_readme(summary, "SIAD real-photo held-out set: real photographs with drawn defects", "realphoto",
                            "The photographs are scikit-image's sample images (shipped in its wheel); each class's "
                            "left half gives the references, its right half the test images.")
    return text.replace("- Texture families", "- Surfaces").replace("- Part families", "- Objects")


def generate_realphoto(out: Path | str, seed: int = 0, *, n_train: int = REALPHOTO_DEFAULTS["n_train"],
                       n_test_good: int = REALPHOTO_DEFAULTS["n_test_good"],
                       n_test_defect: int = REALPHOTO_DEFAULTS["n_test_defect"], size: int = REALPHOTO_DEFAULTS["size"],
                       overwrite: bool = False, progress: bool = True) -> dict:
    """Write the real-photo held-out set under `out` and return its summary (`out/realphoto.json`)."""
    for entry in PHOTO_CLASSES.values():
        entry.path()  # every photograph is there before anything is written
    jobs = plan_realphoto(n_train=n_train, n_test_good=n_test_good, n_test_defect=n_test_defect, size=size)
    counts = _counts(jobs)
    summary = {
        "generator": "siad.data.synth realphoto",
        "format_version": FAMILIES_FORMAT_VERSION,
        "seed": int(seed),
        "image_size": [int(size), int(size)],
        "settings": {"n_train": int(n_train), "n_test_good": int(n_test_good), "n_test_defect": int(n_test_defect),
                     "size": int(size)},
        "families": {name: {"kind": "part" if name == "coins" else "texture", "class_name": name.replace("_", " "),
                            "about": entry.about, "source": f"{entry.package}/{entry.filename}",
                            "counts": dict(counts.get(name, {}))} for name, entry in PHOTO_CLASSES.items()},
        "defect_kinds": list(DEFECT_KINDS),
        "total_images": len(jobs),
        "total_masks": sum(1 for job in jobs if job.mask),
        "summary_file": REALPHOTO_SUMMARY,
    }
    return _write_set(out, jobs, seed, REALPHOTO_SUMMARY, summary, _readme, overwrite=overwrite, progress=progress,
                      desc="real-photo held-out set")
