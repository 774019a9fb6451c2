"""SIAD-Synth: deterministic, zero-shot split, exact masks, MVTec layout, CLI. No network, no cwd writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from siad.answers import answer_from_mask
from siad.data import synth
from siad.prompts import answer_is_anomalous

SMALL = dict(synth.SMALL)
REPO = Path(__file__).resolve().parents[1]




def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "set"
    summary = synth.generate(root, seed=3, progress=False, **SMALL)
    return root, summary


def test_same_seed_gives_identical_files(small_set: tuple[Path, dict], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = small_set
    monkeypatch.chdir(tmp_path)  # and nothing lands in the working directory
    again = tmp_path / "again"
    synth.generate(again, seed=3, progress=False, **SMALL)
    first, second = _files(root), _files(again)
    assert first.keys() == second.keys()
    assert all(first[name] == second[name] for name in first)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]


@pytest.mark.slow
def test_other_seed_gives_other_images(small_set: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = small_set
    other = tmp_path / "other"
    synth.generate(other, seed=4, progress=False, **SMALL)
    first, second = _files(root), _files(other)
    assert first.keys() == second.keys()  # same layout
    pngs = [name for name in first if name.endswith(".png")]
    assert sum(first[name] != second[name] for name in pngs) == len(pngs)


def test_train_and_test_classes_are_disjoint(small_set: tuple[Path, dict]) -> None:
    root, summary = small_set
    train = {p.name for p in (root / "train").iterdir() if p.is_dir()}
    test = {p.name for p in (root / "test").iterdir() if p.is_dir()}
    assert train == set(synth.TRAIN_CLASSES) and test == set(synth.TEST_CLASSES)
    assert not train & test
    assert set(summary["split"]["train"]) == train and set(summary["split"]["test"]) == test
    # both splits hold textures and objects
    for names in (train, test):
        assert {synth.class_type(n) for n in names} == {"texture", "object"}
    for name in train | test:
        assert name.isidentifier() and name == name.lower()


def test_every_test_anomaly_has_a_nonempty_exact_size_mask(small_set: tuple[Path, dict]) -> None:
    root, _ = small_set
    anomalies = [p for p in sorted(root.glob("*/*/test/*/*.png")) if p.parent.name != "good"]
    assert anomalies
    for image_path in anomalies:
        cls_dir, defect = image_path.parents[2], image_path.parent.name
        mask_path = cls_dir / "ground_truth" / defect / f"{image_path.stem}_mask.png"
        assert mask_path.is_file(), mask_path
        with Image.open(image_path) as image, Image.open(mask_path) as mask:
            assert image.mode == "RGB" and mask.mode == "L"
            assert image.size == mask.size
            values = np.asarray(mask)
        assert set(np.unique(values)) <= {0, 255}
        assert (values == 255).sum() > 0, mask_path
        assert answer_is_anomalous(answer_from_mask(values > 0)) is True
    # every test class has every defect kind (SMALL asks for 8 defects per test class)
    for name in synth.TEST_CLASSES:
        kinds = {p.name for p in (root / "test" / name / "test").iterdir()} - {"good"}
        assert kinds == set(synth.DEFECT_KINDS)
    # no mask without an image, and no mask for a normal image
    for mask_path in root.glob("*/*/ground_truth/*/*_mask.png"):
        cls_dir = mask_path.parents[2]
        assert (cls_dir / "test" / mask_path.parent.name / mask_path.name.replace("_mask", "")).is_file()
    assert not list(root.glob("*/*/ground_truth/good"))


def test_layout_counts_and_summary(small_set: tuple[Path, dict]) -> None:
    root, summary = small_set
    size = SMALL["size"]
    on_disk = json.loads((root / "synth.json").read_text())
    assert on_disk == summary
    assert summary["seed"] == 3 and summary["image_size"] == [size, size]
    assert "time" not in json.dumps(summary).lower()
    pngs = [p for p in root.rglob("*.png") if not p.name.endswith("_mask.png")]
    assert len(pngs) == summary["total_images"]
    assert len(list(root.rglob("*_mask.png"))) == summary["total_masks"]
    for split in ("train", "test"):
        for name, folders in summary["counts"][split].items():
            for folder, count in folders.items():
                assert len(list((root / split / name / folder).glob("*.png"))) == count
            assert folders["train/good"] >= 1
    for folder in ("medical/yes", "medical/no", "medical_train/no", "medical_train/yes"):
        files = sorted((root / folder).glob("*.png"))
        assert files
        for path in files:
            with Image.open(path) as image:
                assert image.mode == "L" and image.size == (size, size)
    for path in root.glob("t*/*/t*/good/*.png"):
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.size == (size, size)
    for split in ("train", "test"):
        meta = json.loads((root / split / "meta.json").read_text())
        entries = [e for phase in meta.values() for items in phase.values() for e in items]
        assert entries
        for entry in entries:
            assert (root / split / entry["img_path"]).is_file()
            assert entry["anomaly"] == int(entry["specie_name"] != "good")
            assert bool(entry["mask_path"]) == bool(entry["anomaly"])
            if entry["mask_path"]:
                assert (root / split / entry["mask_path"]).is_file()


@pytest.mark.parametrize("name", synth.TRAIN_CLASSES + synth.TEST_CLASSES)
def test_defect_masks_are_exact(name: str) -> None:
    """A pixel outside the mask is unchanged; the mask is (almost all) changed pixels; visible."""
    size = 96
    is_object = synth.class_type(name) == "object"
    for kind in synth.DEFECT_KINDS:
        rng = synth.rng_for(11, f"{name}/{kind}")
        scene = synth.make_normal(name, rng, size)
        image, mask = synth.apply_defect(kind, scene.image, rng, region=scene.foreground,
                                         background=scene.background if is_object else None)
        assert image.shape == scene.image.shape and image.dtype == np.uint8
        assert mask.shape == (size, size) and mask.dtype == bool
        assert mask.any()
        assert np.array_equal(image[~mask], scene.image[~mask]), (name, kind)
        changed = np.abs(image.astype(int) - scene.image.astype(int)).max(axis=-1) > synth.CHANGE_TOLERANCE
        assert changed[mask].mean() > 0.5, (name, kind)
        assert np.abs(image.astype(int) - scene.image.astype(int))[mask].max() >= 30


def test_generators_are_deterministic_and_varied() -> None:
    for name in synth.TRAIN_CLASSES + synth.TEST_CLASSES:
        a = synth.make_normal(name, synth.rng_for(0, "a"), 64).image
        b = synth.make_normal(name, synth.rng_for(0, "a"), 64).image
        c = synth.make_normal(name, synth.rng_for(0, "c"), 64).image
        assert a.shape == (64, 64, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
        assert np.abs(a.astype(int) - c.astype(int)).mean() > 3.0, name  # normals vary
    scene = synth.make_object("hex_nut", synth.rng_for(0, "nut"), 128)
    assert 0.1 < scene.foreground.mean() < 0.6
    differs = np.abs(scene.image.astype(int) - scene.background.astype(int)).max(axis=-1) > 0
    near_part = ndimage.binary_dilation(scene.foreground, iterations=2)
    assert differs[scene.foreground].mean() > 0.9 and not differs[~near_part].any()


def test_bad_arguments_are_refused() -> None:
    rng = synth.rng_for(0, "x")
    with pytest.raises(ValueError):
        synth.make_texture("velvet", rng, 64)
    with pytest.raises(ValueError):
        synth.make_object("brick", rng, 64)
    with pytest.raises(ValueError):
        synth.apply_defect("dent", np.zeros((64, 64, 3), np.uint8), rng)
    with pytest.raises(ValueError):
        synth.apply_defect("scratch", np.zeros((64, 64), np.uint8), rng)
    with pytest.raises(ValueError):
        synth.make_texture("brick", rng, 16)
    with pytest.raises(ValueError):
        synth.rng_for(-1, "x")


def test_medical_scans_have_lesions_only_when_asked() -> None:
    for index in range(6):
        normal, empty = synth.make_scan(synth.rng_for(1, f"n{index}"), 128, lesion=False)
        sick, lesion = synth.make_scan(synth.rng_for(1, f"y{index}"), 128, lesion=True)
        assert normal.shape == sick.shape == (128, 128) and normal.dtype == np.uint8
        assert not empty.any()
        assert lesion.sum() > 30
        assert normal.mean() > 20  # a head, not a black image
    twin, _ = synth.make_scan(synth.rng_for(1, "y0"), 128, lesion=True)
    first, _ = synth.make_scan(synth.rng_for(1, "y0"), 128, lesion=True)
    assert np.array_equal(twin, first)


def test_output_folder_checks(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(synth.SynthError, match="cannot write"):
        synth.prepare_output(blocker / "sub")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(synth.SynthError, match="not empty"):
        synth.prepare_output(busy)
    with pytest.raises(synth.SynthError, match="not a SIAD-Synth set"):
        synth.prepare_output(busy, overwrite=True)
    assert (busy / "mine.txt").read_text() == "keep"


@pytest.mark.slow
def test_cli_small_set_and_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert synth.main(["--out", str(out), "--seed", "2", "--small", "--size", "64", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    first = _files(out)
    with pytest.raises(SystemExit) as error:
        synth.main(["--out", str(out), "--small", "--size", "64", "--quiet"])
    assert error.value.code == 2 and "not empty" in capsys.readouterr().err
    assert synth.main(["--out", str(out), "--seed", "2", "--small", "--size", "64", "--quiet", "--overwrite"]) == 0
    assert _files(out) == first
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as error:
        synth.main(["--out", str(blocker / "sub"), "--small", "--quiet"])
    assert error.value.code == 2 and "cannot write" in capsys.readouterr().err


@pytest.mark.slow
def test_module_entry_point_writes_only_under_out(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "siad.data.synth", "--out", str(tmp_path / "out"), "--small", "--size", "64"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "SIAD-Synth" in result.stderr  # the progress bar
    assert list(cwd.iterdir()) == []
    assert (tmp_path / "out" / "synth.json").is_file()
    missing = subprocess.run([sys.executable, "-m", "siad.data.synth"], cwd=cwd, env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "--out" in missing.stderr
