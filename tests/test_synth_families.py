"""SIAD-Synth generator families: registries, images, the families and held-out writers, the CLI."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from siad.data import synth
from siad.data.meta import read_meta
from siad.data.readers import load_dataset
from siad.data.synth import (family_objects, family_parts, family_sets, family_textures, heldout, part_drawing, parts,
                             textures)
from siad.data.synth.families import PART, TEXTURE

REPO = Path(__file__).resolve().parents[1]
ALL = {**synth.TRAIN_FAMILIES, **synth.HELDOUT_FAMILIES}
SIZE = 64


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------
# Registries


def test_registries_are_large_disjoint_and_hold_no_test_class() -> None:
    train, held = synth.TRAIN_FAMILIES, synth.HELDOUT_FAMILIES
    assert len(train) >= 40 and len(held) >= 10
    assert not set(train) & set(held)
    # different in kind: no generator function is shared between the registries
    assert not {f.draw for f in train.values()} & {f.draw for f in held.values()}
    assert all(f.draw.__module__ == heldout.__name__ for f in held.values())
    assert all(f.draw.__module__ != heldout.__name__ for f in train.values())
    # both hold textures and parts
    for registry in (train, held):
        assert {f.kind for f in registry.values()} == {TEXTURE, PART}
        assert sum(f.kind == TEXTURE for f in registry.values()) >= 5
        assert sum(f.kind == PART for f in registry.values()) >= 5
    # no SIAD-Synth test class, by name or by a word of the name; no clash with SIAD-Synth's classes
    for name, family in ALL.items():
        assert family.name == name and name.isidentifier() and name == name.lower()
        assert name not in synth.TEST_CLASSES + synth.TRAIN_CLASSES
        assert not set(name.split("_")) & set(synth.TEST_CLASSES), name
        assert family.prompt_name == name.replace("_", " ") and family.about


def test_no_family_uses_a_test_class_generator() -> None:
    forbidden = {textures._fibrous, textures._wood, textures._perforated, parts._connector, parts._capsule,
                 parts._gear, parts._bracket}
    assert not forbidden & {f.draw for f in ALL.values()}
    sources = "\n".join(inspect.getsource(m) for m in (family_textures, family_parts, family_objects, part_drawing,
                                                              heldout))
    for name in ("_fibrous", "_wood", "_perforated", "_connector", "_capsule", "_gear", "_bracket", "gravel.png",
                 "_photo_texture", "make_texture", "make_object"):
        assert name not in sources, name


# --------------------------------------------------------------------------------------------------
# Images


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_family_draws_valid_deterministic_varied_images(name: str) -> None:
    a = synth.make_family_image(name, synth.rng_for(0, f"{name}/a"), SIZE)
    again = synth.make_family_image(name, synth.rng_for(0, f"{name}/a"), SIZE)
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, again)
    others = [synth.make_family_image(name, synth.rng_for(seed, f"{name}/a"), SIZE) for seed in (1, 2, 3)]
    for other in others:  # other seeds, other images
        assert np.abs(a.astype(int) - other.astype(int)).mean() > 3.0, name
    # within-family variety: the mean colours of the draws are not all alike, nor the images flat
    means = np.stack([im.reshape(-1, 3).mean(0) for im in [a] + others])
    assert np.ptp(means, axis=0).max() > 4.0, name
    assert all(im.astype(float).std() > 2.0 for im in [a] + others), name
    big = synth.make_family_image(name, synth.rng_for(0, f"{name}/big"), 100)
    assert big.shape == (100, 100, 3) and big.dtype == np.uint8


@pytest.mark.parametrize("name", sorted(n for n, f in ALL.items() if f.kind == PART))
def test_part_scenes_have_a_foreground_and_the_scene_without_it(name: str) -> None:
    scene = synth.make_family_scene(name, synth.rng_for(5, name), 96)
    assert scene.foreground.dtype == bool and 0.01 < scene.foreground.mean() < 0.9, name
    differs = np.abs(scene.image.astype(int) - scene.background.astype(int)).max(axis=-1) > 0
    near_part = ndimage.binary_dilation(scene.foreground, iterations=2)
    # outside the part (but for a defocus or sub-pixel slivers: a few pixels) the scene is its background
    assert differs[scene.foreground].mean() > 0.5 and differs[~near_part].mean() < 0.003, name


def test_texture_scenes_cover_the_image() -> None:
    for name, family in ALL.items():
        if family.kind == TEXTURE:
            scene = synth.make_family_scene(name, synth.rng_for(0, name), SIZE)
            assert scene.foreground.all() and scene.background is scene.image


@pytest.mark.parametrize("name", sorted(synth.HELDOUT_FAMILIES))
def test_heldout_defects_are_exact(name: str) -> None:
    family = synth.HELDOUT_FAMILIES[name]
    is_part = family.kind == PART
    for kind in synth.DEFECT_KINDS:
        rng = synth.rng_for(4, f"{name}/{kind}")
        scene = synth.make_family_scene(name, rng, SIZE)
        try:
            image, mask = synth.apply_defect(kind, scene.image, rng, region=scene.foreground if is_part else None,
                                             background=scene.background if is_part else None)
        except RuntimeError:  # too faint on this scene: the writer draws another scene
            continue
        assert mask.any() and np.array_equal(image[~mask], scene.image[~mask]), (name, kind)
    image, mask = synth.make_family_anomalous(name, "scratch", synth.rng_for(4, name), SIZE)
    assert image.shape == (SIZE, SIZE, 3) and mask.shape == (SIZE, SIZE) and mask.any()


def test_bad_family_arguments_are_refused() -> None:
    rng = synth.rng_for(0, "x")
    with pytest.raises(ValueError):
        synth.make_family_image("gear", rng, SIZE)
    with pytest.raises(ValueError):
        synth.make_family_image("velvet", rng, SIZE)
    with pytest.raises(ValueError):
        synth.make_family_image("polka_dots", rng, 16)
    with pytest.raises(ValueError):
        synth.plan_families(per_family=0, size=SIZE)
    with pytest.raises(ValueError):
        synth.generate_families("unused", seed=-1, per_family=1, size=SIZE)


# --------------------------------------------------------------------------------------------------
# Writers


@pytest.fixture(scope="module")
def families_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("families") / "set"
    return root, synth.generate_families(root, seed=2, per_family=1, size=SIZE, progress=False)


@pytest.fixture(scope="module")
def heldout_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("heldout") / "set"
    return root, synth.generate_heldout(root, seed=1, progress=False, **family_sets.HELDOUT_SMALL)


def test_families_writer_layout_meta_and_summary(families_set: tuple[Path, dict]) -> None:
    root, summary = families_set
    assert sorted(p.name for p in root.iterdir()) == sorted([*synth.FITTING_FAMILIES, "meta.json", "families.json",
                                                             "README.md"])
    assert json.loads((root / "families.json").read_text()) == summary
    assert summary["total_images"] == len(synth.FITTING_FAMILIES) and summary["seed"] == 2
    assert "time" not in json.dumps(summary).lower()
    for name in synth.FITTING_FAMILIES:
        files = sorted((root / name / "train" / "good").iterdir())
        assert [p.name for p in files] == ["000.png"]
        with Image.open(files[0]) as image:
            assert image.mode == "RGB" and image.size == (SIZE, SIZE)
        assert summary["families"][name]["counts"] == {"train/good": 1}
    samples = read_meta(root, "train")
    assert {s.class_name for s in samples} == set(synth.FITTING_FAMILIES)
    assert all(s.image_path.is_file() and s.label == 0 and s.mask_path is None for s in samples)
    assert read_meta(root, "test") == []
    readable = load_dataset("mvtec_format", root, "train")
    assert sorted(s.class_name for s in readable) == sorted(synth.FITTING_FAMILIES)
    assert "polka_dots" in (root / "README.md").read_text()


def test_families_writer_is_deterministic_per_seed(families_set: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = families_set
    synth.generate_families(tmp_path / "again", seed=2, per_family=1, size=SIZE, progress=False)
    synth.generate_families(tmp_path / "other", seed=3, per_family=1, size=SIZE, progress=False)
    first, again, other = _files(root), _files(tmp_path / "again"), _files(tmp_path / "other")
    assert first == again
    pngs = [name for name in first if name.endswith(".png")]
    assert first.keys() == other.keys() and all(first[name] != other[name] for name in pngs)


def test_heldout_set_is_readable_with_exact_masks(heldout_set: tuple[Path, dict]) -> None:
    root, summary = heldout_set
    assert json.loads((root / "heldout.json").read_text()) == summary
    samples = load_dataset("mvtec_format", root, "test")
    assert {s.class_name for s in samples} == set(synth.HELDOUT_FAMILIES)
    anomalies = [s for s in samples if s.label == 1]
    assert len(anomalies) == summary["total_masks"] == 8 * len(synth.HELDOUT_FAMILIES)
    for name in synth.HELDOUT_FAMILIES:
        kinds = {s.defect_type for s in anomalies if s.class_name == name}
        assert kinds == set(synth.DEFECT_KINDS)
        one = load_dataset("mvtec_format", root / name, "test")
        assert {s.class_name for s in one} == {name} and any(s.label == 0 for s in one)
        refs = load_dataset("mvtec_format", root / name, "train")
        assert refs and all(s.label == 0 for s in refs)
    size = family_sets.HELDOUT_SMALL["size"]
    for sample in anomalies:
        with Image.open(sample.image_path) as image, Image.open(sample.mask_path) as mask:
            assert image.mode == "RGB" and image.size == (size, size) and mask.mode == "L" and mask.size == image.size
            values = np.asarray(mask)
        assert set(np.unique(values)) <= {0, 255} and (values == 255).any()
    meta = load_dataset("meta", root, "test")
    assert len(meta) == len(samples) and {s.class_name for s in meta} == set(synth.HELDOUT_FAMILIES)


def test_heldout_images_match_their_normal_scene_outside_the_mask(heldout_set: tuple[Path, dict]) -> None:
    """The written defect image is the job's normal scene changed only inside its mask (when the first
    scene took the defect, which is the rule)."""
    root, summary = heldout_set
    size = summary["image_size"][0]
    checked = 0
    for name in synth.HELDOUT_FAMILIES:
        path = f"{name}/test/scratch/000.png"
        scene = synth.make_family_scene(name, synth.rng_for(summary["seed"], path), size)
        with Image.open(root / path) as image, Image.open(root / f"{name}/ground_truth/scratch/000_mask.png") as mask:
            written, outside = np.asarray(image), np.asarray(mask) == 0
        if np.array_equal(written[outside], scene.image[outside]):
            checked += 1
    assert checked >= len(synth.HELDOUT_FAMILIES) - 2


def test_family_output_folder_checks(families_set: tuple[Path, dict], heldout_set: tuple[Path, dict],
                                     tmp_path: Path) -> None:
    out = tmp_path / "fam"
    synth.generate_families(out, seed=0, per_family=1, size=SIZE, progress=False)
    first = _files(out)
    with pytest.raises(synth.SynthError, match="not empty"):
        synth.generate_families(out, seed=0, per_family=1, size=SIZE, progress=False)
    synth.generate_families(out, seed=0, per_family=1, size=SIZE, progress=False, overwrite=True)
    assert _files(out) == first
    assert not [p for p in out.iterdir() if p.name.startswith(family_sets.STAGING_PREFIX)]
    # a held-out set is not a families set, and the other way round; foreign content is never replaced
    with pytest.raises(synth.SynthError, match="holds no families.json"):
        synth.generate_families(heldout_set[0], seed=0, per_family=1, size=SIZE, progress=False, overwrite=True)
    with pytest.raises(synth.SynthError, match="holds no heldout.json"):
        synth.generate_heldout(out, seed=0, progress=False, overwrite=True, **family_sets.HELDOUT_SMALL)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(synth.SynthError, match="refusing"):
        synth.generate_families(busy, seed=0, per_family=1, size=SIZE, progress=False, overwrite=True)
    assert (busy / "mine.txt").read_text() == "keep" and sorted(p.name for p in busy.iterdir()) == ["mine.txt"]
    # an interrupted run leaves only a hidden staging folder, ignored and then cleared by --overwrite
    stale = tmp_path / "stale"
    (stale / (family_sets.STAGING_PREFIX + "x") / "polka_dots").mkdir(parents=True)
    synth.generate_families(stale, seed=0, per_family=1, size=SIZE, progress=False, overwrite=True)
    assert _files(stale) == first
    with pytest.raises(synth.SynthError, match="cannot write"):
        blocker = tmp_path / "a_file"
        blocker.write_text("x")
        synth.generate_families(blocker / "sub", seed=0, per_family=1, size=SIZE, progress=False)


def test_plans_have_the_expected_counts() -> None:
    jobs = synth.plan_families(per_family=family_sets.FAMILIES_DEFAULTS["per_family"], size=256)
    assert len(jobs) == len(synth.FITTING_FAMILIES) * family_sets.FAMILIES_DEFAULTS["per_family"] >= 5000
    assert len({job.image for job in jobs}) == len(jobs)
    wide = synth.plan_families(per_family=1200, size=64)
    assert wide[-1].image.endswith("/1199.png") and wide[0].image.endswith("/0000.png")
    held = synth.plan_heldout(**family_sets.HELDOUT_DEFAULTS)
    per_family = sum(family_sets.HELDOUT_DEFAULTS[k] for k in ("n_train", "n_test_good", "n_test_defect"))
    assert len(held) == per_family * len(synth.HELDOUT_FAMILIES)
    assert sum(job.mask is not None for job in held) == 16 * len(synth.HELDOUT_FAMILIES)


# --------------------------------------------------------------------------------------------------
# Command line


def test_cli_subcommands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fam"
    assert synth.main(["families", "--out", str(out), "--per-family", "1", "--size", "64", "--seed", "5", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "images/s" in printed and f"{len(synth.FITTING_FAMILIES)} families" in printed
    assert json.loads((out / "families.json").read_text())["seed"] == 5
    with pytest.raises(SystemExit) as error:
        synth.main(["families", "--out", str(out), "--per-family", "1", "--size", "64", "--quiet"])
    assert error.value.code == 2 and "not empty" in capsys.readouterr().err
    held = tmp_path / "held"
    assert synth.main(["heldout", "--out", str(held), "--small", "--quiet"]) == 0
    assert "images/s" in capsys.readouterr().out
    assert json.loads((held / "heldout.json").read_text())["settings"] == dict(family_sets.HELDOUT_SMALL)


def test_module_entry_point_families(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "siad.data.synth", "families", "--out", str(tmp_path / "out"), "--small"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "SIAD-Synth families" in result.stderr and "images/s" in result.stdout
    assert list(cwd.iterdir()) == []
    assert (tmp_path / "out" / "families.json").is_file()
    helped = subprocess.run([sys.executable, "-m", "siad.data.synth", "--help"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "families" in helped.stdout and "heldout" in helped.stdout


# ---------------------------------------------------------------------------------------------
# Validation families: a set for choosing a recipe, kept out of the training images


def test_validation_families_are_training_families_kept_out_of_the_training_images(tmp_path):
    from siad.data.readers import load_dataset
    from siad.data.synth import family_sets
    from siad.data.synth.families import FITTING_FAMILIES, TRAIN_FAMILIES, VALIDATION_FAMILIES

    assert set(VALIDATION_FAMILIES) < set(TRAIN_FAMILIES) and len(VALIDATION_FAMILIES) == 6
    assert {f.kind for f in VALIDATION_FAMILIES.values()} == {"texture", "part"}
    assert set(FITTING_FAMILIES) == set(TRAIN_FAMILIES) - set(VALIDATION_FAMILIES)
    written = family_sets.generate_families(tmp_path / "fam", per_family=1, size=64, progress=False)
    assert set(written["families"]) == set(FITTING_FAMILIES)
    summary = family_sets.generate_validation(tmp_path / "val", progress=False, **family_sets.HELDOUT_SMALL)
    assert set(summary["families"]) == set(VALIDATION_FAMILIES)
    assert (tmp_path / "val" / "validation.json").is_file()
    samples = load_dataset("mvtec_format", tmp_path / "val", "test")
    assert {s.class_name for s in samples} == set(VALIDATION_FAMILIES)
    assert any(s.mask_path is not None for s in samples) and any(s.label == 0 for s in samples)
