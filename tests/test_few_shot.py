"""Few-shot references through SIADModel: build_references, detect(references=...), chat(references=...).

The bank itself (files, fingerprints, search, maps, fusion) is tested in tests/test_references.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import siad
import siad.network
import siad.prompts
from siad import ReferenceBank
from siad.references import fuse_stage_maps, reference_distances, reference_maps
from tests.conftest import build_tiny
from tests.test_chat import GenerationSpy


def _images(count: int, seed: int, shape=(48, 64, 3)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


def _same(a, b) -> bool:
    """Two DetectionResults are bit-identical (maps, scores, answers, verdict, class, mode)."""
    return (np.array_equal(a.anomaly_map, b.anomaly_map) and np.array_equal(a.initial_map, b.initial_map)
            and (a.score, a.initial_score, a.answer, a.initial_answer, a.is_anomalous, a.class_name, a.mode)
            == (b.score, b.initial_score, b.answer, b.initial_answer, b.is_anomalous, b.class_name, b.mode))


@pytest.fixture(scope="module")
def model():
    return build_tiny(0).eval()


@pytest.fixture(scope="module")
def refs():
    return _images(3, seed=10)


@pytest.fixture(scope="module")
def bank(model, refs):
    return model.build_references(refs, "gear")


def test_reference_bank_is_exported_and_built_with_the_configs_settings(model, bank):
    assert siad.ReferenceBank is ReferenceBank and "ReferenceBank" in siad.__all__
    assert isinstance(bank, ReferenceBank) and bank.class_name == "gear" and bank.num_shots == 3
    assert bank.features == model.config.map.few_shot_features and bank.max_bank_patches == model.config.map.max_bank_patches
    small = build_tiny(0, map=dict(max_bank_patches=100, few_shot_features="visual")).eval()
    visual = small.build_references(_images(2, seed=10), "gear")
    assert visual.features == "visual" and all(s.shape[0] <= 100 for s in visual.stages)


def test_no_references_give_exactly_the_zero_shot_results(model, bank):
    images = _images(2, seed=1)
    plain = model.detect(images, "gear")
    for none in (None, [], {}, {"wood": bank}):  # {"wood": ...}: no entry for these images' class
        again = model.detect(images, "gear", references=none)
        assert all(_same(a, b) for a, b in zip(plain, again)), none
    assert [r.mode for r in plain] == ["zero-shot", "zero-shot"]
    quick = model.detect(images, "gear", chat=False, references=None)
    assert all(np.array_equal(q.anomaly_map, p.initial_map) for q, p in zip(quick, plain))


def test_a_bank_fuses_both_passes_with_the_reference_maps_computed_once(model, bank, monkeypatch):
    """Pass 1 fuses M_k, pass 2 the refined text maps, with the same reference maps; PEM reads the fused
    maps; the score is the maximum of the fused final map."""
    fusions, searches, pem_inputs = [], [], []
    fuse, search, map_tokens = siad.network.fuse_stage_maps, siad.network.reference_distances, model.map_tokens

    def spy_fuse(text, reference, weight, mode="linear"):
        assert mode == model.config.map.reference_fusion
        out = fuse(text, reference, weight, mode)
        fusions.append((text, reference, weight, out))
        return out

    def spy_search(features, grids, bank_, **options):
        searches.append(bank_)
        return search(features, grids, bank_, **options)

    def spy_tokens(stage_maps):
        pem_inputs.append(stage_maps)
        return map_tokens(stage_maps)

    monkeypatch.setattr(siad.network, "fuse_stage_maps", spy_fuse)
    monkeypatch.setattr(siad.network, "reference_distances", spy_search)
    monkeypatch.setattr(model, "map_tokens", spy_tokens)
    image = _images(1, seed=2, shape=(224, 224, 3))
    result = model.detect(image, "gear", references=bank)[0]
    monkeypatch.undo()
    assert result.mode == "3-shot" and len(searches) == 1 and searches[0] is bank  # once for both passes
    (text1, ref1, w1, fused1), (text2, ref2, w2, fused2) = fusions
    assert ref1 is ref2 and w1 == w2 == model.config.map.few_shot_weight
    assert not torch.equal(text1, text2)  # pass 2 fuses the refined text maps
    assert torch.equal(pem_inputs[0], fused1) and torch.equal(pem_inputs[1], fused2)
    # the same figures computed by hand from siad.references
    with torch.no_grad():
        pixels, _ = model.prepare_images(image)
        vision = model.encode_images(pixels)
        text_maps = model.anomaly_maps(model.visual_features(vision), model.class_text_features(["gear"]),
                                       vision.grids).stage_maps
        manual_ref = reference_maps(reference_distances(vision.stage_tokens, vision.grids, bank), bank.normal_scale,
                                    224)
        manual = fuse_stage_maps(text_maps, manual_ref, 0.9).mean(dim=1)[0]
    assert torch.allclose(text1, text_maps, atol=1e-6) and torch.allclose(ref1, manual_ref, atol=1e-6)
    assert np.allclose(result.initial_map, manual.numpy(), atol=1e-6)
    assert result.initial_score == pytest.approx(float(manual.max()), abs=1e-6)
    assert result.score == pytest.approx(float(fused2.mean(dim=1).max()), abs=1e-6)
    zero = model.detect(image, "gear")[0]
    assert not np.allclose(zero.initial_map, result.initial_map) and zero.mode == "zero-shot"


def test_bank_round_trip_and_images_give_the_same_results(model, bank, refs, tmp_path):
    images = _images(2, seed=3)
    with_bank = model.detect(images, "gear", references=bank)
    bank.save(tmp_path / "gear-bank")
    loaded = ReferenceBank.load(tmp_path / "gear-bank")
    assert all(_same(a, b) for a, b in zip(with_bank, model.detect(images, "gear", references=loaded)))
    assert all(_same(a, b) for a, b in zip(with_bank, model.detect(images, " gear ", references=refs)))
    assert all(_same(a, b) for a, b in zip(with_bank, model.detect(images, "gear", references={"gear": loaded})))
    assert [r.mode for r in with_bank] == ["3-shot", "3-shot"]


def test_a_bank_of_another_class_model_or_features_is_refused(model, bank, refs):
    image = _images(1, seed=4)
    with pytest.raises(ValueError, match="for class 'gear', not 'wood'"):
        model.detect(image, "wood", references=bank)
    with pytest.raises(ValueError, match="for class 'gear', not 'wood'"):
        model.detect(image, "wood", references={"wood": bank})
    other = build_tiny(1).eval()
    with pytest.raises(ValueError, match="another model"):
        other.detect(image, "gear", references=bank)
    with pytest.raises(ValueError, match="another model"):
        other.chat(image[0], "gear", [], "Where?", references=bank)
    visual = build_tiny(0, map=dict(few_shot_features="visual")).eval()
    with pytest.raises(ValueError, match="'trunk' features and the model is asked for 'visual'"):
        visual.detect(image, "gear", references=bank)
    with pytest.raises(ValueError, match="a list of images serves one class"):
        model.detect(_images(2, seed=4), ["gear", "wood"], references=refs)
    for wrong in (refs[0], "refs/", 3, {"gear": 7}, {"gear": bank, " gear": bank}):
        with pytest.raises(ValueError, match="references"):
            model.detect(image, "gear", references=wrong)


def test_dict_by_class_in_a_mixed_batch(model, bank):
    images = _images(4, seed=5)
    names = ["gear", "wood", "gear", "plate"]
    wood = model.build_references(_images(2, seed=11), "wood")
    mixed = model.detect(images, names, references={"gear": bank, "  wood": wood, "plate": []}, batch_size=4)
    assert [r.mode for r in mixed] == ["3-shot", "2-shot", "3-shot", "zero-shot"]
    zero = model.detect(images, names, batch_size=4)
    assert _same(mixed[3], zero[3])  # no references for 'plate': exactly zero-shot, in the same batch
    assert all(not np.allclose(m.initial_map, z.initial_map) for m, z in zip(mixed[:3], zero[:3]))
    # each image as if detected with its own class's bank alone (the same batch, one bank for all)
    gear_only = model.detect(images, names, references={"gear": bank}, batch_size=4)
    for b in (0, 2):
        assert np.allclose(mixed[b].initial_map, gear_only[b].initial_map, atol=1e-6)
    assert _same(gear_only[1], zero[1])


def test_chat_with_references_costs_one_generation_after_detect(model, bank, monkeypatch):
    image = _images(1, seed=6)[0]
    model.clear_chat_cache()
    spy = GenerationSpy(model, monkeypatch)
    result = model.detect([image], "gear", references=bank)[0]
    assert spy.calls == 2
    answer = model.chat(image, "gear", [("Is there any anomaly in the image?", result.answer)], "Where?",
                        references=bank)
    assert spy.calls == 3 and isinstance(answer, str)  # the passes came from the cache
    streamed = list(model.chat_stream(image, "gear", [], "Where?", references=bank))
    assert spy.calls == 4 and streamed[-1] == model.chat(image, "gear", [], "Where?", references=bank)
    assert spy.calls == 5
    # the cache key holds the references: zero-shot and another bank run their own passes
    model.chat(image, "gear", [], "Where?")
    assert spy.calls == 8
    model.chat(image, "gear", [], "Where?", references=model.build_references(_images(2, seed=12), "gear"))
    assert spy.calls == 11
    # the grounding differs: the PEM tokens of the fused maps are not the zero-shot ones
    pixels, _ = model.prepare_images([image])
    fused = model._follow_up_context(pixels, "gear", siad.prompts.describe("gear"), True, bank)
    plain = model._follow_up_context(pixels, "gear", siad.prompts.describe("gear"), True, None)
    assert not torch.equal(fused.map_tokens, plain.map_tokens)
