"""Every detector implements `siad.detection.Detector` in full and behaves as its flags say; all run the
one detect loop (`siad.detection.detect_in_batches`)."""

import numpy as np
import pytest
import torch

from siad import SIADConfig, SIADModel
from siad.baseline import load_detector
from siad.config import SIADConfig as Config
from siad.detection import Detector, detect_in_batches
from siad.references import ReferenceBank

IMAGES = [np.random.default_rng(i).integers(0, 256, (40, 52, 3), dtype=np.uint8) for i in range(3)]


def _siad() -> SIADModel:
    torch.manual_seed(0)
    return SIADModel(SIADConfig.tiny()).eval()


@pytest.fixture(scope="module")
def detectors():
    return {"siad": _siad(), "zero-shot": load_detector("zero-shot:tiny"),
            "self-reference": load_detector("self-reference:tiny"), "patchcore": load_detector("patchcore:tiny")}


FLAGS = {  # name: (can_answer, takes_references)
    "siad": (True, True), "zero-shot": (False, False), "self-reference": (False, False), "patchcore": (False, True)}


@pytest.mark.parametrize("kind", sorted(FLAGS))
def test_every_detector_is_a_detector_and_behaves_as_its_flags_say(detectors, kind):
    detector = detectors[kind]
    assert isinstance(detector, Detector)
    assert isinstance(detector.config, Config) and isinstance(detector.name, str) and detector.name
    can_answer, takes_references = FLAGS[kind]
    assert (detector.can_answer, detector.takes_references) == (can_answer, takes_references)
    if takes_references:
        bank = detector.build_references(IMAGES[:2], "widget")
        assert isinstance(bank, ReferenceBank) and bank.num_shots == 2
        results = detector.detect(IMAGES[2:], "widget", chat=False, references=bank)
        assert [r.mode for r in results] == ["2-shot"]
    else:
        with pytest.raises(ValueError, match="takes no references"):
            detector.build_references(IMAGES[:2], "widget")
        with pytest.raises(ValueError, match="takes no references"):
            detector.detect(IMAGES[2:], "widget", references=[IMAGES[0]])
    if kind == "patchcore":
        return  # it compares with references only (test_baselines)
    results = detector.detect(IMAGES, "widget", chat=True)
    assert len(results) == 3 and all(r.mode == "zero-shot" for r in results)
    answered = [r.answer is not None and r.initial_answer is not None for r in results]
    assert answered == [can_answer] * 3
    if not can_answer:  # no LLM: pass 2 is pass 1
        assert all(r.anomaly_map is r.initial_map and r.score == r.initial_score for r in results)


@pytest.mark.parametrize("kind", ["siad", "self-reference"])
def test_siad_and_the_baselines_run_the_one_detect_loop(detectors, kind, monkeypatch):
    detector = detectors[kind]
    whole = detector.detect(IMAGES, "widget", chat=False, batch_size=8)
    loops = []
    real = detect_in_batches

    def counting(count, batch_size, detect_batch, **kwargs):
        loops.append((count, batch_size))
        return real(count, batch_size, detect_batch, **kwargs)

    monkeypatch.setattr(__import__(type(detector).__module__, fromlist=["x"]), "detect_in_batches", counting)
    single = detector.detect(IMAGES, "widget", chat=False, batch_size=1, progress=True)
    assert loops == [(3, 1)]  # the shared loop ran
    assert [r.score for r in single] == pytest.approx([r.score for r in whole], abs=1e-5)  # float sums per batch
    assert all(np.allclose(a.anomaly_map, b.anomaly_map, atol=1e-5) for a, b in zip(single, whole))
    with pytest.raises(ValueError, match="batch_size must be positive"):
        detector.detect(IMAGES, "widget", chat=False, batch_size=0)
    with pytest.raises(ValueError, match="score_smoothing_sigma"):
        detector.detect(IMAGES, "widget", chat=False, score_smoothing_sigma=-1.0)


def test_detect_in_batches_runs_consecutive_slices_in_order():
    seen = []

    def batch(chunk):
        seen.append((chunk.start, chunk.stop))
        return list(range(chunk.start, min(chunk.stop, 7)))

    assert detect_in_batches(7, 3, batch) == list(range(7))
    assert seen == [(0, 3), (3, 6), (6, 9)]
    assert detect_in_batches(0, 3, batch) == []


def test_a_loaded_model_is_named_by_its_source(tmp_path):
    _siad().save_pretrained(tmp_path / "m")
    assert SIADModel.from_pretrained(tmp_path / "m").name == str(tmp_path / "m")
    assert _siad().name == "siad-llm"
