"""siad.calibrate: thresholds on known score lists, storing them, and the command line (offline)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from siad import SIADConfig, SIADModel
from siad import calibrate as cal
from siad.metrics import f1_max
from tests.test_evaluate import make_mvtec_dataset, save_tiny_model




# ------------------------------------------------------------------------------------ known lists
TEN = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


@pytest.mark.parametrize("fpr, above", [(0.0, 1.0), (0.05, 1.0), (0.1, 0.9), (0.25, 0.8), (0.3, 0.7), (0.5, 0.5),
                                        (0.99, 0.1)])
def test_threshold_for_fpr_on_a_known_list(fpr, above):
    t = cal.threshold_for_fpr(list(reversed(TEN)), fpr)
    assert t == np.nextafter(above, np.inf)  # just above the (k+1)-th largest score, k = floor(fpr * n)
    flagged = sum(s >= t for s in TEN)
    assert flagged == int(np.floor(fpr * 10 + 1e-9)) and flagged <= fpr * 10


def test_threshold_for_fpr_everything_allowed_ties_and_one_score():
    assert cal.threshold_for_fpr(TEN, 1.0) == 0.1  # every score may be flagged: the smallest one
    ties = [0.5, 0.5, 0.5, 0.2]
    t = cal.threshold_for_fpr(ties, 0.5)  # two false alarms allowed, but the three 0.5 move together
    assert t == np.nextafter(0.5, np.inf) and sum(s >= t for s in ties) == 0
    assert cal.threshold_for_fpr(ties, 0.75) == np.nextafter(0.2, np.inf)  # k = 3: 0.2 is the 4th largest
    assert cal.threshold_for_fpr([0.7], 0.0) == np.nextafter(0.7, np.inf)


def test_threshold_for_fpr_is_the_smallest_such_threshold():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = np.round(rng.random(rng.integers(1, 40)), 2)  # with ties
        fpr = float(rng.choice([0.0, 0.01, 0.1, 0.2, 0.5, 0.9]))
        t = cal.threshold_for_fpr(scores, fpr)
        allowed = int(np.floor(fpr * scores.size + 1e-9))
        assert np.sum(scores >= t) <= allowed
        if allowed < scores.size:  # any smaller candidate (a score below t) flags too many
            below = scores[scores < t]
            assert below.size == 0 or np.sum(scores >= below.max()) > allowed


@pytest.mark.parametrize("bad", [[], [0.1, float("nan")], [float("inf")]])
def test_threshold_for_fpr_refuses_bad_scores(bad):
    with pytest.raises(ValueError):
        cal.threshold_for_fpr(bad, 0.1)


@pytest.mark.parametrize("fpr", [-0.1, 1.5, "0.1", True])
def test_threshold_for_fpr_refuses_bad_rates(fpr):
    with pytest.raises(ValueError, match="fpr"):
        cal.threshold_for_fpr(TEN, fpr)


def test_threshold_f1_max_on_a_known_list():
    # thresholds: 0.8 -> F1 2/3; 0.4 -> 1/2; 0.35 -> 4/5 (best); 0.1 -> 2/3
    assert cal.threshold_f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == (0.35, pytest.approx(0.8))
    # perfect separation: the lowest anomalous score
    assert cal.threshold_f1_max([0, 0, 1, 1], [0.1, 0.2, 0.6, 0.9]) == (0.6, 1.0)
    # a tie in F1 (2/3 at 0.9: TP 1, FP 0; and at 0.6: TP 2, FP 2): the larger threshold
    assert cal.threshold_f1_max([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6]) == (0.9, pytest.approx(2 / 3))


def test_threshold_f1_max_agrees_with_the_metric():
    rng = np.random.default_rng(1)
    for _ in range(30):
        n = int(rng.integers(2, 60))
        labels = rng.integers(0, 2, n)
        labels[0] = 1
        scores = np.round(rng.random(n), 2)
        t, best = cal.threshold_f1_max(labels, scores)
        assert best == pytest.approx(f1_max(labels, scores), abs=1e-12)
        predicted = scores >= t
        tp = np.sum(predicted & (labels == 1))
        assert best == pytest.approx(2 * tp / (predicted.sum() + labels.sum()), abs=1e-12)


def test_threshold_f1_max_refuses_no_anomaly_and_bad_lengths():
    with pytest.raises(ValueError, match="anomalous"):
        cal.threshold_f1_max([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="length"):
        cal.threshold_f1_max([0, 1], [0.1])


def test_write_threshold_keeps_every_other_field(tmp_path):
    config = SIADConfig.tiny(llm=dict(max_new_tokens=9))
    config.save(tmp_path / "config.json")
    cal.write_threshold(tmp_path, 0.123456789, smoothing_sigma=4.0)
    loaded = SIADConfig.load(tmp_path / "config.json")
    assert loaded == config.replace(map=dict(threshold=0.123456789, score_smoothing_sigma=4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no temporary file left
    with pytest.raises(FileNotFoundError, match="config.json"):
        cal.write_threshold(tmp_path / "nothing", 0.5)
    with pytest.raises(ValueError, match="SIADConfig.map.threshold=1.5"):
        cal.write_threshold(tmp_path, 1.5)
    assert SIADConfig.load(tmp_path / "config.json") == loaded  # refused before anything was written


def test_write_threshold_keeps_an_older_folders_format(tmp_path):
    """A folder saved before the config came in parts (format 3) names its weights `encoder.*`: its
    config.json stays of format 3 (flat fields), so that the folder still loads."""
    import json
    import shutil
    from pathlib import Path

    source = Path(__file__).parent / "fixtures" / "format3_tiny"
    shutil.copytree(source, tmp_path / "m")
    before = SIADConfig.load(tmp_path / "m" / "config.json")
    cal.write_threshold(tmp_path / "m", 0.25, smoothing_sigma=2.0)
    data = json.loads((tmp_path / "m" / "config.json").read_text())
    assert data["format_version"] == 3 and "map" not in data
    assert (data["threshold"], data["score_smoothing_sigma"]) == (0.25, 2.0)
    assert SIADConfig.load(tmp_path / "m" / "config.json") == before.replace(
        map=dict(threshold=0.25, score_smoothing_sigma=2.0))
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()


# ------------------------------------------------------------------------------------ command line
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("calibrate")
    return {"root": make_mvtec_dataset(base / "data", classes=("widget",), n_good=4),
            "model": save_tiny_model(base / "m")}


def test_cli_from_normal_images_stores_the_threshold(setup, tmp_path, capsys):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(setup["model"], folder)
    normals = setup["root"] / "widget" / "test" / "good"
    assert cal.main(["--model", str(folder), "--class", "widget", "--normal", str(normals), "--fpr", "0.25",
                     "--no-chat", "--smooth-sigma", "2", "--quiet"]) == 0
    stored = json.loads((folder / "config.json").read_text())["map"]
    model = SIADModel.from_pretrained(setup["model"]).eval()
    model.config = model.config.replace(map=dict(score_smoothing_sigma=2.0))
    scores = [r.score for r in model.detect(sorted(normals.glob("*.png")), "widget", chat=False)]
    assert stored["threshold"] == cal.threshold_for_fpr(scores, 0.25)
    assert stored["score_smoothing_sigma"] == 2.0
    assert repr(stored["threshold"]) in capsys.readouterr().out
    loaded = SIADModel.from_pretrained(folder)
    assert sum(r.is_anomalous for r in loaded.detect(sorted(normals.glob("*.png")), "widget", chat=False)) <= 1


@pytest.mark.slow
def test_cli_from_labelled_data_dry_run_and_copy(setup, tmp_path, capsys):
    before = (setup["model"] / "config.json").read_text()
    assert cal.main(["--model", str(setup["model"]), "--dataset", "mvtec", "--root", str(setup["root"]),
                     "--dry-run", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "F1" in out and "nothing stored" in out
    assert (setup["model"] / "config.json").read_text() == before
    copy = tmp_path / "copy"
    cal.main(["--model", str(setup["model"]), "--dataset", "mvtec", "--root", str(setup["root"]), "--no-chat",
              "--out", str(copy), "--quiet"])
    assert (setup["model"] / "config.json").read_text() == before  # the source folder is unchanged
    from siad.data import load_dataset

    samples = load_dataset("mvtec", setup["root"], "test")
    model = SIADModel.from_pretrained(setup["model"]).eval()
    scores = [r.score for r in model.detect([s.image_path for s in samples], "widget", chat=False)]
    threshold, _ = cal.threshold_f1_max([s.label for s in samples], scores)
    assert SIADModel.from_pretrained(copy).config.map.threshold == threshold


@pytest.mark.parametrize("extra, message", [
    (["--model", "zero-shot:tiny", "--class", "w", "--normal", "x"], "no model folder"),
    (["--model", "org/remote-model", "--class", "w", "--normal", "x"], "--out"),
])
def test_cli_refuses_where_nothing_can_be_stored(extra, message, capsys):
    with pytest.raises(SystemExit) as info:
        cal.main(extra)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_cli_argument_errors(capsys):
    for argv in (["--model", "m"], ["--model", "m", "--normal", "x"], ["--model", "m", "--dataset", "mvtec"],
                 ["--model", "m", "--class", "c", "--normal", "x", "--fpr", "2"]):
        with pytest.raises(SystemExit) as info:
            cal.main(argv)
        assert info.value.code == 2


def test_normal_only_uses_each_class_and_the_false_alarm_rule(tmp_path, monkeypatch, capsys):
    """--dataset ... --normal-only: the normal images of every class, scored with their own names."""
    import siad.calibrate as calibrate_module
    from siad.data import Sample

    samples = [Sample(tmp_path / f"{c}{i}.png", None, c, "good", 0) for c in ("a", "b") for i in range(5)]
    samples.append(Sample(tmp_path / "bad.png", tmp_path / "bad_mask.png", "a", "crack", 1))
    monkeypatch.setattr(calibrate_module, "load_dataset", lambda *a, **k: samples)
    seen = []

    def fake_scores(detector, images, names, chat, batch_size, progress, references=None, run=None):
        seen.append((names[0], len(images)))
        return [0.1 * (i + 1) + (0.05 if names[0] == "b" else 0.0) for i in range(len(images))]

    monkeypatch.setattr(calibrate_module, "_score_all", fake_scores)
    monkeypatch.setattr("siad.baseline.load_detector",
                        lambda *a, **k: SimpleNamespace(config=SIADConfig.tiny(), can_answer=False))
    code = calibrate_module.main(["--model", "zero-shot:tiny", "--dataset", "mvtec_format", "--root", str(tmp_path),
                                  "--normal-only", "--fpr", "0.2", "--dry-run"])
    assert code == 0 and seen == [("a", 5), ("b", 5)]
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.15, 0.25, 0.35, 0.45, 0.55]
    expected = cal.threshold_for_fpr(scores, 0.2)
    assert f"threshold {expected!r}" in capsys.readouterr().out


def test_cli_with_references_calibrates_the_few_shot_scores(setup, tmp_path, capsys):
    """--references: the scores are those of detect with a bank of the references; a calibration image
    that is also a reference, or references for several classes, are refused."""
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(setup["model"], folder)
    normals = setup["root"] / "widget" / "test" / "good"
    references = setup["root"] / "widget" / "train" / "good"
    assert cal.main(["--model", str(folder), "--class", "widget", "--normal", str(normals), "--references",
                     str(references), "--fpr", "0.25", "--no-chat", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2-shot with 2 references" in out and "holds for detection with these references" in out
    model = SIADModel.from_pretrained(setup["model"]).eval()
    bank = model.build_references(sorted(references.glob("*.png")), "widget")
    images = sorted(normals.glob("*.png"))
    few = [r.score for r in model.detect(images, "widget", chat=False, references=bank)]
    zero = [r.score for r in model.detect(images, "widget", chat=False)]
    assert not np.allclose(few, zero)
    assert json.loads((folder / "config.json").read_text())["map"]["threshold"] == cal.threshold_for_fpr(few, 0.25)
    for argv, message in (
            (["--model", str(folder), "--class", "widget", "--normal", str(normals), "--references", str(images[0])],
             "also references"),
            (["--model", str(folder), "--dataset", "mvtec", "--root", str(setup["root"]), "--references",
              str(references)], "one class"),
            (["--model", "zero-shot:tiny", "--class", "widget", "--normal", str(normals), "--references",
              str(references), "--dry-run"], "zero-shot baseline takes no references"),
            (["--model", str(folder), "--class", "widget", "--normal", str(normals), "--references",
              str(tmp_path / "none")], "references not found")):
        with pytest.raises(SystemExit) as info:
            cal.main([*argv, "--quiet", "--no-chat"])
        assert info.value.code == 2 and message in capsys.readouterr().err, argv
