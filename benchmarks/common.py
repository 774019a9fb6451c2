"""What the benchmark scripts share: one evaluation of a detector on an MVTec-layout test set, by the
evaluation code of `siad.evaluate` (the same protocol, metrics and few-shot draws as `siad evaluate`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from siad.data import load_dataset
from siad.evaluate import EvalSettings, evaluate_few_shot, evaluate_samples


@dataclass
class Scores:
    """Mean over classes of one evaluation (pass 1 unless `passes` says 2), and its speed."""

    image_auroc: float
    pixel_auroc: float | None
    images: int
    seconds: float
    accuracy: float | None = None
    agreement: float | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


def evaluate_on(detector: Any, root: Path, *, shots: int = 0, seeds: Sequence[int] = (0,), eval_size: int = 224,
                chat: bool = False, batch_size: int = 8, final_pass: bool = False) -> Scores:
    """`detector` on the test split of the MVTec-layout set at `root` (few-shot references drawn from its
    train split with each seed, averaged over the seeds), maps scored at eval_size x eval_size."""
    settings = EvalSettings(eval_size=eval_size, chat=chat, batch_size=batch_size, qualitative=0, progress=False,
                            shots=shots, shot_seeds=tuple(seeds) if shots else (0,))
    samples = load_dataset("mvtec_format", root, "test")
    start = time.perf_counter()
    if shots:
        train = load_dataset("mvtec_format", root, "train")
        evaluation = evaluate_few_shot(detector, samples, train, dataset=root.name, settings=settings)
    else:
        evaluation = evaluate_samples(detector, samples, dataset=root.name, settings=settings)
    seconds = time.perf_counter() - start
    assert evaluation is not None
    which = evaluation.passes[-1] if final_pass else evaluation.passes[0]
    mean = evaluation.mean[which]
    answers = evaluation.mean_answers.get(which, {}) if evaluation.chat else {}
    runs = max(1, len(seeds)) if shots else 1
    return Scores(image_auroc=mean["image_auroc"], pixel_auroc=mean.get("pixel_auroc"), images=len(samples) * runs,
                  seconds=seconds, accuracy=answers.get("accuracy"), agreement=answers.get("agreement"))


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"
