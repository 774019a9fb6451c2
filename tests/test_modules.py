import pytest
import torch
import torch.nn.functional as F

from siad import SIADConfig
from siad.encoders import ImageBindTextEncoder, ImageBindTokenizer
from siad.modules import (Adapter, AnomalyMapHead, PatchEnhancementModule, StageEnhancementModule,
                          StagePromptLearner, StageProjection)
from siad.prompts import ensemble_sentences


def test_stage_projection_shapes():
    proj = StageProjection((48,) * 4, 32)
    out = proj([torch.randn(2, 256, 48) for _ in range(4)])
    assert [o.shape for o in out] == [(2, 256, 32)] * 4
    # stages of their own widths and grids (EfficientNet-Lite0: 40 channels on 28 x 28, 112 on 14 x 14)
    proj = StageProjection((40, 112), 32)
    out = proj([torch.randn(2, 784, 40), torch.randn(2, 196, 112)])
    assert [o.shape for o in out] == [(2, 784, 32), (2, 196, 32)]


def test_adapter_is_equation_6():
    torch.manual_seed(0)
    adapter = Adapter(2, 8, lam=0.1)
    stages = [torch.randn(3, 5, 8), torch.randn(3, 5, 8)]
    out = adapter(stages)
    for k in range(2):
        expected = 0.1 * F.normalize(F.leaky_relu(adapter.linears[k](stages[k])), dim=-1) \
            + 0.9 * F.normalize(stages[k], dim=-1)
        assert torch.allclose(out[k], expected, atol=1e-6)
    assert torch.allclose(Adapter(1, 8, lam=0.0)([stages[0]])[0], F.normalize(stages[0], dim=-1))


def test_sem_starts_as_identity_and_mixes_the_last_stage():
    sem = StageEnhancementModule(4, 16)
    stages = [torch.randn(2, 64, 16) for _ in range(4)]
    grids = [(8, 8)] * 4
    out = sem(stages, grids)
    assert all(torch.equal(a, b) for a, b in zip(out, stages))  # zero-initialised last conv
    torch.nn.init.normal_(sem.convs[0].weight)
    changed = [s.clone() for s in stages]
    changed[3] = changed[3] + 1.0  # only the last stage changes ...
    assert not torch.allclose(sem(changed, grids)[0], sem(stages, grids)[0])  # ... and stage 1 sees it


def test_sem_resizes_the_last_stage_to_every_grid_including_non_square_ones():
    sem = StageEnhancementModule(2, 8)
    torch.nn.init.normal_(sem.convs[0].weight)
    stages = [torch.randn(1, 6 * 10, 8), torch.randn(1, 3 * 5, 8)]
    out = sem(stages, [(6, 10), (3, 5)])
    assert [o.shape for o in out] == [(1, 60, 8), (1, 15, 8)]
    with pytest.raises(ValueError, match="do not fill a 4 x 4 grid"):
        sem(stages, [(6, 10), (4, 4)])


def test_pem_groups_are_a_3x3_grid():
    torch.manual_seed(0)
    pem = PatchEnhancementModule(num_channels=4, image_size=224, patch_size=16, num_groups=9, out_dim=24)
    assert pem.group_averaging.shape == (9, 196)
    assert torch.allclose(pem.group_averaging.sum(dim=1), torch.ones(9))
    assert (pem.group_averaging > 0).sum(dim=0).eq(1).all()  # every patch in exactly one group
    sizes = (pem.group_averaging > 0).sum(dim=1).view(3, 3)
    assert sizes.tolist() == [[25, 20, 25], [20, 16, 20], [25, 20, 25]]  # 14 = 5 + 4 + 5
    maps = torch.zeros(2, 4, 224, 224)
    tokens_plain = pem(maps)
    assert tokens_plain.shape == (2, 9, 24)
    maps[:, :, 200:, 200:] = 1.0  # an anomaly at the bottom right changes only that group's token
    tokens = pem(maps)
    differs = (tokens - tokens_plain).abs().sum(dim=-1)[0] > 1e-6
    assert differs.tolist() == [False] * 8 + [True]


def test_pem_center_norm_keeps_the_level_of_a_map_and_layer_norm_loses_it():
    """The diagnosis of siad-mini: a per-patch LayerNorm gives identical tokens for every constant map
    (0, 0.3, 1), so the LLM cannot tell a clean map from a fully anomalous one. "center" keeps levels."""
    torch.manual_seed(0)
    levels = [torch.full((1, 4, 224, 224), v) for v in (0.0, 0.3, 1.0)]
    layer = PatchEnhancementModule(4, 224, 16, 9, 24, norm="layer")
    tokens = [layer(m) for m in levels]
    assert torch.equal(tokens[0], tokens[1]) and torch.equal(tokens[0], tokens[2])
    center = PatchEnhancementModule(4, 224, 16, 9, 24, norm="center")
    tokens = [center(m) for m in levels]
    assert all((a - b).abs().max() > 1e-3 for a, b in ((tokens[0], tokens[1]), (tokens[1], tokens[2])))
    assert not any(name.startswith("norm.") for name in center.state_dict())  # a fixed normalisation
    with pytest.raises(ValueError, match="norm"):
        PatchEnhancementModule(4, 224, 16, 9, 24, norm="batch")


def test_map_head_gives_probabilities():
    head = AnomalyMapHead(image_size=224, logit_scale=100.0)
    features = [torch.randn(2, 256, 8) for _ in range(4)]
    text = F.normalize(torch.randn(2, 4, 2, 8), dim=-1)
    grids = [(16, 16)] * 4
    maps = head(features, text, grids)
    assert maps.shape == (2, 4, 224, 224) and maps.min() >= 0 and maps.max() <= 1
    # a patch aligned with the abnormal text is abnormal
    features = [text[:, k, 1][:, None].expand(2, 256, 8).clone() for k in range(4)]
    assert head(features, text, grids).min() > 0.5
    final = head.combine(maps)
    assert torch.allclose(final, maps.mean(dim=1))
    assert torch.equal(head.score(final), final.flatten(1).max(dim=1).values)


def test_smoothing_keeps_constants_and_lowers_peaks():
    maps = torch.full((1, 224, 224), 0.3)
    assert torch.allclose(AnomalyMapHead.smooth(maps, 4.0), maps, atol=1e-6)
    maps[0, 100, 100] = 1.0
    smooth = AnomalyMapHead.smooth(maps, 4.0)
    assert smooth.shape == maps.shape and smooth.max() < 0.5
    assert torch.equal(AnomalyMapHead.smooth(maps, 0.0), maps)
    assert AnomalyMapHead.smooth(torch.rand(2, 8, 8), 4.0).shape == (2, 8, 8)  # kernel wider than the map


@pytest.fixture(scope="module")
def text_side():
    torch.manual_seed(0)
    config = SIADConfig.tiny()
    return ImageBindTextEncoder(config.text, config.embed_dim).eval(), ImageBindTokenizer()


@pytest.mark.parametrize("mode", ["sum", "concat"])
def test_prompt_learner_shapes_and_gradients(text_side, mode):
    encoder, tokenizer = text_side
    learner = StagePromptLearner(SIADConfig.tiny(text=dict(stage_prompt_mode=mode)))
    out = learner(encoder, tokenizer, ["bottle", "metal_nut"])
    assert out.shape == (2, 4, 2, 32)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2, 4, 2), atol=1e-5)
    out.sum().backward()
    assert learner.normal_vectors.grad.abs().sum() > 0 and learner.abnormal_vectors.grad.abs().sum() > 0
    assert not torch.allclose(out[0, 0], out[0, 3])  # stage phrases differ


def test_ensemble_is_the_mean_of_normalised_sentences(text_side):
    encoder, tokenizer = text_side
    learner = StagePromptLearner(SIADConfig.tiny())
    e = learner.ensemble.features(encoder, tokenizer, "bottle")
    sentences = ensemble_sentences("bottle", "abnormal")
    assert len(sentences) == 10 and len(ensemble_sentences("bottle", "normal")) == 14
    expected = F.normalize(encoder.encode_text(tokenizer.batch(sentences)).mean(dim=0), dim=-1)
    assert torch.allclose(e[1], expected, atol=1e-5)
    assert learner.ensemble.features(encoder, tokenizer, "bottle") is e  # cached


def test_without_stage_prompts_only_the_stage_phrase_goes(text_side):
    """The "w/o SP" ablation (Table 3) keeps the learnable vectors, the ensemble and the mode, and
    removes the stage phrase: the prompts are the same for every stage."""
    encoder, tokenizer = text_side
    with_sp = StagePromptLearner(SIADConfig.tiny())
    without = StagePromptLearner(SIADConfig.tiny(text=dict(use_stage_prompts=False)))
    bare_expected = ([tokenizer.sot_id] + [tokenizer.placeholder_id] * 4 + tokenizer.encode("metal nut")
                     + tokenizer.encode("with damaged") + [tokenizer.eot_id])
    for stage in range(4):
        ids, mask = with_sp._stage_prompt_ids(tokenizer, "metal_nut", stage, "abnormal")
        bare, bare_mask = without._stage_prompt_ids(tokenizer, "metal_nut", stage, "abnormal")
        phrase = tokenizer.encode(with_sp.stage_phrases[stage])
        assert phrase and ids == [tokenizer.sot_id] + phrase + bare[1:]
        assert bare == bare_expected
        assert bare_mask == [False] + [True] * 4 + [False] * (len(bare) - 5)
        assert mask == [False] * (1 + len(phrase)) + bare_mask[1:]
    assert {n for n, _ in without.named_parameters()} == {"normal_vectors", "abnormal_vectors"}
    out = without(encoder, tokenizer, ["wood"])
    assert out.shape == (1, 4, 2, 32)
    assert all(torch.equal(out[0, k], out[0, 0]) for k in range(4))
    e = without.ensemble.features(encoder, tokenizer, "wood")
    assert not torch.allclose(out[0, 0], e, atol=1e-3)  # the stage prompt is there (sum mode) ...
    with_out = with_sp(encoder, tokenizer, ["wood"])
    assert not torch.allclose(with_out[0, 0], with_out[0, 3])  # ... and only the phrase made stages differ
    out.sum().backward()
    assert without.normal_vectors.grad.abs().sum() > 0 and without.abnormal_vectors.grad.abs().sum() > 0
    optimizer = torch.optim.SGD(without.parameters(), lr=10.0)
    optimizer.step()
    with torch.no_grad():
        assert not torch.allclose(without(encoder, tokenizer, ["wood"]), out)


def test_long_class_names_are_truncated(text_side):
    encoder, tokenizer = text_side
    learner = StagePromptLearner(SIADConfig.tiny())
    out = learner(encoder, tokenizer, ["part " * 200])
    assert out.shape == (1, 4, 2, 32) and torch.isfinite(out).all()


def test_focal_loss_keeps_its_gradient_when_saturated():
    from siad.losses import dice_loss, focal_loss

    target = torch.zeros(1, 8, 8)
    target[0, :4] = 1.0
    logits = torch.zeros(1, 2, 8, 8)
    logits[:, 0] = 60.0  # saturated: everything "normal", half of it wrongly
    logits.requires_grad_(True)
    loss = focal_loss(logits, target, gamma=2.0)
    loss.backward()
    assert torch.isfinite(loss) and loss > 10
    assert logits.grad[0, 1, :4].abs().min() > 1e-3  # the wrong pixels still pull
    probs = torch.softmax(torch.tensor([[0.0, 0.0]]), dim=1)
    expected = -(0.5 ** 2) * torch.log(probs[0, 1])
    assert torch.allclose(focal_loss(torch.zeros(1, 2, 1, 1), torch.ones(1, 1, 1)), expected)
    perfect = target.clone()
    assert dice_loss(perfect, target) < 1e-6 and dice_loss(torch.zeros_like(target), torch.zeros_like(target)) == 0


def test_map_head_similarity_runs_in_float32_for_bfloat16_inputs():
    """Paper size (1024-d joint space, logit scale 100, cosines around 0.2 as ImageBind's): bf16
    features and text give the maps of their float32 values. With the similarity in bf16 the logits
    were rounded by up to 0.17 here (0.025 in probability) and the 256 patches of a stage took only
    about 140 distinct values."""
    torch.manual_seed(0)
    head = AnomalyMapHead(image_size=16, logit_scale=100.0)  # image size = grid: no upsampling
    text = F.normalize(torch.randn(2, 4, 2, 1024), dim=-1)
    features = []
    for k in range(4):
        normal, abnormal = text[:, k, 0][:, None], text[:, k, 1][:, None]
        f = (torch.randn(2, 256, 1024) / 32 + 0.2 * (normal + abnormal)
             + 0.003 * torch.randn(2, 256, 1) * (abnormal - normal))
        features.append(f.bfloat16())
    low = head.logits(features, text.bfloat16(), [(16, 16)] * 4)
    assert low.dtype == torch.float32
    reference = head.logits([f.float() for f in features], text.bfloat16().float(), [(16, 16)] * 4)
    assert (low - reference).abs().max() < 1e-4
    maps, maps_ref = head.probabilities(low), head.probabilities(reference)
    assert (maps - maps_ref).abs().max() < 1e-5
    assert 1e-7 < maps_ref.min() and maps_ref.max() < 1 - 1e-7  # not saturated: every patch counts
    for b in range(2):
        for k in range(4):
            assert maps[b, k].unique().numel() == maps_ref[b, k].unique().numel() == 256


def test_pem_patches_are_unfolds_patches():
    torch.manual_seed(0)
    pem = PatchEnhancementModule(4, 224, 16, 9, 24)
    maps = torch.rand(3, 4, 224, 224)
    expected = torch.nn.functional.unfold(maps, kernel_size=16, stride=16).transpose(1, 2)
    assert torch.equal(pem.patches(maps), expected)


def test_map_head_centering_compares_each_patch_with_the_rest_of_its_image():
    torch.manual_seed(0)
    features = [torch.randn(2, 16, 8) for _ in range(2)]
    grids = [(4, 4), (2, 8)]
    text = torch.nn.functional.normalize(torch.randn(2, 2, 2, 8), dim=-1)
    centred = AnomalyMapHead(32, 10.0, center_patches=True)
    shifted = [f + torch.randn(2, 1, 8) * 5 for f in features]  # a shift shared by an image's patches
    assert torch.allclose(centred.logits(features, text, grids), centred.logits(shifted, text, grids), atol=1e-4)
    plain = AnomalyMapHead(32, 10.0)
    assert not torch.allclose(plain.logits(features, text, grids), plain.logits(shifted, text, grids), atol=1e-2)
    expected = plain.logits([f - f.mean(dim=1, keepdim=True) for f in features], text, grids)
    assert torch.allclose(centred.logits(features, text, grids), expected, atol=1e-6)
