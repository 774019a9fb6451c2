"""The parts of siad.evaluation on their own: the metric registry (names, directions, when a metric is
undefined, adding one) and the report renderers (one per format, for one dataset and for a summary),
on evaluations built here by hand (no model)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from siad.evaluation.metrics import IMAGE, METRICS, PIXEL, ClassInputs, Metric, class_metrics, metric, metric_names
from siad.evaluation.reports import CSV_COLUMNS, REPORT_FORMATS, markdown_report, write_report, write_summary
from siad.evaluation.results import AnswerStats, ClassResult, DatasetEvaluation
from siad.metrics import PixelState, image_auroc


def test_the_metric_registry_is_the_papers_table_in_order():
    assert metric_names() == ("image_auroc", "pixel_auroc", "aupro", "image_ap", "image_f1_max")
    assert [m.title for m in METRICS] == ["I-AUROC", "P-AUROC", "AUPRO", "AP", "F1-max"]
    assert [m.level for m in METRICS] == [IMAGE, PIXEL, PIXEL, IMAGE, IMAGE]
    assert all(m.higher_is_better for m in METRICS)
    assert CSV_COLUMNS[8:13] == metric_names()  # the report's columns follow the registry
    assert metric("aupro").title == "AUPRO"
    with pytest.raises(KeyError, match="no metric 'iou'"):
        metric("iou")
    with pytest.raises(ValueError, match="level"):
        Metric("x", "X", "region", True, lambda i: 0.0)


def _pixels(seed: int = 0) -> PixelState:
    rng = np.random.default_rng(seed)
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[1, 2:5, 2:5] = True
    return PixelState.of(masks, rng.random((2, 8, 8)).astype(np.float32))


def test_metrics_are_undefined_where_the_protocol_says():
    labels, scores = np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.4, 0.5])
    values = class_metrics(ClassInputs(labels, scores, _pixels()))
    assert values["image_auroc"] == image_auroc(labels, scores) == 0.75
    assert all(v is not None for v in values.values())
    # no masks: pixel metrics undefined, image metrics kept
    no_masks = class_metrics(ClassInputs(labels, scores, None))
    assert no_masks["pixel_auroc"] is None and no_masks["aupro"] is None and no_masks["image_ap"] == values["image_ap"]
    # one label only: every image metric undefined (AP and F1-max would be 1 whatever the scores), pixels kept
    one_label = class_metrics(ClassInputs(np.array([1, 1]), np.array([0.2, 0.3]), _pixels()))
    assert [one_label[m] for m in ("image_auroc", "image_ap", "image_f1_max")] == [None, None, None]
    assert one_label["pixel_auroc"] == values["pixel_auroc"]
    # a metric that raises ValueError (here: no anomalous pixel) is undefined
    normal_only = PixelState.of(np.zeros((1, 4, 4), bool), np.random.default_rng(1).random((1, 4, 4)))
    assert class_metrics(ClassInputs(labels, scores, normal_only))["pixel_auroc"] is None


def test_a_metric_is_one_object_in_a_list():
    mean_score = Metric("mean_score", "mean S", IMAGE, False, lambda i: float(np.mean(i.scores)))
    values = class_metrics(ClassInputs(np.array([0, 1]), np.array([0.25, 0.75]), None), (*METRICS, mean_score))
    assert values["mean_score"] == 0.5 and list(values)[-1] == "mean_score"


def _evaluation(dataset: str = "toy", image_auroc_value: float | None = 0.5) -> DatasetEvaluation:
    metrics = {"pass1": {"image_auroc": image_auroc_value, "pixel_auroc": 0.875, "aupro": None, "image_ap": 0.25,
                         "image_f1_max": 1.0}}
    stats = AnswerStats(total=4, correct=3, neither=1, agree=2)
    classes = [ClassResult("gear", 4, 2, 2, True, metrics, {"pass1": stats})]
    return DatasetEvaluation(dataset=dataset, root="/data", model="m", passes=("pass1",), chat=True,
                             settings={"split": "test"}, classes=classes, mean=metrics,
                             mean_answers={"pass1": stats.as_dict()}, records=[], qualitative=[], notes=["a note"],
                             seconds=1.25)


def test_each_format_renders_one_evaluation(tmp_path):
    assert [f.filename for f in REPORT_FORMATS] == ["report.md", "report.json", "report.csv"]
    md = markdown_report(_evaluation(), "cmd", plots=False)
    assert "| class | images | I-AUROC (S) | P-AUROC (M) | AUPRO (M) | AP (S) | F1-max (S) | acc. (R) | agree (R) |" in md
    assert "| gear | 4 | 50.0 | 87.5 | - | 25.0 | 100.0 | 75.0 | 50.0 |" in md
    assert "| **mean** | 4 | 50.0 | 87.5 | - | 25.0 | 100.0 | 75.0 | 50.0 |" in md
    assert "Answers that say neither yes nor no (counted as wrong): 1 (R)." in md and "- a note" in md
    written = write_report(_evaluation(), tmp_path / "one", "cmd", plots=False)
    assert [p.name for p in written] == ["report.md", "report.json", "report.csv", "scores.csv"]
    data = json.loads((tmp_path / "one" / "report.json").read_text())
    assert data["metrics"] == list(metric_names()) and data["classes"]["gear"]["pass1"]["aupro"] is None
    assert data["mean"]["answers"]["pass1"]["accuracy"] == 0.75 and data["command"] == "cmd"
    raw = (tmp_path / "one" / "report.csv").read_bytes()
    assert raw.count(b"\r\n") == 3  # header, gear, mean: the csv module's line ends
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert [(r["class"], r["image_auroc"], r["aupro"], r["answers_neither"]) for r in rows] == [
        ("gear", "0.5", "", "1"), ("mean", "0.5", "", "1")]


def test_each_format_renders_a_summary(tmp_path):
    evaluations = [_evaluation("mpdd"), _evaluation("visa", None)]
    written = write_summary(evaluations, tmp_path, "cmd")
    assert [p.name for p in written] == ["report.md", "report.json", "report.csv"]
    md = (tmp_path / "report.md").read_text()
    assert "| mpdd | m | 4 | 50.0 |" in md and "| visa | m | 4 | - |" in md
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["protocol"] == "uzad" and data["mapping"]["visa"] == "mvtec" and set(data["datasets"]) == {"mpdd", "visa"}
    with (tmp_path / "report.csv").open(newline="") as handle:
        assert [(r["dataset"], r["class"]) for r in csv.DictReader(handle)] == [("mpdd", "mean"), ("visa", "mean")]
