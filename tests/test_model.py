import numpy as np
import pytest
import torch
from PIL import Image

from siad import SIADConfig, SIADModel
from siad.prompts import NORMAL_ANSWER
from tests.conftest import build_tiny


def _batch(n_normal: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2 * n_normal, 3, 224, 224), dtype=torch.uint8, generator=g)
    masks = torch.zeros(2 * n_normal, 224, 224)
    masks[n_normal:, 60:100, 120:180] = 1.0
    return {"images": images, "masks": masks, "labels": torch.tensor([0] * n_normal + [1] * n_normal),
            "class_names": ["bottle", "wood"] * n_normal,
            "descriptions": None,
            "answers": [NORMAL_ANSWER] * n_normal + ["Yes, there is an anomaly in the image, at the top of the image."] * n_normal}


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (300, 200, 3), dtype=np.uint8), rng.integers(0, 255, (64, 96), dtype=np.uint8)]


def test_forward_backward_and_frozen_parts(fresh_tiny_model):
    model = fresh_tiny_model.train()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = dict(model.trainable_parameters())
    for encoder in ("vision_encoder.", "text_encoder."):
        assert any(n.startswith(encoder) for n in frozen), encoder
        assert not any(n.startswith(encoder) for n in trainable), encoder
    assert any("base_layer" in n for n in frozen)
    expected_groups = ("stage_projection.", "adapter.", "sem.", "prompt_learner.", "pem.", "llama_proj.")
    for group in expected_groups:
        assert any(n.startswith(group) for n in trainable), group
    assert all("lora_" in n for n in trainable if n.startswith("llm."))
    out = model(_batch())
    for part in (out.loss, out.focal, out.dice, out.lm):
        assert torch.isfinite(part) and part.ndim == 0
    assert torch.allclose(out.loss, out.focal + out.dice + out.lm)
    out.loss.backward()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name
    assert all(trainable[n].grad is not None for n in trainable)
    optimizer = torch.optim.AdamW([p for p in trainable.values()], lr=1e-3)
    optimizer.step()
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name


@pytest.mark.slow
def test_a_few_steps_lower_the_loss():
    model = build_tiny(0, map=dict(si_train_response="target")).train()
    optimizer = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=1e-3)
    batch = _batch()
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        out = model(batch)
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < losses[0]


def test_detect_shapes_and_ranges(tiny_model):
    results = tiny_model.detect(_images(), ["bottle", "unknown part"])
    assert [r.anomaly_map.shape for r in results] == [(300, 200), (64, 96)]
    for r in results:
        for heat in (r.anomaly_map, r.initial_map):
            assert heat.dtype == np.float32 and 0.0 <= heat.min() <= heat.max() <= 1.0
        assert 0.0 <= r.score <= 1.0 and 0.0 <= r.initial_score <= 1.0
        assert isinstance(r.answer, str) and isinstance(r.initial_answer, str)
        assert r.is_anomalous == (r.score >= tiny_model.config.map.threshold)


def test_chat_false_never_calls_the_llm(tiny_model, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the LLM was called")
    monkeypatch.setattr(tiny_model.llm, "forward", boom)
    results = tiny_model.detect(_images(), "bottle", chat=False)
    assert all(r.answer is None and r.initial_answer is None for r in results)
    assert all(np.array_equal(r.anomaly_map, r.initial_map) for r in results)


def test_self_improve_false_is_pass_one(tiny_model):
    images = _images()
    full = tiny_model.detect(images, "bottle")
    first = tiny_model.detect(images, "bottle", self_improve=False)
    plain = tiny_model.detect(images, "bottle", chat=False)
    for f, p, c in zip(full, first, plain):
        assert np.array_equal(p.anomaly_map, f.initial_map) and p.score == f.initial_score
        assert p.answer == p.initial_answer == f.initial_answer
        assert np.array_equal(c.anomaly_map, f.initial_map)
        assert not np.array_equal(f.anomaly_map, f.initial_map)  # pass 2 differs


def test_pass_two_text_changes_with_the_response(tiny_model):
    text = tiny_model.class_text_features(["bottle"])
    a = tiny_model.refine_text(text, tiny_model.response_text_features(["No, there is no anomaly in the image."]))
    b = tiny_model.refine_text(text, tiny_model.response_text_features(["Yes, at the top left of the image."]))
    assert a.shape == text.shape == (1, 4, 2, 32)
    assert not torch.allclose(a, b)
    long = tiny_model.response_text_features(["word " * 500])
    assert torch.isfinite(long).all()


def test_vision_once_text_cached_and_response_capped(monkeypatch):
    model = build_tiny(0, llm=dict(max_new_tokens=200)).eval()
    calls = {"vision": 0, "prompts": 0, "caps": []}
    encode_image = model.vision_encoder.forward
    learner_forward = model.prompt_learner.forward
    respond = model.respond

    def count_vision(*a, **k):
        calls["vision"] += 1
        return encode_image(*a, **k)

    def count_prompts(*a, **k):
        calls["prompts"] += 1
        return learner_forward(*a, **k)

    def spy_respond(*a, max_new_tokens=None, **k):
        calls["caps"].append(max_new_tokens)
        return respond(*a, max_new_tokens=max_new_tokens, **k)

    monkeypatch.setattr(model.vision_encoder, "forward", count_vision)
    monkeypatch.setattr(model.prompt_learner, "forward", count_prompts)
    monkeypatch.setattr(model, "respond", spy_respond)
    model.detect(_images(), "bottle")
    assert calls["vision"] == 1  # one vision pass for both passes of both images
    assert calls["prompts"] == 1  # one class
    assert calls["caps"] == [77, None]  # pass 1 capped at the text encoder's context
    model.detect(_images(), "bottle")
    assert calls["prompts"] == 1  # cached
    with torch.no_grad():
        model.prompt_learner.normal_vectors.add_(0.1)  # prompt vectors change (as in training)
    model.detect(_images(), "bottle", chat=False)
    assert calls["prompts"] == 2  # cache dropped


def test_switches_change_what_they_name():
    plain = build_tiny(0)
    assert plain.adapter is not None and plain.sem is not None and plain.pem is not None
    assert build_tiny(0, map=dict(use_adapter=False)).adapter is None
    assert build_tiny(0, map=dict(use_sem=False)).sem is None
    no_pem = build_tiny(0, map=dict(use_pem=False))
    assert no_pem.pem is None and no_pem.map_tokens(torch.zeros(1, 4, 224, 224)) is None
    no_sp = build_tiny(0, text=dict(use_stage_prompts=False))  # "w/o SP": the vectors stay and train, the phrase goes
    assert {n for n, _ in no_sp.trainable_parameters() if n.startswith("prompt_learner.")} == {
        "prompt_learner.normal_vectors", "prompt_learner.abnormal_vectors"}
    text = no_sp.class_text_features(["bottle"])
    assert all(torch.equal(text[0, k], text[0, 0]) for k in range(4))
    no_si = build_tiny(0, map=dict(use_self_improvement=False)).eval()
    r = no_si.detect(_images()[:1], "bottle")[0]
    assert np.array_equal(r.anomaly_map, r.initial_map) and r.answer == r.initial_answer
    no_sem = build_tiny(0, map=dict(use_sem=False))
    names_plain = {n for n, _ in plain.named_parameters()}
    names_no_sem = {n for n, _ in no_sem.named_parameters()}
    assert names_plain - names_no_sem == {n for n in names_plain if n.startswith("sem.")}


def test_chat_answers_with_history(tiny_model):
    image = _images()[0]
    history = [{"role": "user", "content": "Is there any anomaly in the image?"},
               {"role": "assistant", "content": "No, there is no anomaly in the image."}]
    answer = tiny_model.chat(image, "bottle", history, "Where is it?")
    assert isinstance(answer, str)
    assert isinstance(tiny_model.chat(image, "bottle", [("Q?", "A.")], "And now?"), str)
    assert isinstance(tiny_model.chat(image, "bottle", [], "Is there any anomaly in the image?"), str)
    with pytest.raises(ValueError, match="message"):
        tiny_model.chat(image, "bottle", [], "  ")


@pytest.mark.parametrize("images, names, message", [
    ([np.zeros((0, 4, 3), dtype=np.uint8)], ["bottle"], "empty"),
    ([np.full((9, 9), np.nan)], ["bottle"], "NaN"),
    ([np.zeros((9, 9), dtype=np.uint8)], [""], "class name"),
    ([np.zeros((9, 9), dtype=np.uint8)], ["   "], "class name"),
    ([np.zeros((9, 9), dtype=np.uint8)] * 3, ["a", "b"], "2 entries for 3 images"),
    ([np.zeros((9, 9), dtype=np.uint8)] * 2, ["a"], "class_names has 1 entry for 2 images"),
    ([], ["a"], "empty"),
])
def test_bad_input_is_a_value_error(tiny_model, images, names, message):
    with pytest.raises(ValueError, match=message):
        tiny_model.detect(images, names, chat=False)


def test_one_string_applies_to_every_image_and_lists_must_match(tiny_model):
    images = [np.zeros((9, 9), dtype=np.uint8)] * 2
    one = tiny_model.detect(images, "bottle", descriptions="a glass bottle", chat=False)
    each = tiny_model.detect(images, ["bottle", "bottle"], descriptions=["a glass bottle"] * 2, chat=False)
    assert [r.score for r in one] == [r.score for r in each]
    with pytest.raises(ValueError, match="descriptions has 3 entries for 2 images"):
        tiny_model.detect(images, "bottle", descriptions=["a", "b", "c"], chat=False)
    with pytest.raises(ValueError, match="a description must be a string"):
        tiny_model.detect(images, "bottle", descriptions=[1, 2], chat=False)


def test_not_an_image_file(tiny_model, tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="not an image"):
        tiny_model.detect([path], ["bottle"], chat=False)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_every_pil_mode_through_detect(tiny_model, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    image = {"I;16": lambda: Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30)),
             "I": lambda: rgb.convert("L").convert("I"), "F": lambda: rgb.convert("F")}.get(mode, lambda: rgb.convert(mode))()
    r = tiny_model.detect([image], ["bottle"], chat=False)[0]
    assert r.anomaly_map.shape == (20, 30)


def test_sizes_from_tiny_to_huge(tiny_model):
    small = tiny_model.detect([np.zeros((8, 8, 3), dtype=np.uint8)], ["bottle"], chat=False)[0]
    assert small.anomaly_map.shape == (8, 8)
    big = tiny_model.detect([Image.new("L", (7500, 5000), 90)], ["bottle"], chat=False)[0]  # 37.5 MP
    assert big.anomaly_map.shape == (1672, 2508) and 0 <= big.score <= 1  # capped at max_map_pixels, same aspect
    with pytest.raises(ValueError, match=r"10000 x 10000 pixels \(100.0 MP\), more than this model reads"):
        tiny_model.detect([Image.new("L", (10000, 10000), 90)], ["bottle"], chat=False)


def test_bfloat16_model_detects():
    model = SIADModel(SIADConfig.tiny(), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    r = model.detect(_images()[:1], "bottle")[0]
    assert r.anomaly_map.dtype == np.float32 and np.isfinite(r.anomaly_map).all()


def test_training_switches_for_models_without_pretrained_weights():
    model = build_tiny(0, vision=dict(trainable=True), text=dict(trainable=True), llm=dict(train="full"), map=dict(si_train_response="target")).train()
    names = {n for n, _ in model.trainable_parameters()}
    assert any(n.startswith("vision_encoder.modality_trunks.vision") for n in names)
    assert any(n.startswith("text_encoder.modality_trunks.text") for n in names)
    assert any("base_layer" in n or "embed_tokens" in n for n in names)
    model(_batch()).loss.backward()
    grads = dict(model.named_parameters())
    assert grads["vision_encoder.modality_trunks.vision.blocks.0.mlp.fc1.weight"].grad.abs().sum() > 0
    assert grads["text_encoder.modality_trunks.text.blocks.0.mlp.fc1.weight"].grad.abs().sum() > 0


def test_history_in_gradio_message_parts():
    from siad.conversation import history_turns

    history = [{"role": "user", "content": [{"type": "text", "text": "Is there any anomaly?"}]},
               {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
               {"role": "user", "content": "Sure?"}]
    assert history_turns(history) == [("Is there any anomaly?", "No."), ("Sure?", "")]


@pytest.mark.slow
def test_bfloat16_maps_match_float32_maps():
    """A bf16 copy of a float32 model (1024-d joint space, as ImageBind's) gives maps close to the
    float32 model's: its map head computes in float32, so only the trunk's bf16 rounding remains."""
    from siad.modules import AnomalyMapHead

    config = SIADConfig.tiny(embed_dim=1024)
    torch.manual_seed(0)
    full = SIADModel(config).eval()
    half = SIADModel(config, dtype=torch.bfloat16).eval()
    half.load_state_dict(full.state_dict())
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(3)]
    side = config.vision.image_size // config.vision.patch_size
    grids = [(side, side)] * config.num_stages
    grid_head = AnomalyMapHead(side, config.map.logit_scale)  # the patch grid, before upsampling

    def grid_maps(model):
        with torch.no_grad():
            pixels, _ = model.prepare_images(images)
            vision = model.encode_images(pixels)
            assert vision.grids == grids
            features = model.visual_features(vision)
            text = model.class_text_features(["bottle"] * 3)
            return features, text, grid_head(features, text, grids)

    _, _, reference = grid_maps(full)
    features, text, maps = grid_maps(half)
    assert maps.dtype == torch.float32
    # the bf16 model's maps are exactly the float32 computation on its own features
    exact = grid_head([f.float() for f in features], text.float(), grids)
    assert (maps - exact).abs().max() < 1e-6
    assert (maps - reference).abs().max() < 0.03
    distinct = [maps[b, k].unique().numel() for b in range(3) for k in range(4)]
    assert min(distinct) >= 250  # of 256 patches (bf16 logits: as few as 215)
    r_full = full.detect(images, "bottle", chat=False)
    r_half = half.detect(images, "bottle", chat=False)
    assert max(float(np.abs(a.anomaly_map - b.anomaly_map).max()) for a, b in zip(r_full, r_half)) < 0.03


def test_teacher_stage_maps_follow_the_masks():
    from siad.model import teacher_stage_maps

    torch.manual_seed(0)
    masks = torch.zeros(3, 224, 224)
    masks[1, 20:60, 150:200] = 1.0
    masks[2, 100:104, 10:200] = 1.0  # a thin scratch
    maps = teacher_stage_maps(masks, 4)
    assert maps.shape == (3, 4, 224, 224) and maps.min() >= 0.0 and maps.max() <= 1.0
    assert maps[0].max() < 0.55  # a normal image: background only, below every defect's level
    for b in (1, 2):
        inside, outside = maps[b][:, masks[b] > 0].mean(), maps[b][:, masks[b] == 0].mean()
        assert inside > 0.45 and inside > outside + 0.2


def test_teacher_maps_replace_what_the_llm_reads_not_what_the_maps_learn():
    """With teacher_maps=1 the LLM's loss no longer depends on the predicted maps; the map losses do."""
    from siad.config import SIADConfig

    torch.manual_seed(0)
    model = SIADModel(SIADConfig.tiny(map=dict(si_train_response="target")))
    masks = torch.zeros(2, 224, 224)
    masks[1, 50:90, 50:90] = 1.0
    batch = {"images": torch.randint(0, 255, (2, 3, 224, 224), dtype=torch.uint8), "masks": masks,
             "class_names": ["gear", "gear"], "answers": ["No, there is no anomaly in the image.",
                                                         "Yes, there is an anomaly in the image, at the top left of "
                                                         "the image."]}
    outputs = []
    for scale in (1.0, 50.0):  # two very different predicted maps
        model.map_head.logit_scale = scale
        torch.manual_seed(1)
        outputs.append(model(batch, teacher_maps=1.0))
    assert torch.allclose(outputs[0].lm, outputs[1].lm) and not torch.allclose(outputs[0].focal, outputs[1].focal)
    torch.manual_seed(1)
    taught_not = model(batch, teacher_maps=0.0)
    assert not torch.allclose(taught_not.lm, outputs[1].lm)
