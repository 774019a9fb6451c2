"""siad.evaluate end to end on tiny datasets the tests write, with a tiny saved model; the zero-shot
baseline of siad.baseline. Everything offline and in temporary folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from siad import SIADConfig, SIADModel
from siad import evaluate as ev
from siad.baseline import ZeroShotBaseline, load_detector
from siad.data import load_mask
from siad.metrics import aupro, average_precision, f1_max, image_auroc, pixel_auroc
from siad.prompts import answer_is_anomalous, describe

CLASSES = ("widget", "plate")
SIZE = (40, 56)  # H x W: not square, not 224




def _picture(rng: np.random.Generator, shape: tuple[int, int] = SIZE) -> np.ndarray:
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(x / 5.0 + rng.uniform(0, 6)) * np.cos(y / 7.0)
    rgb = np.stack([base, base * 0.8 + 20, base * 0.6 + 40], axis=2) + rng.normal(0, 6, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def make_mvtec_dataset(root: Path, classes=CLASSES, n_good: int = 2, defects=(("scratch", 2), ("dent", 1)),
                       seed: int = 0, n_train: int = 2) -> Path:
    """An MVTec-format folder: per class train/good, test/good and test/<defect> with masks."""
    rng = np.random.default_rng(seed)
    for name in classes:
        for folder, count in ((root / name / "train" / "good", n_train), (root / name / "test" / "good", n_good)):
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(_picture(rng)).save(folder / f"{i:03d}.png")
        for defect, count in defects:
            images, masks = root / name / "test" / defect, root / name / "ground_truth" / defect
            images.mkdir(parents=True)
            masks.mkdir(parents=True)
            for i in range(count):
                picture = _picture(rng)
                mask = np.zeros(SIZE, dtype=np.uint8)
                top, left = rng.integers(2, SIZE[0] - 14), rng.integers(2, SIZE[1] - 14)
                mask[top:top + 10, left:left + 12] = 255
                picture[mask > 0] = (20, 20, 20)
                Image.fromarray(picture).save(images / f"{i:03d}.png")
                Image.fromarray(mask).save(masks / f"{i:03d}_mask.png")
    return root


def make_yes_no_dataset(root: Path, n: int = 3, seed: int = 1) -> Path:
    """A BrainMRI-like folder: yes/ and no/ grey images, no masks."""
    rng = np.random.default_rng(seed)
    for folder in ("yes", "no"):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_picture(rng, (32, 32))[:, :, 0]).save(root / folder / f"{i}.png")
    return root


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    SIADModel(SIADConfig.tiny()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("evaluate")
    return {"mvtec": make_mvtec_dataset(base / "mvtec"), "medical": make_yes_no_dataset(base / "medical"),
            "model": save_tiny_model(base / "m", 0), "model2": save_tiny_model(base / "m2", 1)}


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    """An empty working directory; tests check that nothing is written into it."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def _float(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def _recompute(model_dir: Path, root: Path, batch_size: int, chat: bool, sigma: float) -> dict:
    """The report's numbers computed here from the same detect calls (per class, same batches),
    at the original resolution, with siad.metrics."""
    from siad.data import load_dataset

    model = SIADModel.from_pretrained(model_dir).eval()
    samples = load_dataset("mvtec", root, "test")
    out = {}
    for name in dict.fromkeys(s.class_name for s in samples):
        group = [s for s in samples if s.class_name == name]
        results = []
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            results += model.detect([s.image_path for s in chunk], name, descriptions=describe(name, "mvtec"),
                                    chat=chat, batch_size=len(chunk), score_smoothing_sigma=sigma)
        labels = np.array([s.label for s in group])
        masks = [load_mask(s.mask_path) if s.mask_path else np.zeros(r.anomaly_map.shape, bool)
                 for s, r in zip(group, results)]
        per_pass = {}
        for p, score_of, map_of, answer_of in (("pass1", "initial_score", "initial_map", "initial_answer"),
                                               ("pass2", "score", "anomaly_map", "answer")):
            scores = np.array([getattr(r, score_of) for r in results])
            maps = [getattr(r, map_of) for r in results]
            answers = [answer_is_anomalous(getattr(r, answer_of) or "") for r in results]
            per_pass[p] = {
                "image_auroc": image_auroc(labels, scores), "pixel_auroc": pixel_auroc(masks, maps),
                "aupro": aupro(masks, maps), "image_ap": average_precision(labels, scores),
                "image_f1_max": f1_max(labels, scores),
                "accuracy": float(np.mean([a is not None and a == bool(y) for a, y in zip(answers, labels)])),
                "agreement": float(np.mean([a is not None and a == (score >= model.config.map.threshold)
                                            for a, score in zip(answers, scores)])),
                "neither": sum(a is None for a in answers), "scores": scores,
            }
        out[name] = per_pass
    return out


# ------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_evaluate_cli_report_holds_the_numbers_computed(data, cwd):
    """The defaults are the paper's protocol: both passes, original resolution, no smoothing."""
    out = cwd.parent / "report"
    code = ev.main(["--model", str(data["model"]), "--dataset", "mvtec", "--root", str(data["mvtec"]),
                    "--batch-size", "3", "--out", str(out), "--quiet"])
    assert code == 0
    assert list(cwd.iterdir()) == []  # nothing in the working directory
    for name in ("report.md", "report.json", "report.csv", "scores.csv", "histograms.png", "qualitative.png",
                 "roc_widget.png", "roc_plate.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    expected = _recompute(data["model"], data["mvtec"], batch_size=3, chat=True, sigma=0.0)
    report = json.loads((out / "report.json").read_text())
    assert report["passes"] == ["pass1", "pass2"] and report["dataset"] == "mvtec"
    assert report["model"] == str(data["model"]) and report["command"].startswith("python -m siad.evaluate --model")
    assert report["settings"]["smooth_sigma"] == 0.0 and report["settings"]["eval_size"] == 0
    assert report["settings"]["chat"] is True
    metrics = ("image_auroc", "pixel_auroc", "aupro", "image_ap", "image_f1_max")
    for name in CLASSES:
        entry = report["classes"][name]
        assert (entry["n_images"], entry["n_normal"], entry["n_anomalous"], entry["has_masks"]) == (5, 2, 3, True)
        for p in ("pass1", "pass2"):
            for m in metrics:
                assert entry[p][m] == pytest.approx(expected[name][p][m], abs=1e-12), (name, p, m)
            assert entry["answers"][p]["accuracy"] == pytest.approx(expected[name][p]["accuracy"])
            assert entry["answers"][p]["agreement"] == pytest.approx(expected[name][p]["agreement"])
            assert entry["answers"][p]["neither"] == expected[name][p]["neither"]
            assert entry["answers"][p]["total"] == 5
    for p in ("pass1", "pass2"):
        for m in metrics:
            mean = np.mean([expected[n][p][m] for n in CLASSES])
            assert report["mean"][p][m] == pytest.approx(mean, abs=1e-12)
    # report.csv: the same numbers
    with (out / "report.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(ev.CSV_COLUMNS)
    assert [(r["class"], r["pass"]) for r in rows] == [(c, p) for c in (*sorted(CLASSES), "mean") for p in ("pass1", "pass2")]
    for row in rows:
        source = report["mean"] if row["class"] == "mean" else report["classes"][row["class"]]
        for m in metrics:
            assert _float(row[m]) == pytest.approx(source[row["pass"]][m], abs=1e-15)
    # scores.csv: every image's scores
    with (out / "scores.csv").open(newline="") as handle:
        scores = list(csv.DictReader(handle))
    for name in CLASSES:
        got = [float(r["score_pass2"]) for r in scores if r["class"] == name]
        assert got == pytest.approx(list(expected[name]["pass2"]["scores"]), abs=1e-12)
    # report.md: the mean row, in percent with one decimal, pass 1 then pass 2 then accuracies
    md = (out / "report.md").read_text()
    mean_row = next(line for line in md.splitlines() if line.startswith("| **mean**"))
    cells = [c.strip() for c in mean_row.strip("|").split("|")][2:]
    want = [f"{100 * report['mean'][p][m]:.1f}" for p in ("pass1", "pass2") for m in metrics]
    want += [f"{100 * report['mean']['answers'][p][key]:.1f}" for key in ("accuracy", "agreement")
             for p in ("pass1", "pass2")]
    assert cells == want
    assert "Gain of self-improvement" in md and "I-AUROC (S')" in md


@pytest.mark.slow
def test_evaluate_map_only_is_pass_one_at_224(data, cwd):
    out = cwd.parent / "plain"
    ev.main(["--model", str(data["model"]), "--dataset", "mvtec", "--root", str(data["mvtec"]), "--classes", "plate",
             "--map-only", "--eval-size", "224", "--out", str(out), "--quiet", "--no-plots"])
    report = json.loads((out / "report.json").read_text())
    assert report["passes"] == ["pass1"] and list(report["classes"]) == ["plate"]
    assert "pass2" not in report["classes"]["plate"] and report["settings"]["eval_size"] == 224
    assert report["settings"]["chat"] is False and report["settings"]["smooth_sigma"] == 0.0
    md = (out / "report.md").read_text()
    assert "no self-improvement pass" in md and "(S')" not in md and "acc." not in md
    assert not (out / "histograms.png").exists()  # --no-plots
    # the same detect calls, maps and masks brought to 224 x 224 by the helpers the report names
    from siad.data import load_dataset

    model = SIADModel.from_pretrained(data["model"]).eval()
    samples = load_dataset("mvtec", data["mvtec"], "test", classes=["plate"])
    results = model.detect([s.image_path for s in samples], "plate", descriptions=describe("plate", "mvtec"),
                           chat=False, batch_size=8)
    maps = [ev.resize_map(r.initial_map, 224) for r in results]
    masks = [ev.eval_mask(s.mask_path, (224, 224)) for s in samples]
    assert all(m.shape == (224, 224) for m in maps + masks)
    labels = [s.label for s in samples]
    values = report["classes"]["plate"]["pass1"]
    assert values["pixel_auroc"] == pytest.approx(pixel_auroc(masks, maps), abs=1e-12)
    assert values["aupro"] == pytest.approx(aupro(masks, maps), abs=1e-12)
    assert values["image_auroc"] == pytest.approx(image_auroc(labels, [r.initial_score for r in results]), abs=1e-12)


@pytest.mark.slow
def test_zero_shot_baseline_report_and_uzad_protocol(data, cwd):
    out = cwd.parent / "uzad"
    ev.main(["--protocol", "uzad", "--models", f"mvtec={data['model']}", f"br35h={data['model2']}",
             "--datasets", f"mpdd={data['mvtec']}", f"brainmri={data['medical']}", "--out", str(out),
             "--quiet", "--qualitative", "2"])
    assert list(cwd.iterdir()) == []
    summary = json.loads((out / "report.json").read_text())
    assert summary["protocol"] == "uzad"
    assert summary["datasets"]["mpdd"]["model"] == str(data["model"])  # MVTec checkpoint -> MPDD
    assert summary["datasets"]["brainmri"]["model"] == str(data["model2"])  # Br35H checkpoint -> BrainMRI
    brain = json.loads((out / "brainmri" / "report.json").read_text())
    assert brain["classes"]["brain"]["has_masks"] is False
    assert brain["mean"]["pass1"]["pixel_auroc"] is None and brain["mean"]["pass1"]["image_auroc"] is not None
    mpdd = json.loads((out / "mpdd" / "report.json").read_text())
    assert summary["datasets"]["mpdd"]["pass2"] == mpdd["mean"]["pass2"]
    md = (out / "report.md").read_text()
    assert "| mpdd |" in md and "| brainmri |" in md
    assert "| brain | 6 |" in (out / "brainmri" / "report.md").read_text()
    with (out / "report.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["dataset"], r["class"]) for r in rows} == {("mpdd", "mean"), ("brainmri", "mean")}
    # the zero-shot reference over the same protocol: one model for every dataset, pass 1 only
    zs = cwd.parent / "zs"
    ev.main(["--protocol", "uzad", "--model", "zero-shot:tiny", "--datasets", f"mpdd={data['mvtec']}",
             "--out", str(zs), "--quiet", "--no-plots"])
    report = json.loads((zs / "mpdd" / "report.json").read_text())
    assert report["passes"] == ["pass1"] and report["model"] == "zero-shot:tiny"
    assert report["settings"]["chat"] is False  # no LLM to chat with
    assert "Zero-shot baseline" in (zs / "mpdd" / "report.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--protocol", "uzad", "--models", "br35h=M", "--datasets", "visa=R"], "lacks the checkpoint"),
    (["--protocol", "uzad", "--models", "kitchen=M", "--datasets", "visa=R"], "not training sets"),
    (["--protocol", "uzad", "--model", "M", "--datasets", "cifar=R"], "not in the UZAD protocol"),
    (["--protocol", "uzad", "--model", "M", "--models", "mvtec=M", "--datasets", "visa=R"], "either"),
    (["--protocol", "uzad", "--model", "M", "--datasets", "visa"], "NAME=VALUE"),
    (["--protocol", "uzad", "--model", "M", "--datasets", "visa=R", "--classes", "a"], "--classes"),
    (["--model", "M", "--dataset", "mvtec"], "--root"),
    (["--model", "M", "--dataset", "mvtec", "--root", "R", "--eval-size", "-1"], "eval-size"),
])
def test_bad_arguments_are_refused_before_any_work(argv, message, cwd, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ev.main([*argv, "--out", str(cwd.parent / "o")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (cwd.parent / "o").exists() and list(cwd.iterdir()) == []


def test_missing_model_and_wrong_root_are_clear_errors(data, cwd, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ev.main(["--model", str(cwd / "nope"), "--dataset", "mvtec", "--root", str(data["mvtec"]),
                 "--out", str(cwd.parent / "o"), "--quiet"])
    assert exit_info.value.code == 2 and "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        ev.main(["--model", str(data["model"]), "--dataset", "mvtec", "--root", str(cwd / "nowhere"),
                 "--out", str(cwd.parent / "o"), "--quiet"])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_uzad_mapping_is_the_papers():
    assert ev.uzad_protocol() == {"visa": "mvtec", "mpdd": "mvtec", "dtd": "mvtec", "sdd": "mvtec", "btad": "mvtec",
                                  "mvtec": "visa", "brainmri": "br35h", "headct": "br35h", "br35h": "brainmri"}


def test_answer_stats_count_neither_as_wrong():
    stats = ev.AnswerStats()
    for answer, label in (("Yes, there is", 1), ("No, there is no", 0), ("No.", 1), ("maybe", 0), (None, 1)):
        stats.add(answer, label, verdict=bool(label))
    assert stats.as_dict() == {"accuracy": 0.4, "agreement": 0.4, "correct": 2, "wrong": 3, "neither": 2, "agree": 2,
                               "total": 5}


# ------------------------------------------------------------------------------------ zero-shot baseline
def test_zero_shot_baseline_maps_and_shapes():
    baseline = load_detector("zero-shot:tiny")
    assert isinstance(baseline, ZeroShotBaseline)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (50, 70, 3), dtype=np.uint8), rng.integers(0, 255, (30, 30), dtype=np.uint8)]
    results = baseline.detect(images, ["bottle", "wood"], chat=True)
    assert [r.anomaly_map.shape for r in results] == [(50, 70), (30, 30)]
    for r in results:
        assert r.anomaly_map.dtype == np.float32 and 0.0 <= r.anomaly_map.min() <= r.anomaly_map.max() <= 1.0
        assert np.array_equal(r.anomaly_map, r.initial_map) and r.score == r.initial_score
        assert r.answer is None and r.initial_answer is None
        assert r.is_anomalous == (r.score >= baseline.config.map.threshold)
        assert float(r.anomaly_map.max()) <= r.score + 1e-6  # the score is the max of the 224 x 224 map
    again = load_detector("zero-shot:tiny").detect(images, ["bottle", "wood"])  # seeded: the same weights
    assert all(np.array_equal(a.anomaly_map, b.anomaly_map) for a, b in zip(results, again))


def test_zero_shot_baseline_is_the_vision_head_projection_and_the_ensemble():
    baseline = load_detector("zero-shot:tiny")
    tokens = [torch.randn(2, 256, 32) for _ in range(4)]
    head = baseline.vision_encoder.modality_heads["vision"]
    projected = baseline.project_tokens(tokens)
    manual = torch.nn.functional.normalize(head[2](head[0](tokens[1])), dim=-1)
    assert torch.allclose(projected[1], manual, atol=1e-6)
    text = baseline.text_features(["bottle", "wood", "bottle"], 4)
    assert text.shape == (3, 4, 2, 32)
    ensemble = baseline.prompts.features(baseline.text_encoder, baseline.text_tokenizer, "wood")
    assert torch.equal(text[1, 3], ensemble) and torch.equal(text[0], text[2])
    maps = baseline.anomaly_maps(torch.zeros(1, 3, 224, 224), ["bottle"])
    assert maps.shape == (1, 224, 224) and float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0


def test_zero_shot_from_a_model_folder_reads_only_its_encoder(data, monkeypatch):
    import siad.hub

    def refuse(*args, **kwargs):
        raise AssertionError("the whole model (with its LLM) was loaded")
    monkeypatch.setattr(siad.hub, "load_model_folder", refuse)
    baseline = load_detector(f"zero-shot:{data['model']}")
    monkeypatch.undo()
    model = SIADModel.from_pretrained(data["model"])
    for mine, theirs in ((baseline.vision_encoder.state_dict(), model.vision_encoder.state_dict()),
                         (baseline.text_encoder.state_dict(), model.text_encoder.state_dict())):
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert baseline.config.map.threshold == 0.5 and baseline.config.map.score_smoothing_sigma == 0.0


def test_evaluation_never_changes_the_models_config(data):
    """A smoothing sigma for the run goes to detect for that run only."""
    from siad.data import load_dataset

    model = SIADModel.from_pretrained(data["model"]).eval()
    before = model.config.to_dict()
    samples = load_dataset("mvtec", data["mvtec"], "test", classes=["plate"])
    evaluation = ev.evaluate_samples(model, samples, dataset="mvtec",
                                     settings=ev.EvalSettings(smooth_sigma=4.0, chat=False, progress=False))
    assert model.config.to_dict() == before
    assert evaluation.settings["smooth_sigma"] == 4.0
    assert evaluation.settings["model_smooth_sigma"] == before["map"]["score_smoothing_sigma"]
    smoothed = model.detect([s.image_path for s in samples], "plate", chat=False, score_smoothing_sigma=4.0)
    assert [r.scores["pass1"] for r in evaluation.records] == pytest.approx([r.score for r in smoothed], abs=1e-12)


def test_answer_stats_count_agreement_with_the_verdict():
    stats = ev.AnswerStats()
    stats.add("Yes, there is an anomaly in the image.", 1, verdict=True)   # right, agrees
    stats.add("Yes, there is an anomaly in the image.", 0, verdict=False)  # wrong, disagrees
    stats.add("No, there is no anomaly in the image.", 0, verdict=True)   # right, disagrees
    stats.add("I cannot tell.", 1, verdict=True)                           # neither: wrong, disagrees
    assert (stats.correct, stats.agree, stats.neither, stats.total) == (2, 1, 1, 4)
    assert stats.accuracy == 0.5 and stats.agreement == 0.25


# ------------------------------------------------------------------------------------ few-shot (--shots)
@pytest.mark.slow
def test_evaluate_shots_per_seed_and_their_mean(data, cwd, tmp_path):
    """--shots 2 --shot-seeds 0 1: references drawn from train/good per seed (never a test image),
    each seed's report holds the numbers of detect with that seed's bank, the top report their mean."""
    from siad.data import load_dataset

    root = make_mvtec_dataset(tmp_path / "fewshot", n_train=5, seed=3)
    out = cwd.parent / "shots"
    assert ev.main(["--model", str(data["model"]), "--dataset", "mvtec", "--root", str(root), "--batch-size", "3",
                    "--shots", "2", "--shot-seeds", "0", "1", "--no-plots", "--quiet", "--out", str(out)]) == 0
    assert list(cwd.iterdir()) == []
    report = json.loads((out / "report.json").read_text())
    assert report["shots"] == 2 and report["passes"] == ["pass1", "pass2"] and set(report["seeds"]) == {"0", "1"}
    assert report["settings"]["shot_seeds"] == [0, 1] and report["settings"]["few_shot_weight"] == 0.9
    test_paths = {str(s.image_path) for s in load_dataset("mvtec", root, "test")}
    draws = {}
    for seed in ("0", "1"):
        per_seed = json.loads((out / f"seed_{seed}" / "report.json").read_text())
        assert per_seed["seed"] == int(seed) and per_seed["shots"] == 2
        assert per_seed["references"] == report["seeds"][seed]["references"]
        for name in CLASSES:
            refs = per_seed["references"][name]
            assert len(refs) == 2 and all(f"/{name}/train/good/" in r for r in refs) and not set(refs) & test_paths
        draws[seed] = per_seed["references"]
        assert (out / f"seed_{seed}" / "scores.csv").is_file()
    assert draws["0"] != draws["1"]  # the seeds draw different references
    # seed 1's numbers are those of detect with a bank of its references (same batches)
    model = SIADModel.from_pretrained(data["model"]).eval()
    seed1 = json.loads((out / "seed_1" / "report.json").read_text())
    zero_scores = []
    for name in CLASSES:
        group = load_dataset("mvtec", root, "test", classes=[name])
        bank = model.build_references([Path(p) for p in draws["1"][name]], name, seed=1)
        results = []
        for start in range(0, len(group), 3):
            chunk = group[start:start + 3]
            results += model.detect([s.image_path for s in chunk], name, descriptions=describe(name, "mvtec"),
                                    batch_size=len(chunk), references=bank)
        assert {r.mode for r in results} == {"2-shot"}
        labels = [s.label for s in group]
        masks = [load_mask(s.mask_path) if s.mask_path else np.zeros(r.anomaly_map.shape, bool)
                 for s, r in zip(group, results)]
        assert seed1["classes"][name]["pass2"]["image_auroc"] == pytest.approx(
            image_auroc(labels, [r.score for r in results]), abs=1e-12)
        assert seed1["classes"][name]["pass1"]["pixel_auroc"] == pytest.approx(
            pixel_auroc(masks, [r.initial_map for r in results]), abs=1e-12)
        zero_scores += [r.score for r in model.detect([s.image_path for s in group], name, chat=False)]
    with (out / "seed_1" / "scores.csv").open(newline="") as handle:
        few = [float(r["score_pass1"]) for r in csv.DictReader(handle)]
    assert not np.allclose(few, zero_scores)  # the references changed the scores
    # the top report: the mean over seeds, per class and over classes
    for name in CLASSES:
        for p in ("pass1", "pass2"):
            for m in ("image_auroc", "pixel_auroc", "aupro"):
                seeds = [json.loads((out / f"seed_{s}" / "report.json").read_text())["classes"][name][p][m]
                         for s in ("0", "1")]
                assert report["classes"][name][p][m] == pytest.approx(np.mean(seeds), abs=1e-12)
    for p in ("pass1", "pass2"):
        assert report["mean"][p]["image_auroc"] == pytest.approx(
            np.mean([report["seeds"][s]["mean"][p]["image_auroc"] for s in ("0", "1")]), abs=1e-12)
        assert report["mean"]["answers"][p]["accuracy"] == pytest.approx(
            np.mean([report["seeds"][s]["answers"][p]["accuracy"] for s in ("0", "1")]), abs=1e-12)
    with (out / "report.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(ev.CSV_COLUMNS) and {r["shots"] for r in rows} == {"2"}
    assert [r["seed"] for r in rows if r["class"] == "mean"] == ["0", "0", "1", "1", "mean", "mean"]
    mean_row = next(r for r in rows if r["seed"] == "mean" and r["class"] == "mean" and r["pass"] == "pass2")
    assert _float(mean_row["image_auroc"]) == pytest.approx(report["mean"]["pass2"]["image_auroc"], abs=1e-15)
    md = (out / "report.md").read_text()
    assert "2-shot (mean over seeds 0, 1)" in md and "| seed 0 |" in md and "| **mean over seeds** |" in md
    assert "2-shot (seed 1)" in (out / "seed_1" / "report.md").read_text()


def test_zero_shot_reports_say_so_and_shots_errors(data, cwd, capsys):
    out = cwd.parent / "zero"
    ev.main(["--model", str(data["model"]), "--dataset", "mvtec", "--root", str(data["mvtec"]), "--classes", "plate",
             "--map-only", "--shots", "0", "--no-plots", "--quiet", "--out", str(out)])
    report = json.loads((out / "report.json").read_text())
    assert report["shots"] == 0 and "seeds" not in report and "zero-shot" in (out / "report.md").read_text()
    with (out / "report.csv").open(newline="") as handle:
        assert {(r["shots"], r["seed"]) for r in csv.DictReader(handle)} == {("0", "")}
    for argv, message in (
            (["--model", str(data["model"]), "--dataset", "mvtec", "--root", str(data["mvtec"]), "--shots", "3"],
             "too few normal images"),  # 2 train images per class
            (["--model", str(data["model"]), "--dataset", "brainmri", "--root", str(data["medical"]), "--shots", "1"],
             "too few normal images"),  # its train split is its test normals: never a reference
            (["--model", "zero-shot:tiny", "--dataset", "mvtec", "--root", str(data["mvtec"]), "--shots", "1"],
             "the zero-shot and self-reference baselines take none"),
            (["--model", "self-reference:tiny", "--dataset", "mvtec", "--root", str(data["mvtec"]), "--shots", "1"],
             "the zero-shot and self-reference baselines take none"),
            (["--model", "M", "--dataset", "mvtec", "--root", "R", "--shot-seeds", "1"], "--shot-seeds needs --shots"),
            (["--model", "M", "--dataset", "mvtec", "--root", "R", "--shots", "-1"], "--shots must be >= 0")):
        with pytest.raises(SystemExit) as exit_info:
            ev.main([*argv, "--quiet", "--out", str(cwd.parent / "o")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err, argv
    assert not (cwd.parent / "o" / "report.md").exists()


def test_evaluate_card_writes_the_measured_results_into_the_model_folder(data, cwd, tmp_path):
    import shutil

    from huggingface_hub import ModelCard

    model = tmp_path / "model"
    shutil.copytree(data["model"], model)
    out = cwd.parent / "carded"
    with pytest.raises(SystemExit):  # mvtec_format needs an id to file the results under
        ev.main(["--model", str(model), "--dataset", "mvtec_format", "--root", str(data["mvtec"] / "plate"),
                 "--card", "--out", str(out), "--quiet"])
    ev.main(["--model", str(model), "--dataset", "mvtec", "--root", str(data["mvtec"]), "--card",
             "--card-name", "tiny MVTec tree", "--out", str(out), "--quiet", "--no-plots"])
    report = json.loads((out / "report.json").read_text())
    card = ModelCard.load(model / "README.md")
    results = {r.metric_name: r for r in card.data.eval_results}
    assert results["I-AUROC (S'), pass 2"].metric_value == pytest.approx(round(100 * report["mean"]["pass2"]["image_auroc"], 1))
    assert results["answer agreement (R'), pass 2"].metric_value == pytest.approx(
        round(100 * report["mean"]["answers"]["pass2"]["agreement"], 1))
    assert {r.dataset_type for r in card.data.eval_results} == {"mvtec"}
    assert report["command"] in card.text
