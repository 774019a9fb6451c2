"""The real-photo held-out set: scikit-image's photographs, references from left halves, tests from right halves."""

import hashlib
import json

import numpy as np
import pytest

from siad.data import load_dataset
from siad.data.synth.cli import main as synth_main
from siad.data.synth.realphoto import PHOTO_CLASSES, generate_realphoto, load_photo, photo_crop


def test_every_photograph_ships_with_the_installed_package():
    for name, entry in PHOTO_CLASSES.items():
        assert entry.path().is_file(), name
        photo = load_photo(name)
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3 and min(photo.shape[:2]) >= 256


def test_references_come_from_the_left_half_and_tests_from_the_right_half():
    photo = np.zeros((200, 400, 3), np.uint8)
    photo[:, 200:] = 200  # the right half is bright
    rng = np.random.default_rng(0)
    for _ in range(20):
        train = photo_crop(photo, "train", 64, rng)
        test = photo_crop(photo, "test", 64, rng)
        assert train.shape == test.shape == (64, 64, 3)
        assert train.max() < 30 and test.min() > 150  # gain and offset are mild


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


def test_the_set_has_the_test_layout_exact_masks_and_the_same_bytes_for_the_same_seed(tmp_path):
    summary = generate_realphoto(tmp_path / "a", seed=3, n_train=1, n_test_good=1, n_test_defect=2, size=64,
                                 progress=False)
    assert summary["total_images"] == len(PHOTO_CLASSES) * 4 and summary["total_masks"] == len(PHOTO_CLASSES) * 2
    samples = load_dataset("mvtec_format", tmp_path / "a", "test")
    assert {s.class_name for s in samples} == set(PHOTO_CLASSES)
    anomalous = [s for s in samples if s.label == 1]
    assert len(anomalous) == 2 * len(PHOTO_CLASSES) and all(s.mask_path is not None for s in anomalous)
    from PIL import Image

    for sample in anomalous:
        assert np.asarray(Image.open(sample.mask_path)).max() == 255
    assert len(load_dataset("mvtec_format", tmp_path / "a", "train")) == len(PHOTO_CLASSES)
    meta = json.loads((tmp_path / "a" / "realphoto.json").read_text())
    assert meta["families"]["brick_wall"]["source"] == "skimage/data/brick.png"
    generate_realphoto(tmp_path / "b", seed=3, n_train=1, n_test_good=1, n_test_defect=2, size=64, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_the_command_line_writes_the_set(tmp_path, capsys):
    assert synth_main(["realphoto", "--out", str(tmp_path / "r"), "--small", "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "r" / "meta.json").is_file()
    with pytest.raises(SystemExit):
        synth_main(["realphoto", "--out", str(tmp_path / "r"), "--small", "--quiet"])  # not empty
