"""The notes of a report: what ran (passes, answers, references), at which resolution and smoothing,
what is undefined and why (`evaluation_notes`)."""

from __future__ import annotations

from siad.detection import Detector
from siad.evaluation.metrics import AUPRO_FPR_LIMIT
from siad.evaluation.results import DatasetEvaluation, EvalSettings, one_label_counts, undefined_image_metrics


def baseline_description(detector: Detector) -> str:
    """What an untrained baseline is, for the notes of its reports."""
    from siad.baseline import BackboneBaseline  # deferred: siad.baseline imports torch and the encoders

    if isinstance(detector, BackboneBaseline):
        vision = detector.config.vision
        if detector.method == "self-reference":
            return (f"Self-reference baseline ({vision.backbone} stages {list(vision.stages)}, no training: each "
                    f"patch against the same image's patches outside its neighbourhood)")
        if detector.method == "patchcore":
            return (f"PatchCore-style baseline ({vision.backbone} stages {list(vision.stages)}, no training: "
                    f"each patch's nearest-neighbour distance to the class's normal references)")
    return "Zero-shot baseline (ImageBind + prompt ensemble, no training, WinCLIP-style)"


def evaluation_notes(detector: Detector, settings: EvalSettings, evaluation: DatasetEvaluation,
                     can_answer: bool) -> list[str]:
    """The notes of one evaluation (`can_answer`: the detector has an LLM, `Detector.can_answer`)."""
    notes = []
    if not can_answer:
        notes.append(f"{baseline_description(detector)}: no LLM, so pass 1 only and no answers.")
    elif not settings.chat:
        notes.append("--map-only: the LLM did not run, so there is no self-improvement pass (pass 2, S' and M', "
                     "needs the LLM's answer R) and no answers. Leave --map-only out for the paper's protocol.")
    elif not settings.self_improve:
        notes.append("--no-self-improve: pass 1 only (S, M and the answer R).")
    elif len(evaluation.passes) == 1:
        notes.append("The model's config switches self-improvement off (use_self_improvement=false): pass 1 only.")
    if evaluation.shots:
        config = detector.config
        notes.append(f"{evaluation.shots}-shot: {evaluation.shots} normal images of each class drawn from the train "
                     f"split with the seed (no test image), one reference bank per class "
                     f"({config.map.few_shot_features} features, at most {config.map.max_bank_patches} rows per stage); both "
                     f"passes fuse their stage maps with the reference maps, weight {config.map.few_shot_weight:g} "
                     "(not the paper's protocol, which is zero-shot). The references are listed in report.json.")
    size = settings.eval_size
    where = "each image's original resolution" if size == 0 else (
        f"{size} x {size} (maps resized bilinearly, masks with nearest neighbours)")
    if any(c.has_masks for c in evaluation.classes):
        notes.append(f"Pixel metrics at {where}; AUPRO up to FPR {AUPRO_FPR_LIMIT}.")
    sigma = evaluation.settings["smooth_sigma"]
    notes.append("No smoothing of the maps before scoring (the paper's protocol)." if sigma == 0 else
                 f"Gaussian smoothing sigma {sigma:g} on the map before scoring (not the paper's protocol).")
    no_masks = [c.name for c in evaluation.classes if not c.has_masks]
    if no_masks:
        notes.append(f"No masks for {', '.join(no_masks)}: pixel metrics '-' (image metrics only).")
    undefined = undefined_image_metrics(evaluation.classes)
    if undefined:
        notes.append(f"Image AUROC, AP and F1-max undefined for {', '.join(undefined)} (one label only: "
                     f"{one_label_counts(evaluation.classes, undefined)}); the mean leaves them out.")
    if evaluation.chat:
        notes.append("Answer accuracy: the answer's yes/no (answer_is_anomalous) against the label; agreement: the "
                     f"answer's yes/no against the verdict of the same pass (score >= the model's threshold "
                     f"{detector.config.map.threshold:.3f}); an answer that says neither counts as wrong and as disagreeing.")
        model_sigma = evaluation.settings["model_smooth_sigma"]
        if model_sigma != sigma:
            notes.append(f"The model's threshold was set for smoothing sigma {model_sigma:g}; the scores here use "
                         f"{sigma:g}, so agreement compares the answers with verdicts the model would not give.")
    return notes
