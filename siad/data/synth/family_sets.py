"""Writing sets of the generator families (MVTec layout, meta.json, a summary JSON, README):

- `generate_families(out, seed, per_family=..., size=...)`: normal training images of every family of
  `FITTING_FAMILIES` (`TRAIN_FAMILIES` without the validation families), `out/<family>/train/good/NNN.png`,
  `out/meta.json`, `out/families.json`, `out/README.md`;
- `generate_validation(out, seed, ...)`: a test set of `VALIDATION_FAMILIES`, laid out like the held-out
  set (for choosing a recipe; `out/validation.json`);
- `generate_heldout(out, seed, ...)`: a test set of `HELDOUT_FAMILIES` laid out like SIAD-Synth's test
  split: `out/<family>/train/good` (few-shot references), `test/good`, `test/<defect>` with the drawn
  defects of `DEFECT_KINDS`, exact masks in `ground_truth/<defect>/NNN_mask.png`; `out/meta.json`,
  `out/heldout.json`, `out/README.md`. Read it with `load_dataset("mvtec_format", out, "test")`.

Same seed and settings, same bytes: every image has its own generator, seeded from the seed and the
image's path (`rng_for`). A set is written into a hidden staging folder inside `out` and moved into
place only when complete, so an interrupted run leaves no half set; `overwrite` replaces only a former
set of the same kind (recognised by its summary JSON), and only what that summary lists.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

from siad.data.synth.common import SynthError, _check_size, rng_for
from siad.data.synth.defects import DEFECT_KINDS, apply_defect
from siad.data.synth.families import (FITTING_FAMILIES, HELDOUT_FAMILIES, PART, TRAIN_FAMILIES, VALIDATION_FAMILIES,
                                      Family, make_family_scene)
from siad.data.synth.writing import _Job

FAMILIES_FORMAT_VERSION = 1
FAMILIES_SUMMARY = "families.json"
HELDOUT_SUMMARY = "heldout.json"
VALIDATION_SUMMARY = "validation.json"
STAGING_PREFIX = ".incomplete-"

FAMILIES_DEFAULTS: Mapping[str, int] = MappingProxyType({"per_family": 100, "size": 256})
FAMILIES_SMALL: Mapping[str, int] = MappingProxyType({"per_family": 2, "size": 64})
HELDOUT_DEFAULTS: Mapping[str, int] = MappingProxyType({"n_train": 10, "n_test_good": 12, "n_test_defect": 16, "size": 256})
HELDOUT_SMALL: Mapping[str, int] = MappingProxyType({"n_train": 1, "n_test_good": 1, "n_test_defect": 8, "size": 96})


# --------------------------------------------------------------------------------------------------
# Images


def _save_png(path: Path, array: np.ndarray) -> None:
    """Write a PNG with fixed options (no timestamps: the bytes depend only on the pixels). zlib level 1:
    three times faster than SIAD-Synth's level 6 on these noisy images, for files about 7 % larger."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _family_normal(name: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, None]:
    return make_family_scene(name, rng, size).image, None


def make_family_anomalous(family: str | Family, defect: str, rng: np.random.Generator, size: int = 256,
                          max_scenes: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A normal image of a family with one drawn defect of kind `defect`: (image uint8, exact mask bool).
    On a part, the defect lies on the part (holes and missing pieces show the scene below). If no visible
    defect can be drawn on a scene, another scene is drawn (the same generator, so still deterministic)."""
    spec = family if isinstance(family, Family) else (HELDOUT_FAMILIES.get(family) or TRAIN_FAMILIES.get(family))
    if spec is None:
        raise ValueError(f"unknown family {family!r}")
    error: Optional[RuntimeError] = None
    for _ in range(max_scenes):
        scene = make_family_scene(spec, rng, size)
        is_part = spec.kind == PART
        try:
            return apply_defect(defect, scene.image, rng, region=scene.foreground if is_part else None,
                                background=scene.background if is_part else None)
        except RuntimeError as failure:
            error = failure
    raise RuntimeError(f"{spec.name}: {error}")


def _family_defect(name: str, defect: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return make_family_anomalous(name, defect, rng, size)


# --------------------------------------------------------------------------------------------------
# Plans


def _count(label: str, value: int) -> int:
    if not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{label} must be a non-negative integer, got {value!r}")
    return int(value)


def _digits(n: int) -> int:
    return max(3, len(str(max(n - 1, 0))))


def plan_families(*, per_family: int, size: int, families: Mapping[str, Family] = FITTING_FAMILIES) -> list[_Job]:
    """`per_family` normal images of each family, `<family>/train/good/NNN.png`, in a fixed order."""
    per_family = _count("per_family", per_family)
    if per_family == 0:
        raise ValueError("per_family must be at least 1")
    size = _check_size(size)
    width = _digits(per_family)
    return [_Job(f"{name}/train/good/{i:0{width}d}.png", None, partial(_family_normal, name, size))
            for name in families for i in range(per_family)]


def plan_heldout(*, n_train: int, n_test_good: int, n_test_defect: int, size: int,
                 families: Mapping[str, Family] = HELDOUT_FAMILIES) -> list[_Job]:
    """Per family: n_train normals in train/good, n_test_good in test/good, n_test_defect defects with the
    kinds of DEFECT_KINDS taken in turn (all of them once n_test_defect >= 8), as SIAD-Synth's test split."""
    n_train, n_test_good, n_test_defect = (_count("n_train", n_train), _count("n_test_good", n_test_good),
                                           _count("n_test_defect", n_test_defect))
    size = _check_size(size)
    jobs: list[_Job] = []
    for index, name in enumerate(families):
        jobs += [_Job(f"{name}/train/good/{i:03d}.png", None, partial(_family_normal, name, size)) for i in range(n_train)]
        jobs += [_Job(f"{name}/test/good/{i:03d}.png", None, partial(_family_normal, name, size)) for i in range(n_test_good)]
        counters: dict[str, int] = {}
        for i in range(n_test_defect):
            defect = DEFECT_KINDS[(i + index) % len(DEFECT_KINDS)]
            k = counters.get(defect, 0)
            counters[defect] = k + 1
            jobs.append(_Job(f"{name}/test/{defect}/{k:03d}.png", f"{name}/ground_truth/{defect}/{k:03d}_mask.png",
                             partial(_family_defect, name, defect, size)))
    return jobs


def _meta(jobs: list[_Job]) -> dict:
    """meta.json (DESIGN 4) of a family set, paths relative to its root."""
    meta: dict[str, dict[str, list[dict]]] = {"train": {}, "test": {}}
    for job in jobs:
        name, phase, specie = job.image.split("/")[:3]
        meta[phase].setdefault(name, []).append({
            "img_path": job.image, "mask_path": job.mask or "", "cls_name": name, "specie_name": specie,
            "anomaly": 0 if specie == "good" else 1,
        })
    return meta


def _counts(jobs: list[_Job]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for job in jobs:
        parts = job.image.split("/")
        folder = "/".join(parts[1:-1])
        counts.setdefault(parts[0], {})
        counts[parts[0]][folder] = counts[parts[0]].get(folder, 0) + 1
    return counts


# --------------------------------------------------------------------------------------------------
# Output folder


def _previous_outputs(root: Path, marker: str) -> list[Path]:
    """What a former set of this kind in `root` consists of, from its summary (refused if unreadable)."""
    try:
        summary = json.loads((root / marker).read_text(encoding="utf-8"))
        names = list(summary["families"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SynthError(f"'{root / marker}' cannot be read ({error}); refusing to overwrite '{root}'") from error
    for name in names:
        if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
            raise SynthError(f"'{root / marker}' lists an invalid family name {name!r}; refusing to overwrite")
    return [root / name for name in names] + [root / "meta.json", root / "README.md", root / marker]


def prepare_family_output(out: Path | str, marker: str, *, overwrite: bool = False) -> tuple[Path, list[Path]]:
    """Check that `out` can take a family set: create it, test that it is writable; a non-empty folder is
    refused unless `overwrite` and it holds a former set of the same kind (its `marker` summary). Returns
    (root, what to remove once the new set is complete). Leftover staging folders of interrupted runs
    are ignored, and removed with `overwrite`."""
    root = Path(out).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as error:
        raise SynthError(f"cannot write to output folder '{root}': {error.strerror or error}") from error
    entries = [e for e in root.iterdir() if not e.name.startswith(STAGING_PREFIX)]
    if not entries:
        return root, []
    if not overwrite:
        raise SynthError(f"output folder '{root}' is not empty; choose an empty folder or pass overwrite "
                         f"(--overwrite) to replace a former set of this kind")
    if not (root / marker).is_file():
        raise SynthError(f"output folder '{root}' is not empty and holds no {marker}: refusing to overwrite "
                         "something that is not a set of this kind")
    return root, _previous_outputs(root, marker)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _write_set(out: Path | str, jobs: list[_Job], seed: int, marker: str, summary: dict,
               readme: Callable[[Mapping], str], *, overwrite: bool, progress: bool, desc: str) -> dict:
    rng_for(seed, "check")  # validates the seed before anything is written
    root, previous = prepare_family_output(out, marker, overwrite=overwrite)
    if overwrite:
        for stale in root.glob(STAGING_PREFIX + "*"):
            _remove(stale)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    try:
        for job in tqdm(jobs, desc=desc, unit="img", disable=not progress, file=sys.stderr):
            image, mask = job.make(rng_for(seed, job.image))
            _save_png(staging / job.image, image)
            if job.mask is not None:
                if mask is None or not mask.any():
                    raise RuntimeError(f"empty mask for {job.image}")
                _save_png(staging / job.mask, mask.astype(np.uint8) * 255)
        (staging / "meta.json").write_text(json.dumps(_meta(jobs), indent=1, sort_keys=True) + "\n", encoding="utf-8")
        (staging / marker).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(readme(summary), encoding="utf-8")
        for path in previous:  # the new set is complete: replace the former one
            _remove(path)
        for entry in sorted(staging.iterdir(), key=lambda e: e.name != marker):  # the summary last
            entry.rename(root / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _family_table(families: Mapping[str, Family], counts: Mapping[str, Mapping[str, int]]) -> dict:
    return {name: {"kind": f.kind, "class_name": f.prompt_name, "about": f.about, "counts": dict(counts.get(name, {}))}
            for name, f in families.items()}


# --------------------------------------------------------------------------------------------------
# The two sets


def _families_readme(summary: Mapping) -> str:
    kinds = {k: [n for n, f in summary["families"].items() if f["kind"] == k] for k in ("texture", "part")}
    return "\n".join([
        "# SIAD-Synth families: training images",
        "",
        f"Made by `python -m siad.data.synth families` (format {summary['format_version']}), seed {summary['seed']}, "
        f"{summary['image_size'][0]} x {summary['image_size'][1]} px: {summary['total_images']} normal images of "
        f"{len(summary['families'])} generator families, {summary['settings']['per_family']} each. Nothing was downloaded.",
        "",
        "- `<family>/train/good/NNN.png`: normal images (MVTec layout); the family name is the class name.",
        f"- Texture families ({len(kinds['texture'])}): " + ", ".join(kinds["texture"]) + ".",
        f"- Part families ({len(kinds['part'])}): " + ", ".join(kinds["part"]) + ".",
        "- `meta.json`: the zero-shot index; `families.json`: families, settings, counts.",
        "- No SIAD-Synth test class and no held-out family is among them.",
        "",
    ])


def generate_families(out: Path | str, seed: int = 0, *, per_family: int = FAMILIES_DEFAULTS["per_family"],
                      size: int = FAMILIES_DEFAULTS["size"], overwrite: bool = False, progress: bool = True) -> dict:
    """Write the training images of every family of `FITTING_FAMILIES` under `out` and return the summary
    (the content of `out/families.json`). Same seed and settings: same bytes."""
    jobs = plan_families(per_family=per_family, size=size, families=FITTING_FAMILIES)
    summary = {
        "generator": "siad.data.synth families",
        "format_version": FAMILIES_FORMAT_VERSION,
        "seed": int(seed),
        "image_size": [int(size), int(size)],
        "settings": {"per_family": int(per_family), "size": int(size)},
        "families": _family_table(FITTING_FAMILIES, _counts(jobs)),
        "total_images": len(jobs),
        "total_masks": 0,
    }
    return _write_set(out, jobs, seed, FAMILIES_SUMMARY, summary, _families_readme, overwrite=overwrite,
                      progress=progress, desc="SIAD-Synth families")


def _test_set_readme(summary: Mapping, title: str, command: str, about: str) -> str:
    kinds = {k: [n for n, f in summary["families"].items() if f["kind"] == k] for k in ("texture", "part")}
    return "\n".join([
        f"# {title}",
        "",
        f"Made by `python -m siad.data.synth {command}` (format {summary['format_version']}), seed {summary['seed']}, "
        f"{summary['image_size'][0]} x {summary['image_size'][1]} px: {summary['total_images']} images, "
        f"{summary['total_masks']} masks. Nothing was downloaded. {about}",
        "",
        "- `<family>/train/good/`: normal references (few-shot); `<family>/test/good/`, `<family>/test/<defect>/`: "
        "the test images; `<family>/ground_truth/<defect>/NNN_mask.png`: exact masks.",
        f"- Texture families ({len(kinds['texture'])}): " + ", ".join(kinds["texture"]) + ".",
        f"- Part families ({len(kinds['part'])}): " + ", ".join(kinds["part"]) + ".",
        "- Defect kinds: " + ", ".join(summary["defect_kinds"]) + ".",
        "- Read with `siad.data.readers.load_dataset(\"mvtec_format\", ROOT, \"test\")`; `meta.json`: the zero-shot "
        f"index; `{summary['summary_file']}`: families, settings, counts.",
        "",
    ])


def _heldout_readme(summary: Mapping) -> str:
    return _test_set_readme(summary, "SIAD-Synth held-out families: a test set of unseen classes", "heldout",
                            "No training family uses these generators.")


def _validation_readme(summary: Mapping) -> str:
    return _test_set_readme(summary, "SIAD-Synth validation families: for choosing a training recipe", "validation",
                            "These training families are kept out of the training images (`families`).")


def _generate_test_set(out: Path | str, seed: int, families: Mapping[str, Family], command: str, marker: str,
                       readme: Callable[[Mapping], str], settings: Mapping[str, int], *, overwrite: bool,
                       progress: bool, desc: str) -> dict:
    jobs = plan_heldout(**settings, families=families)
    summary = {
        "generator": f"siad.data.synth {command}",
        "format_version": FAMILIES_FORMAT_VERSION,
        "seed": int(seed),
        "image_size": [int(settings["size"]), int(settings["size"])],
        "settings": {k: int(v) for k, v in settings.items()},
        "families": _family_table(families, _counts(jobs)),
        "defect_kinds": list(DEFECT_KINDS),
        "total_images": len(jobs),
        "total_masks": sum(1 for job in jobs if job.mask),
        "summary_file": marker,
    }
    return _write_set(out, jobs, seed, marker, summary, readme, overwrite=overwrite, progress=progress, desc=desc)


def generate_heldout(out: Path | str, seed: int = 0, *, n_train: int = HELDOUT_DEFAULTS["n_train"],
                     n_test_good: int = HELDOUT_DEFAULTS["n_test_good"],
                     n_test_defect: int = HELDOUT_DEFAULTS["n_test_defect"], size: int = HELDOUT_DEFAULTS["size"],
                     overwrite: bool = False, progress: bool = True) -> dict:
    """Write the held-out test set of `HELDOUT_FAMILIES` under `out` and return its summary (the content of
    `out/heldout.json`). Same seed and settings: same bytes."""
    settings = {"n_train": n_train, "n_test_good": n_test_good, "n_test_defect": n_test_defect, "size": size}
    return _generate_test_set(out, seed, HELDOUT_FAMILIES, "heldout", HELDOUT_SUMMARY, _heldout_readme, settings,
                              overwrite=overwrite, progress=progress, desc="SIAD-Synth held-out")


def generate_validation(out: Path | str, seed: int = 0, *, n_train: int = HELDOUT_DEFAULTS["n_train"],
                        n_test_good: int = HELDOUT_DEFAULTS["n_test_good"],
                        n_test_defect: int = HELDOUT_DEFAULTS["n_test_defect"], size: int = HELDOUT_DEFAULTS["size"],
                        overwrite: bool = False, progress: bool = True) -> dict:
    """Write the validation set of `VALIDATION_FAMILIES` (training families kept out of `families`) under
    `out` and return its summary (`out/validation.json`). Same seed and settings: same bytes."""
    settings = {"n_train": n_train, "n_test_good": n_test_good, "n_test_defect": n_test_defect, "size": size}
    return _generate_test_set(out, seed, VALIDATION_FAMILIES, "validation", VALIDATION_SUMMARY, _validation_readme,
                              settings, overwrite=overwrite, progress=progress, desc="SIAD-Synth validation")
