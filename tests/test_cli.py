"""The `siad` console command: detect, and predict/evaluate/calibrate delegated to their mains."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siad import SIADConfig, SIADModel
from siad.cli import main


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "m"
    torch.manual_seed(0)
    SIADModel(SIADConfig.tiny()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("images")
    paths = []
    for i, name in enumerate(("a/part.png", "b/part.png")):  # the same stem twice
        path = base / name
        path.parent.mkdir()
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_help_lists_the_four_commands(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in ("detect", "predict", "evaluate", "calibrate"):
        assert command in out


def test_detect_prints_scores_verdicts_answers_and_writes_overlays(folder, images, tmp_path, capsys):
    out = tmp_path / "overlays"
    assert main(["detect", "--model", str(folder), "--class", "bottle", *map(str, images), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    scored = [line for line in lines if ": score " in line]
    assert len(scored) == 2 and all(("anomalous" in line) != ("normal" in line) for line in scored)
    assert sum(line.startswith("  answer: ") for line in lines) == 2
    assert sorted(p.name for p in out.iterdir()) == ["part-2_overlay.png", "part_overlay.png"]
    assert Image.open(out / "part_overlay.png").size == (80, 60)
    model = SIADModel.from_pretrained(folder)
    expected = model.detect([str(images[0])], "bottle")[0]
    assert f"score {expected.score:.4f} " in scored[0]


def test_detect_without_chat_and_with_an_unreadable_file(folder, images, tmp_path, capsys):
    missing = tmp_path / "absent.png"
    assert main(["detect", "--model", str(folder), "--class", "bottle", str(images[0]), str(missing),
                 "--no-chat"]) == 1
    out = capsys.readouterr().out
    assert "answer:" not in out and f"{missing}: error:" in out and ": score " in out


def test_detect_with_references_says_k_shot(folder, images, tmp_path, capsys):
    assert main(["detect", "--model", str(folder), "--class", "bottle", str(images[0]), "--no-chat"]) == 0
    zero = capsys.readouterr().out
    assert main(["detect", "--model", str(folder), "--class", "bottle", str(images[0]), "--no-chat",
                 "--references", str(images[1].parent)]) == 0
    few = capsys.readouterr().out
    assert zero.rstrip().endswith("zero-shot") and few.rstrip().endswith("1-shot")
    model = SIADModel.from_pretrained(folder)
    expected = model.detect([str(images[0])], "bottle", chat=False, references=[images[1]])[0]
    assert f"score {expected.score:.4f} " in few and few.split(" (pass")[0] != zero.split(" (pass")[0]
    for argv, message in ((["--references", str(tmp_path / "none")], "no reference images"),
                          (["--model", "zero-shot:tiny", "--references", str(images[1])], "zero-shot baseline")):
        with pytest.raises(SystemExit) as done:
            main(["detect", "--model", str(folder), "--class", "bottle", str(images[0]), *argv])
        assert done.value.code == 2 and message in capsys.readouterr().err


def test_detect_refuses_a_missing_model(tmp_path, images, capsys):
    with pytest.raises(SystemExit) as done:
        main(["detect", "--model", str(tmp_path / "nowhere" / "m"), "--class", "bottle", str(images[0])])
    assert done.value.code == 2 and "no SIAD model folder" in capsys.readouterr().err


def test_predict_evaluate_calibrate_run_their_own_mains_with_the_same_options(folder, images, tmp_path,
                                                                              monkeypatch, capsys):
    out = tmp_path / "pred"
    assert main(["predict", "--model", str(folder), "--class", "bottle", str(images[0]), "--out", str(out),
                 "--no-chat", "--quiet"]) == 0
    assert (out / "predictions.csv").is_file() and (out / "part_overlay.png").is_file()
    import siad.calibrate
    import siad.evaluate

    seen = []
    monkeypatch.setattr(siad.evaluate, "main", lambda argv: seen.append(("evaluate", argv)) or 0)
    monkeypatch.setattr(siad.calibrate, "main", lambda argv: seen.append(("calibrate", argv)) or 0)
    assert main(["evaluate", "--model", "m", "--dataset", "visa", "--root", "r", "--out", "o"]) == 0
    assert main(["calibrate", "--model", "m", "--fpr", "0.05"]) == 0
    assert seen == [("evaluate", ["--model", "m", "--dataset", "visa", "--root", "r", "--out", "o"]),
                    ("calibrate", ["--model", "m", "--fpr", "0.05"])]


def test_commands_that_draw_say_which_extra_they_need(folder, images, tmp_path, monkeypatch, capsys):
    import siad.evaluate

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["predict", "--model", str(folder), "--class", "x", str(images[0]), "--out", str(tmp_path)]) == 2
    assert 'pip install "siad-llm[plots]"' in capsys.readouterr().err
    assert main(["evaluate", "--model", "m", "--out", "o"]) == 2
    seen = []
    monkeypatch.setattr(siad.evaluate, "main", lambda argv: seen.append(argv) or 0)
    assert main(["evaluate", "--model", "m", "--out", "o", "--no-plots"]) == 0 and seen  # no figures, no matplotlib
    with pytest.raises(SystemExit) as done:
        main(["detect", "--model", str(folder), "--class", "x", str(images[0]), "--out", str(tmp_path / "o")])
    assert done.value.code == 2 and "siad-llm[plots]" in capsys.readouterr().err
