"""`--card`: the measured results of an evaluation, written into the evaluated model folder's card
(`siad.model_card.write_card_results`: its model-index and a results table). Nothing but measured
results ever goes into a card's metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from siad.evaluation.metrics import METRICS, PIXEL
from siad.evaluation.results import ANSWER_SYMBOL, MAP_SYMBOL, SCORE_SYMBOL, DatasetEvaluation


@dataclass(frozen=True)
class CardEntry:
    """One dataset's results for one model folder: `dataset_type` is the id they are filed under,
    `dataset_name` its display name."""

    model: Path
    dataset_type: str
    dataset_name: str
    evaluation: DatasetEvaluation


def card_results(evaluation: DatasetEvaluation, dataset_type: str, dataset_name: str) -> dict[str, Any]:
    """One dataset's measured results in the shape `siad.model_card.write_card_results` takes: the mean
    over classes of every metric and, with answers, their accuracy and agreement, for each pass."""
    shots = f", {evaluation.shots}-shot (mean of {len(evaluation.per_seed)} seeds)" if evaluation.shots else ""
    metrics = []
    for p in evaluation.passes:
        label = f"pass {p[-1]}"
        for m in METRICS:
            symbol = MAP_SYMBOL[p] if m.level == PIXEL else SCORE_SYMBOL[p]
            metrics.append({"type": m.name, "name": f"{m.title} ({symbol}), {label}{shots}",
                            "value": evaluation.mean[p][m.name]})
        answers = evaluation.mean_answers.get(p, {})
        for key in ("accuracy", "agreement"):
            if answers.get(key) is not None:
                metrics.append({"type": f"answer_{key}", "name": f"answer {key} ({ANSWER_SYMBOL[p]}), {label}{shots}",
                                "value": answers[key]})
    suffix = f":{evaluation.shots}-shot" if evaluation.shots else ""
    return {"dataset_type": dataset_type + suffix, "dataset_name": dataset_name + (f" ({evaluation.shots}-shot)" if
            evaluation.shots else ""), "split": evaluation.settings["split"], "metrics": metrics}


def write_cards(entries: Sequence[CardEntry], command: str) -> list[Path]:
    """Each model folder's README.md gets the results measured on its weights, one entry per dataset
    (`siad.model_card.write_card_results`). Returns the cards written."""
    from siad.model_card import write_card_results  # deferred: siad.model_card imports siad.hub, which imports torch

    by_model: dict[Path, list[dict[str, Any]]] = {}
    for entry in entries:
        by_model.setdefault(entry.model, []).append(card_results(entry.evaluation, entry.dataset_type,
                                                                 entry.dataset_name))
    written = []
    for model, results in by_model.items():
        path = write_card_results(model, results, command=command)
        print(f"card: wrote {len(results)} measured result(s) into {path}")
        written.append(path)
    return written
