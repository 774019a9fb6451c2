"""What a detection takes and gives back, without torch: shared by `SIADModel.detect`, the baselines
(`siad.baseline`) and the ONNX runtime (`siad.deploy`), which must import no torch.

- `DetectionResult`: one image's maps, scores, answers, verdict and mode.
- `detection_inputs`: the arguments of `detect` as one entry per image (class names checked).
- `normalise_class_name`, `check_class_name`: class names as SIAD compares them.
- `ZERO_SHOT`, `shot_mode`: what detection with k few-shot references is called.
- `ZERO_SHOT_PREFIX`, `SELF_REFERENCE_PREFIX`, `PATCHCORE_PREFIX`: the model specs of the baselines.
- `check_finite_maps`: a non-finite map is an error, never a score.
- The detect loop of every detector (`SIADModel`, the baselines, `siad.deploy.ExportedDetector`):
  `detect_arguments` checks what `detect` was given, `detect_in_batches` runs one batch after another
  (with an optional progress bar) and `batch_results` turns a batch's maps and scores into results at
  each image's own size.
- `Detector`: what evaluation, calibration, prediction and the app run; `SIADModel` and every baseline
  (`siad.baseline`) implement it in full.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from siad.image import map_to_original

if TYPE_CHECKING:  # pragma: no cover - typing only: this module imports no torch
    from siad.config import SIADConfig
    from siad.reference_bank import ReferenceBank

ZERO_SHOT = "zero-shot"
# The model specs of the command lines (`siad.baseline.load_detector`) that name an untrained baseline
# rather than a SIAD model folder or Hub id: the prefix, then the encoder's source.
ZERO_SHOT_PREFIX = "zero-shot:"
SELF_REFERENCE_PREFIX = "self-reference:"
PATCHCORE_PREFIX = "patchcore:"
NON_FINITE_MAP = ("the model produced a non-finite anomaly map (NaN or infinity): its weights are corrupt (e.g. a "
                  "training run that diverged); no score can be given")


@dataclass
class DetectionResult:
    """The result of `SIADModel.detect` (or `siad.deploy.ExportedDetector.detect`) for one image.

    anomaly_map: H x W float32 in [0, 1] at the original image's size (the refined map M' when
        self-improvement ran, else M); beyond `config.map.max_map_pixels` pixels (4.2 MP by default) at
        the largest smaller size of the same aspect ratio (`siad.image.map_size`), so that a huge
        image does not give huge maps; score: its image score in [0, 1]; answer: the refined
        response R' (None when chat=False); initial_*: pass 1 (M, S, R); is_anomalous: score >= the
        model's threshold; mode: "zero-shot", or "k-shot" (e.g. "4-shot") when the maps were fused
        with a bank of k normal references of the class (`references=` of `detect`).
    """

    anomaly_map: np.ndarray
    score: float
    answer: str | None
    initial_map: np.ndarray
    initial_score: float
    initial_answer: str | None
    is_anomalous: bool
    class_name: str
    mode: str = ZERO_SHOT


def shot_mode(num_shots: int) -> str:
    """How detection with `num_shots` references is called: "zero-shot" (0) or "k-shot" (e.g. "4-shot")."""
    if not isinstance(num_shots, int) or isinstance(num_shots, bool) or num_shots < 0:
        raise ValueError(f"the number of shots must be an integer >= 0, got {num_shots!r}")
    return ZERO_SHOT if num_shots == 0 else f"{num_shots}-shot"


def normalise_class_name(name: str) -> str:
    """A class name as SIAD compares them: surrounding and repeated whitespace removed."""
    return " ".join(name.split())


def check_class_name(name: Any) -> str:
    """A class name argument: a non-empty string, returned whitespace-normalised (ValueError otherwise)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"the class name must be a non-empty string, got {name!r}")
    return normalise_class_name(name)


def detection_inputs(images: Any, class_names: Any, descriptions: Any = None
                     ) -> tuple[list, list[str], list[str]]:
    """The arguments of `detect` as three lists of one entry per image.

    One image may be given alone; a single class name or description given as a plain string applies
    to every image; lists must have one entry per image. Class names are checked and their whitespace
    normalised; a missing or blank description is returned as "".
    """
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ValueError("images is empty")
    names = _per_image(class_names, len(items), "class_names")
    descs = _per_image("" if descriptions is None else descriptions, len(items), "descriptions")
    for desc in descs:
        if desc is not None and not isinstance(desc, str):
            raise ValueError(f"a description must be a string, got {type(desc).__name__}")
    return items, [check_class_name(n) for n in names], [(d or "").strip() for d in descs]


def _per_image(value: Any, count: int, name: str) -> list:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        return [value] * count
    if len(value) != count:
        entries = "1 entry" if len(value) == 1 else f"{len(value)} entries"
        raise ValueError(f"{name} has {entries} for {count} images; give one per image "
                         "(or a single string for all)")
    return list(value)


def check_finite_maps(maps: np.ndarray) -> None:
    """Raise `FloatingPointError` when maps hold NaN or infinity: such a score must never be read as
    "normal" (NaN >= threshold is False)."""
    if not np.isfinite(maps).all():
        raise FloatingPointError(NON_FINITE_MAP)


def detect_arguments(images: Any, class_names: Any, descriptions: Any, *, batch_size: int,
                     score_smoothing_sigma: float | None) -> tuple[list, list[str], list[str]]:
    """What every `detect` checks before any work, in this order: the smoothing sigma (None or >= 0), the
    images, class names and descriptions (`detection_inputs`: one entry per image), the batch size."""
    if score_smoothing_sigma is not None and not score_smoothing_sigma >= 0:
        raise ValueError(f"score_smoothing_sigma must be >= 0, got {score_smoothing_sigma!r}")
    items, names, descs = detection_inputs(images, class_names, descriptions)
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    return items, names, descs


def detect_in_batches(count: int, batch_size: int, detect_batch: Callable[[slice], list[DetectionResult]], *,
                      progress: bool = False) -> list[DetectionResult]:
    """The detect loop: `detect_batch(chunk)` for the consecutive slices of `batch_size` of `count`
    images, their results in order; progress=True shows a bar when there is more than one batch."""
    starts: Iterable[int] = range(0, count, batch_size)
    if progress and count > batch_size:
        starts = tqdm(starts, desc="detect", unit="batch")
    results: list[DetectionResult] = []
    for start in starts:
        results.extend(detect_batch(slice(start, start + batch_size)))
    return results


def batch_results(config: "SIADConfig", sizes: Sequence[tuple[int, int]], class_names: Sequence[str],
                  modes: Sequence[str], maps: Any, scores: Any, *, initial: tuple[Any, Any] | None = None,
                  answers: Sequence[str] | None = None,
                  initial_answers: Sequence[str] | None = None) -> list[DetectionResult]:
    """One `DetectionResult` per image of a batch: maps B x S x S (numpy or torch) and scores B of the final
    pass, brought to each image's size (`siad.image.map_to_original`: config.vision.resize_mode,
    config.map.max_map_pixels); initial: pass 1's maps and scores when a second pass ran (None: the result's
    initial map is its map); the verdict compares the score with config.map.threshold."""
    mode, cap = config.vision.resize_mode, config.map.max_map_pixels
    results = []
    for b, size in enumerate(sizes):
        first_map = map_to_original((maps if initial is None else initial[0])[b], size, mode, cap)
        final_map = first_map if initial is None else map_to_original(maps[b], size, mode, cap)
        score = float(scores[b])
        results.append(DetectionResult(
            anomaly_map=final_map, score=score, answer=None if answers is None else answers[b],
            initial_map=first_map, initial_score=score if initial is None else float(initial[1][b]),
            initial_answer=None if initial_answers is None else initial_answers[b],
            is_anomalous=score >= config.map.threshold, class_name=class_names[b], mode=modes[b]))
    return results


@runtime_checkable
class Detector(Protocol):
    """A detector, as evaluation, calibration, prediction and the app use it. `SIADModel` and every
    baseline (`siad.baseline`) implement all of it.

    config: the SIADConfig that describes its input, maps and verdict (image size, normalisation,
        resize mode, threshold, smoothing); name: what reports call it;
    can_answer: whether it answers in words (an LLM runs, so self-improvement's pass 2 exists);
    takes_references: whether it takes few-shot references (`build_references` then makes a bank;
        without, `build_references` raises a ValueError saying so);
    detect: one `DetectionResult` per image (maps, scores, answers or None, verdict, mode);
    build_references: the bank of k normal images of a class, for `detect(..., references=bank)`.
    """

    config: "SIADConfig"
    name: str

    @property
    def can_answer(self) -> bool: ...

    @property
    def takes_references(self) -> bool: ...

    def detect(self, images: Any, class_names: Any, descriptions: Any = None, chat: bool = True,
               self_improve: bool = True, batch_size: int = 8, progress: bool = False,
               score_smoothing_sigma: float | None = None, references: Any = None) -> list[DetectionResult]: ...

    def build_references(self, images: Sequence[Any], class_name: str, *, seed: int = 0,
                         batch_size: int = 8) -> "ReferenceBank": ...
