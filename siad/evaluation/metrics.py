"""The metrics an evaluation reports: a registry of `Metric` objects (name, title, level, direction),
as anomalib's `Evaluator` holds its metrics. The computations are `siad.metrics`'.

`METRICS` is the list every part reads (computation, means, the report columns and tables, the card):
adding a metric is one `Metric` in it. A metric's level says what it is computed from: "image" from
the image scores and labels (undefined, None, for a class of one label only: without normal images AP
and F1-max would be 1 whatever the scores), "pixel" from the maps and masks (`siad.metrics.PixelState`;
None for a class without masks, e.g. the medical sets). A metric that raises ValueError is undefined.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from siad.metrics import PixelState, average_precision, f1_max, image_auroc

AUPRO_FPR_LIMIT = 0.3
IMAGE = "image"
PIXEL = "pixel"


@dataclass(frozen=True)
class ClassInputs:
    """What the metrics of one class and pass are computed from: its images' labels (0/1) and scores, and
    the `PixelState` of its maps against its masks (None: the class has no masks)."""

    labels: np.ndarray
    scores: np.ndarray
    pixels: PixelState | None

    @property
    def one_label(self) -> bool:
        """Only normal or only anomalous images."""
        return bool(self.labels.min() == self.labels.max())


@dataclass(frozen=True)
class Metric:
    """One reported metric. name: its key in report.json and its report.csv column; title: its table
    header; level: IMAGE or PIXEL (see the module docstring); higher_is_better: its direction;
    compute: its value from a class's inputs (ValueError where undefined)."""

    name: str
    title: str
    level: str
    higher_is_better: bool
    compute: Callable[[ClassInputs], float]

    def __post_init__(self) -> None:
        if self.level not in (IMAGE, PIXEL):
            raise ValueError(f"a metric's level is {IMAGE!r} or {PIXEL!r}, got {self.level!r}")

    def value(self, inputs: ClassInputs) -> float | None:
        """The metric of one class, or None where it is undefined."""
        if (inputs.one_label if self.level == IMAGE else inputs.pixels is None):
            return None
        try:
            return float(self.compute(inputs))
        except ValueError:
            return None


def _pixels(inputs: ClassInputs) -> PixelState:
    assert inputs.pixels is not None  # Metric.value calls a pixel metric only with pixels
    return inputs.pixels


METRICS: tuple[Metric, ...] = (
    Metric("image_auroc", "I-AUROC", IMAGE, True, lambda i: image_auroc(i.labels, i.scores)),
    Metric("pixel_auroc", "P-AUROC", PIXEL, True, lambda i: _pixels(i).pixel_auroc()),
    Metric("aupro", "AUPRO", PIXEL, True, lambda i: _pixels(i).aupro(fpr_limit=AUPRO_FPR_LIMIT)),
    Metric("image_ap", "AP", IMAGE, True, lambda i: average_precision(i.labels, i.scores)),
    Metric("image_f1_max", "F1-max", IMAGE, True, lambda i: f1_max(i.labels, i.scores)),
)


def metric_names(metrics: Sequence[Metric] = METRICS) -> tuple[str, ...]:
    """The names of the metrics, in order (report.json's "metrics", report.csv's columns)."""
    return tuple(m.name for m in metrics)


def metric(name: str) -> Metric:
    """The registered metric of that name (KeyError otherwise)."""
    for candidate in METRICS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no metric {name!r}; the metrics are {metric_names()}")


def class_metrics(inputs: ClassInputs, metrics: Sequence[Metric] = METRICS) -> dict[str, float | None]:
    """{name: value or None} of every metric for one class and pass."""
    return {m.name: m.value(inputs) for m in metrics}
