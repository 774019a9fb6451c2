"""The untrained detectors the trained model must beat: the self-reference and the PatchCore-style
nearest neighbour on the same backbone, run by the same evaluation code; and the geometric fusion."""

import json

import numpy as np
import pytest
import torch

from siad import SIADConfig, SIADModel
from siad.baseline import BackboneBaseline, load_detector
from siad.modules import AnomalyMapHead
from siad.references import (fuse_stage_maps, reference_distances, reference_maps, self_reference_distances,
                             self_reference_maps)
from tests.test_evaluate import make_mvtec_dataset


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("baselines") / "m"
    torch.manual_seed(0)
    SIADModel(SIADConfig.tiny(map=dict(threshold=0.8))).save_pretrained(folder)
    return folder


def _images(count, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(count)]


def test_the_self_reference_baseline_is_the_mean_of_the_models_self_reference_maps(model_folder):
    baseline = load_detector(f"self-reference:{model_folder}")
    model = SIADModel.from_pretrained(model_folder).eval()
    assert isinstance(baseline, BackboneBaseline) and not baseline.can_answer
    assert baseline.config.map.threshold == 0.5  # the trained model's threshold does not belong to it
    images = _images(2)
    results = baseline.detect(images, "widget")
    pixels, _ = model.prepare_images(images)
    vision = model.encode_images(pixels)
    maps = AnomalyMapHead.combine(self_reference_maps(
        self_reference_distances(vision.stage_tokens, vision.grids, model.config.map.self_reference_radius), 224))
    assert [r.score for r in results] == pytest.approx(AnomalyMapHead.score(maps).tolist(), abs=1e-6)
    assert results[0].answer is None and results[0].mode == "zero-shot"
    with pytest.raises(ValueError, match="takes no references"):
        baseline.detect(images, "widget", references=baseline.build_references(images, "widget"))


def test_the_patchcore_baseline_needs_references_and_scores_by_the_bank(model_folder):
    baseline = load_detector(f"patchcore:{model_folder}")
    normals = _images(3, seed=1)
    with pytest.raises(ValueError, match="needs references|give references"):
        baseline.detect(normals[:1], "widget")
    bank = baseline.build_references(normals, "widget")
    assert bank.num_shots == 3 and bank.features == "trunk"
    # the model's own bank is the same bank (same backbone, same features): it serves the baseline
    model = SIADModel.from_pretrained(model_folder).eval()
    own = model.build_references(normals, "widget")
    assert own.fingerprint == bank.fingerprint and all(torch.equal(a, b) for a, b in zip(own.stages, bank.stages))
    query = _images(1, seed=5)
    result = baseline.detect(query, "widget", references=bank)[0]
    pixels, _ = model.prepare_images(query)
    vision = model.encode_images(pixels)
    expected = AnomalyMapHead.combine(reference_maps(reference_distances(vision.stage_tokens, vision.grids, bank),
                                                     bank.normal_scale, 224))
    assert result.score == pytest.approx(float(expected.max()), abs=1e-6) and result.mode == "3-shot"
    # a reference image itself is as normal as its own references make it: low distances
    again = baseline.detect(normals[:1], "widget", references=bank)[0]
    assert again.score < result.score


def test_baselines_from_a_backbone_name_use_its_pretrained_weights():
    baseline = load_detector("self-reference:efficientnet_lite0")
    assert baseline.config.vision.backbone == "efficientnet_lite0"
    assert baseline.vision_encoder.stage_channels == (40, 112)
    result = baseline.detect(_images(1), "tile")[0]
    assert 0.0 <= result.score <= 1.0 and result.anomaly_map.shape == (40, 52)


@pytest.mark.slow
def test_evaluate_runs_the_baselines_and_refuses_what_they_cannot_do(model_folder, tmp_path):
    from siad import evaluate as ev

    root = make_mvtec_dataset(tmp_path / "data")
    out = tmp_path / "self"
    assert ev.main(["--model", f"self-reference:{model_folder}", "--dataset", "mvtec", "--root", str(root),
                    "--out", str(out), "--quiet", "--no-plots"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["passes"] == ["pass1"] and "Self-reference baseline" in " ".join(report["notes"])
    out = tmp_path / "pc"
    assert ev.main(["--model", f"patchcore:{model_folder}", "--dataset", "mvtec", "--root", str(root),
                    "--shots", "1", "--out", str(out), "--quiet", "--no-plots"]) == 0
    assert json.loads((out / "report.json").read_text())["shots"] == 1
    for argv, message in ((["--model", f"self-reference:{model_folder}", "--shots", "1"], "take none"),
                          (["--model", f"patchcore:{model_folder}"], "give --shots")):
        with pytest.raises(SystemExit):
            ev.main([*argv, "--dataset", "mvtec", "--root", str(root), "--out", str(tmp_path / "x"), "--quiet"])


def test_geometric_fusion_is_high_only_where_both_maps_are():
    text = torch.tensor([[[[0.9, 0.9, 0.1, 0.05]]]])
    reference = torch.tensor([[[[0.9, 0.1, 0.9, 0.05]]]])
    linear = fuse_stage_maps(text, reference, 0.5, "linear")
    geometric = fuse_stage_maps(text, reference, 0.5, "geometric")
    assert torch.allclose(linear, torch.tensor([[[[0.9, 0.5, 0.5, 0.05]]]]))
    assert torch.allclose(geometric, torch.tensor([[[[0.9, 0.3, 0.3, 0.05]]]]), atol=1e-6)
    # the ends are the maps themselves, per image too
    assert torch.equal(fuse_stage_maps(text, reference, 0.0, "geometric"), text)
    both = torch.cat([text, text])
    fused = fuse_stage_maps(both, torch.cat([reference, reference]), torch.tensor([0.0, 1.0]), "geometric")
    assert torch.equal(fused[0], text[0]) and torch.equal(fused[1], reference[0])
    with pytest.raises(ValueError, match="fusion mode"):
        fuse_stage_maps(text, reference, 0.5, "max")


def test_the_model_fuses_with_its_configured_mode():
    torch.manual_seed(0)
    model = SIADModel(SIADConfig.tiny(map=dict(self_reference_weight=0.5, reference_fusion="geometric"))).eval()
    image = _images(1)
    result = model.detect(image, "widget", chat=False)[0]
    pixels, _ = model.prepare_images(image)
    vision = model.encode_images(pixels)
    text_maps = model.anomaly_maps(model.visual_features(vision), model.class_text_features(["widget"]),
                                   vision.grids).stage_maps
    own = self_reference_maps(self_reference_distances(vision.stage_tokens, vision.grids, 2), 224)
    expected = AnomalyMapHead.combine(text_maps.detach().clamp(min=1e-4).sqrt() * own.clamp(min=1e-4).sqrt())
    assert result.score == pytest.approx(float(expected.max()), abs=1e-6)
