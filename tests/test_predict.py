"""siad.predict: overlays and predictions.csv for a folder holding a corrupt file, offline."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siad import SIADModel
from siad import predict as pr
from siad.visualize import overlay
from tests.test_evaluate import _picture, save_tiny_model




@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("predict") / "m")


@pytest.fixture
def inputs(tmp_path) -> Path:
    """a.png, sub/a.png (the same stem), c.jpg, broken.png (not an image), notes.txt (skipped)."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(_picture(rng, (40, 56))).save(folder / "a.png")
    Image.fromarray(_picture(rng, (30, 30))).save(folder / "sub" / "a.png")
    Image.fromarray(_picture(rng, (24, 36))).save(folder / "c.jpg", quality=95)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / pr.CSV_NAME).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == pr.COLUMNS
        return list(reader)


def test_predict_folder_with_a_corrupt_file(model_dir, inputs, tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "out"
    missing = tmp_path / "gone.png"
    assert pr.main(["--model", str(model_dir), "--class", "widget", str(inputs), str(missing), "--out", str(out),
                    "--batch-size", "2", "--quiet"]) == 0
    assert list(work.iterdir()) == []
    rows = {Path(r["path"]).relative_to(tmp_path).as_posix(): r for r in _rows(out)}
    assert set(rows) == {"in/a.png", "in/sub/a.png", "in/c.jpg", "in/broken.png", "gone.png"}
    for name in ("in/broken.png", "gone.png"):
        row = rows[name]
        assert row["error"] and row["score"] == "" and row["overlay"] == "" and row["verdict"] == ""
    assert "not an image" in rows["in/broken.png"]["error"] and "no such file" in rows["gone.png"]["error"]
    model = SIADModel.from_pretrained(model_dir).eval()
    overlays = set()
    for name in ("in/a.png", "in/sub/a.png", "in/c.jpg"):
        row = rows[name]
        assert row["error"] == "" and row["answer"] != "" and row["initial_answer"] != ""
        image = np.asarray(Image.open(tmp_path / name).convert("RGB"))
        result = model.detect([image], "widget", batch_size=1)[0]
        assert float(row["score"]) == pytest.approx(result.score, abs=1e-6)
        assert float(row["initial_score"]) == pytest.approx(result.initial_score, abs=1e-6)
        assert row["verdict"] == ("anomalous" if float(row["score"]) >= model.config.map.threshold else "normal")
        saved = np.asarray(Image.open(out / row["overlay"]))
        assert saved.shape == image.shape and saved.dtype == np.uint8
        assert np.abs(saved.astype(int) - overlay(image, result.anomaly_map, 0.5).astype(int)).max() <= 1
        overlays.add(row["overlay"])
    assert overlays == {"a_overlay.png", "a-2_overlay.png", "c_overlay.png"}  # repeated stems made unique
    assert sorted(p.name for p in out.iterdir()) == sorted([*overlays, pr.CSV_NAME])


def test_predict_without_chat_and_with_the_zero_shot_baseline(inputs, tmp_path, model_dir):
    out = tmp_path / "plain"
    pr.main(["--model", str(model_dir), "--class", "widget", str(inputs / "a.png"), "--out", str(out), "--no-chat",
             "--quiet"])
    (row,) = _rows(out)
    assert row["answer"] == "" and row["initial_answer"] == "" and row["score"] == row["initial_score"]
    zero = tmp_path / "zero"
    pr.main(["--model", "zero-shot:tiny", "--class", "widget", str(inputs), "--out", str(zero), "--quiet"])
    rows = _rows(zero)
    assert len(rows) == 4 and sum(1 for r in rows if r["error"]) == 1
    assert all(r["answer"] == "" for r in rows)


def test_outputs_inside_an_input_folder_are_not_read_back(model_dir, inputs):
    out = inputs / "results"
    pr.main(["--model", "zero-shot:tiny", "--class", "widget", str(inputs), "--out", str(out), "--quiet"])
    pr.main(["--model", "zero-shot:tiny", "--class", "widget", str(inputs), "--out", str(out), "--quiet"])
    assert len(_rows(out)) == 4  # the overlays of the first run are not inputs of the second


def test_collect_images(inputs, tmp_path):
    found, missing = pr.collect_images([inputs, inputs / "a.png", tmp_path / "nope"])
    assert [p.relative_to(inputs).as_posix() for p in found] == ["a.png", "broken.png", "c.jpg", "sub/a.png"]
    assert missing == [tmp_path / "nope"]
    found, _ = pr.collect_images([inputs], exclude=inputs / "sub")
    assert "sub/a.png" not in [p.relative_to(inputs).as_posix() for p in found]


def test_bad_arguments(model_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as info:
        pr.main(["--model", str(model_dir), "--class", "x", str(empty), "--out", str(tmp_path / "o")])
    assert info.value.code == 2 and "no image files" in capsys.readouterr().err
    image = tmp_path / "one.png"
    Image.fromarray(_picture(np.random.default_rng(0))).save(image)
    with pytest.raises(SystemExit) as info:
        pr.main(["--model", str(tmp_path / "no-model"), "--class", "x", str(image), "--out", str(tmp_path / "o")])
    assert info.value.code == 2 and "no-model" in capsys.readouterr().err


def test_predict_with_references(model_dir, inputs, tmp_path, capsys):
    """--references DIR: one bank of the normal images for every input; the rows say k-shot and hold the
    scores of detect with that bank."""
    refs = tmp_path / "good"
    refs.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        Image.fromarray(_picture(rng, (40, 56))).save(refs / f"{i}.png")
    out = tmp_path / "few"
    assert pr.main(["--model", str(model_dir), "--class", "widget", str(inputs / "a.png"), str(inputs / "c.jpg"),
                    str(refs / "0.png"), "--references", str(refs), "--out", str(out), "--no-chat", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "1 input image(s) are also references" in captured.err and "3-shot" in captured.out
    rows = _rows(out)
    assert [r["mode"] for r in rows] == ["3-shot"] * 3
    model = SIADModel.from_pretrained(model_dir).eval()
    bank = model.build_references(sorted(refs.glob("*.png")), "widget")
    image = np.asarray(Image.open(inputs / "a.png").convert("RGB"))
    few = model.detect([image], "widget", chat=False, references=bank)[0]
    zero = model.detect([image], "widget", chat=False)[0]
    assert float(rows[0]["score"]) == pytest.approx(few.score, abs=1e-6)
    assert abs(few.score - zero.score) > 1e-4
    plain = tmp_path / "plain"
    pr.main(["--model", str(model_dir), "--class", "widget", str(inputs / "a.png"), "--out", str(plain), "--no-chat",
             "--quiet"])
    assert _rows(plain)[0]["mode"] == "zero-shot"
    for argv, message in ((["--model", "zero-shot:tiny", "--references", str(refs)], "zero-shot baseline"),
                          (["--model", str(model_dir), "--references", str(tmp_path / "none")], "references not found"),
                          (["--model", str(model_dir), "--references", str(inputs / "broken.png")], "not an image")):
        with pytest.raises(SystemExit) as info:
            pr.main([*argv, "--class", "widget", "--out", str(tmp_path / "o"), str(inputs / "a.png")])
        assert info.value.code == 2 and message in capsys.readouterr().err, argv
