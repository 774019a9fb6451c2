"""One batch of an evaluation: detect its images, reduce its maps at once to their `PixelState`s (so
memory holds one batch at full size), keep its records and qualitative rows; and one class's numbers
from its batches. Also the batch's form on disk (`encode_batch`, `decode_batch`: resumption) and the
evaluation geometry (`resize_map`, `eval_mask`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from siad.data.masks import load_mask, resize_mask
from siad.data.sample import Sample
from siad.detection import Detector
from siad.evaluation.metrics import ClassInputs, class_metrics
from siad.evaluation.results import MAP_SYMBOL, PASSES, SCORE_SYMBOL, AnswerStats, ClassResult, EvalSettings, ImageRecord
from siad.image import load_rgb
from siad.metrics import PixelMetricAccumulator, PixelState
from siad.prompts import describe
from siad.runner import BatchItem, from_json_array, json_array
from siad.visualize import QualitativeRow


@dataclass
class EvalBatch:
    """What one batch of an evaluation gives: its images' records (in order), the `PixelState` of its
    maps for each pass (classes with masks), and the qualitative rows of its images that were picked."""

    records: list[ImageRecord]
    states: dict[str, PixelState]
    rows: list[QualitativeRow]


def resize_map(anomaly_map: np.ndarray, size: int) -> np.ndarray:
    """An H x W float map -> size x size float32: bilinear (align_corners=False), antialiased when shrinking."""
    # deferred: only --eval-size resizes maps, and `import siad.evaluate` stays without torch
    import torch
    import torch.nn.functional as F  # (the same deferral)

    source = torch.from_numpy(np.ascontiguousarray(anomaly_map, dtype=np.float32))[None, None]
    if source.shape[-2:] == (size, size):
        return source[0, 0].numpy().copy()
    out = F.interpolate(source, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].numpy()


def eval_mask(mask_path: Path | None, shape: tuple[int, int]) -> np.ndarray:
    """The ground truth at `shape` (H, W): the mask file resized with nearest neighbours, or all
    False for an image without a mask (a normal image)."""
    if mask_path is None:
        return np.zeros(shape, dtype=bool)
    mask = load_mask(mask_path)
    return mask if mask.shape == tuple(shape) else resize_mask(mask, tuple(shape))


def evaluate_batch(detector: Detector, samples: list[Sample], items: list[BatchItem], name: str, dataset: str,
                   settings: EvalSettings, passes: tuple[str, ...], chat: bool, has_masks: bool,
                   shown: set[Path], bank: Any = None) -> EvalBatch:
    """Detect one batch of one class (`items`: its images from the DataLoader) and reduce it."""
    unreadable = [item for item in items if item.image is None]
    if unreadable:
        raise ValueError(f"cannot read {unreadable[0].path}: {unreadable[0].error}")
    few_shot = {} if bank is None else {"references": bank}  # the zero-shot baseline takes none
    results = detector.detect([item.image for item in items], name, descriptions=describe(name, dataset), chat=chat,
                              self_improve=settings.self_improve, batch_size=len(items),
                              score_smoothing_sigma=settings.smooth_sigma, **few_shot)
    accumulators = {p: PixelMetricAccumulator() for p in passes} if has_masks else {}
    records: list[ImageRecord] = []
    rows: list[QualitativeRow] = []
    for sample, result in zip(samples, results):
        maps = {"pass1": result.initial_map, "pass2": result.anomaly_map}
        scores = {"pass1": float(result.initial_score), "pass2": float(result.score)}
        texts = {"pass1": result.initial_answer, "pass2": result.answer}
        if has_masks:
            shape = (settings.eval_size,) * 2 if settings.eval_size else maps["pass1"].shape
            mask = eval_mask(sample.mask_path, shape)
            for p in passes:
                accumulators[p].update(mask, resize_map(maps[p], settings.eval_size) if settings.eval_size else maps[p])
        records.append(ImageRecord(
            path=str(sample.image_path), class_name=name, defect_type=sample.defect_type, label=sample.label,
            scores={p: scores[p] for p in passes}, answers={p: texts[p] for p in passes} if chat else {}))
        if sample.image_path in shown:
            rows.append(_qualitative_row(sample, {p: maps[p] for p in passes}, scores, settings))
    return EvalBatch(records=records, states={p: a.state() for p, a in accumulators.items()}, rows=rows)


def class_result(name: str, samples: list[Sample], parts: list[EvalBatch], passes: tuple[str, ...], chat: bool,
                 has_masks: bool, threshold: float) -> tuple[ClassResult, list[ImageRecord], list[QualitativeRow]]:
    """One class's numbers from its batches' results (in order): the metrics (`siad.evaluation.metrics`)
    from the scores and the merged `PixelState`s, answer statistics from the records."""
    records = [record for part in parts for record in part.records]
    labels = np.array([r.label for r in records])
    answers = {p: AnswerStats() for p in passes} if chat else {}
    for record in records:
        for p in answers:
            answers[p].add(record.answers[p], record.label, record.scores[p] >= threshold)
    metrics = {p: class_metrics(ClassInputs(
        labels=labels, scores=np.array([r.scores[p] for r in records]),
        pixels=PixelState.merge([part.states[p] for part in parts]) if has_masks else None)) for p in passes}
    n_anomalous = int(labels.sum())
    result = ClassResult(name=name, n_images=len(samples), n_normal=len(samples) - n_anomalous,
                         n_anomalous=n_anomalous, has_masks=has_masks, metrics=metrics, answers=answers)
    return result, records, [row for part in parts for row in part.rows]


def encode_batch(batch: EvalBatch) -> dict[str, np.ndarray]:
    """An `EvalBatch` as named arrays (for `siad.runner.DiskStore`; `decode_batch` reads it back)."""
    arrays: dict[str, np.ndarray] = {"records": json_array([asdict(r) for r in batch.records])}
    for p, state in batch.states.items():
        arrays.update({f"{p}.{key}": value for key, value in state.to_arrays().items()})
    rows = []
    for i, row in enumerate(batch.rows):
        rows.append({"caption": row.caption, "maps": list(row.maps), "mask": row.mask is not None})
        arrays[f"row{i}.image"] = row.image
        if row.mask is not None:
            arrays[f"row{i}.mask"] = row.mask
        arrays.update({f"row{i}.map{j}": m for j, m in enumerate(row.maps.values())})
    arrays["rows"] = json_array(rows)
    return arrays


def decode_batch(arrays: Mapping[str, np.ndarray]) -> EvalBatch:
    records = [ImageRecord(**r) for r in from_json_array(arrays["records"])]
    states = {p: PixelState.from_arrays({key.split(".", 1)[1]: value for key, value in arrays.items()
                                         if key.startswith(p + ".")})
              for p in PASSES if f"{p}.counts" in arrays}
    rows = [QualitativeRow(caption=r["caption"], image=arrays[f"row{i}.image"],
                           mask=arrays[f"row{i}.mask"] if r["mask"] else None,
                           maps={m: arrays[f"row{i}.map{j}"] for j, m in enumerate(r["maps"])})
            for i, r in enumerate(from_json_array(arrays["rows"]))]
    return EvalBatch(records=records, states=states, rows=rows)


def qualitative_picks(groups: dict[str, list[Sample]], total: int) -> dict[str, set[Path]]:
    """The images of each class shown in the qualitative grid: up to `total` in all, an equal quota per
    class (`_pick_qualitative`), classes in order."""
    quota = max(1, math.ceil(total / len(groups))) if total > 0 else 0
    picks: dict[str, set[Path]] = {}
    taken = 0
    for name, group in groups.items():
        picks[name] = _pick_qualitative(group, min(quota, total - taken))
        taken += len(picks[name])
    return picks


def _pick_qualitative(samples: list[Sample], count: int) -> set[Path]:
    """Up to `count` anomalous images of a class for the qualitative grid, one defect type after
    the other (the first image of each type, then the second, ...), so that the rows differ."""
    by_type: dict[str, list[Sample]] = {}
    for sample in samples:
        if sample.label == 1:
            by_type.setdefault(sample.defect_type, []).append(sample)
    picked: list[Path] = []
    depth = 0
    while len(picked) < count and any(depth < len(group) for group in by_type.values()):
        picked += [group[depth].image_path for group in by_type.values() if depth < len(group)]
        depth += 1
    return set(picked[:count])


def _qualitative_row(sample: Sample, maps: dict[str, np.ndarray], scores: dict[str, float],
                     settings: EvalSettings) -> QualitativeRow:
    size = settings.eval_size or 224
    image = np.asarray(Image.fromarray(load_rgb(sample.image_path).rgb).resize((size, size), Image.Resampling.BILINEAR))
    mask = eval_mask(sample.mask_path, (size, size)) if sample.mask_path is not None else None
    caption = f"{sample.class_name} / {sample.defect_type}\n" + "  ".join(
        f"{SCORE_SYMBOL[p]}={scores[p]:.3f}" for p in maps)
    named = {f"pass {p[-1]} map ({MAP_SYMBOL[p]})": resize_map(m, size) for p, m in maps.items()}
    return QualitativeRow(caption=caption, image=image, mask=mask, maps=named)
