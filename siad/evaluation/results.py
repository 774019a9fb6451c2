"""What an evaluation holds: its settings, the numbers of each class and of the dataset, each image's
record, and the warning for metrics that are undefined.

- `PASSES` and their symbols: pass 1 gives S, M, R; pass 2 (self-improvement) S', M', R'.
- `EvalSettings`: how an evaluation runs (the defaults are the paper's protocol).
- `AnswerStats`: the yes/no answers against the labels and against the verdicts.
- `ClassResult`, `ImageRecord`, `DatasetEvaluation`: one class's numbers, one image, one report.
- `UndefinedMetricWarning`, `undefined_image_metrics`, `warn_undefined`: classes of one label only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

from siad.prompts import answer_is_anomalous

PASSES: tuple[str, str] = ("pass1", "pass2")
SCORE_SYMBOL = {"pass1": "S", "pass2": "S'"}
MAP_SYMBOL = {"pass1": "M", "pass2": "M'"}
ANSWER_SYMBOL = {"pass1": "R", "pass2": "R'"}


@dataclass(frozen=True)
class EvalSettings:
    """How an evaluation runs (see `siad.evaluate`'s docstring); the defaults are the paper's protocol."""

    eval_size: int = 0
    smooth_sigma: float = 0.0
    chat: bool = True
    self_improve: bool = True
    batch_size: int = 8
    split: str = "test"
    qualitative: int = 8
    progress: bool = True
    shots: int = 0
    shot_seeds: tuple[int, ...] = (0,)


@dataclass
class AnswerStats:
    """Yes/no answers against the labels (`correct`) and against the verdict of the same pass's score
    (`agree`: the answer says yes exactly when the score reaches the threshold); `neither` answers
    (no yes, no no) count as wrong and as disagreeing."""

    total: int = 0
    correct: int = 0
    neither: int = 0
    agree: int = 0

    def add(self, answer: str | None, label: int, verdict: bool) -> None:
        says = answer_is_anomalous(answer or "")
        self.total += 1
        if says is None:
            self.neither += 1
            return
        self.correct += says == bool(label)
        self.agree += says == bool(verdict)

    @property
    def wrong(self) -> int:
        return self.total - self.correct

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None

    @property
    def agreement(self) -> float | None:
        return self.agree / self.total if self.total else None

    def as_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "agreement": self.agreement, "correct": self.correct, "wrong": self.wrong,
                "neither": self.neither, "agree": self.agree, "total": self.total}


@dataclass
class ClassResult:
    """The numbers of one class: counts, metrics[pass][metric] (None: undefined) and answers[pass]."""

    name: str
    n_images: int
    n_normal: int
    n_anomalous: int
    has_masks: bool
    metrics: dict[str, dict[str, float | None]]
    answers: dict[str, AnswerStats] = field(default_factory=dict)


@dataclass
class ImageRecord:
    """One test image: its label and, per pass, its score and answer."""

    path: str
    class_name: str
    defect_type: str
    label: int
    scores: dict[str, float]
    answers: dict[str, str | None]


@dataclass
class DatasetEvaluation:
    """Everything one dataset's report holds."""

    dataset: str
    root: str
    model: str
    passes: tuple[str, ...]
    chat: bool
    settings: dict[str, Any]
    classes: list[ClassResult]
    mean: dict[str, dict[str, float | None]]
    mean_answers: dict[str, dict[str, Any]]
    records: list[ImageRecord]
    qualitative: list[Any]  # siad.visualize.QualitativeRow
    notes: list[str]
    seconds: float = 0.0
    processes: int = 1  # how many processes shared the images (the numbers do not depend on it)
    shots: int = 0
    seed: int | None = None  # the seed of the references' draw (None: zero-shot, or the mean over seeds)
    references: dict[str, list[str]] = field(default_factory=dict)  # class -> the reference images
    per_seed: list["DatasetEvaluation"] = field(default_factory=list)  # few-shot: each seed's evaluation

    @property
    def n_images(self) -> int:
        """The test images of all classes."""
        return sum(c.n_images for c in self.classes)


class UndefinedMetricWarning(UserWarning):
    """A metric of a class is undefined (one label only) and left out of the means."""


def undefined_image_metrics(classes: Sequence[ClassResult]) -> list[str]:
    """The classes whose image metrics are undefined: only normal or only anomalous images (image AUROC
    needs both; AP and F1-max would be 1 whatever the scores without normal images)."""
    return [c.name for c in classes if c.n_normal == 0 or c.n_anomalous == 0]


def one_label_counts(classes: Sequence[ClassResult], names: Sequence[str]) -> str:
    """"gear: 0 normal, 3 anomalous, ..." for the named classes."""
    return ", ".join(f"{c.name}: {c.n_normal} normal, {c.n_anomalous} anomalous" for c in classes if c.name in names)


def warn_undefined(evaluation: DatasetEvaluation) -> None:
    """A warning naming the classes whose image metrics are undefined and left out of the means."""
    undefined = undefined_image_metrics(evaluation.classes)
    if undefined:
        warnings.warn(f"{evaluation.dataset}: image AUROC, AP and F1-max are undefined for {len(undefined)} class(es) "
                      f"with one label only ({one_label_counts(evaluation.classes, undefined)}); reported as "
                      f"undefined and left out of the means", UndefinedMetricWarning, stacklevel=2)
