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


def test_commands_that_draw_say_which_extra_they_need(monkeypatch, capsys):
    """Only evaluate's figures need matplotlib; the overlays of detect and predict do not
    (tests/test_visualize.py::test_overlays_need_no_matplotlib)."""
    import siad.evaluate

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["evaluate", "--model", "m", "--out", "o"]) == 2
    assert 'pip install "siad-llm[plots]"' in capsys.readouterr().err
    seen = []
    monkeypatch.setattr(siad.evaluate, "main", lambda argv: seen.append(argv) or 0)
    assert main(["evaluate", "--model", "m", "--out", "o", "--no-plots"]) == 0 and seen  # no figures, no matplotlib


# ------------------------------------------------------------------------------------ clean errors (issue 20)
def _argv(command: str, folder: Path, image: Path, out: Path) -> list[str]:
    """A complete command line of each command, with --out where the command has one."""
    return {
        "detect": ["detect", "--model", str(folder), "--class", "x", str(image), "--out", str(out)],
        "predict": ["predict", str(image), "--model", str(folder), "--class", "x", "--out", str(out), "--quiet"],
        "evaluate": ["evaluate", "--model", str(folder), "--dataset", "mvtec", "--root", str(image.parent),
                     "--out", str(out), "--quiet"],
        "calibrate": ["calibrate", "--model", str(folder), "--class", "x", "--normal", str(image), "--out", str(out),
                      "--quiet"],
    }[command]


COMMANDS = ("detect", "predict", "evaluate", "calibrate")
ABSENT_GPU = "cuda:97" if torch.cuda.is_available() else "cuda"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("device", [ABSENT_GPU, "nosuchdevice", "meta"])
def test_a_device_this_machine_lacks_is_an_error_message_not_a_traceback(folder, images, tmp_path, capsys,
                                                                          monkeypatch, command, device):
    monkeypatch.setattr("siad.baseline.load_detector", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as done:
        main([*_argv(command, folder, images[0], tmp_path / "out"), "--device", device])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "argument --device" in err and (repr(device) in err or "meta device" in err)
    assert "Traceback" not in err


@pytest.mark.parametrize("command", COMMANDS)
def test_an_out_that_cannot_be_written_is_refused_before_the_model_runs(folder, images, tmp_path, capsys,
                                                                         monkeypatch, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr("siad.baseline.load_detector", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as done:
        main(_argv(command, folder, images[0], blocker / "out"))
    err = capsys.readouterr().err
    assert done.value.code == 2 and f"--out {blocker / 'out'} cannot be written" in err


def test_calibrate_refuses_a_model_folder_it_cannot_write_before_scoring(folder, images, tmp_path, capsys,
                                                                         monkeypatch):
    import siad.calibrate

    def unwritable(path, option="--out"):
        raise ValueError(f"{option} {path} cannot be written: Read-only file system")

    monkeypatch.setattr(siad.calibrate, "check_output_folder", unwritable)
    monkeypatch.setattr("siad.baseline.load_detector", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SystemExit) as done:
        main(["calibrate", "--model", str(folder), "--class", "x", "--normal", str(images[0])])
    assert done.value.code == 2 and "the model folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS)
def test_a_model_that_cannot_be_built_exits_with_status_2(folder, images, tmp_path, capsys, monkeypatch, command):
    def fail(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 16.60 GiB")

    monkeypatch.setattr("siad.model.SIADModel.from_pretrained", fail)
    if command == "evaluate":  # evaluate reads its dataset first
        from tests.test_evaluate import make_mvtec_dataset

        root = make_mvtec_dataset(tmp_path / "data", classes=("widget",))
        argv = ["evaluate", "--model", str(folder), "--dataset", "mvtec", "--root", str(root), "--out",
                str(tmp_path / "out"), "--quiet"]
    else:
        argv = _argv(command, folder, images[0], tmp_path / "out")
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and "cannot load the model" in err and "CUDA out of memory" in err
    assert "Traceback" not in err
