"""The paper's full preset, built with empty weights (no memory used): parameter counts and keys."""

import pytest
import torch
from accelerate import init_empty_weights

from siad import SIADConfig, SIADModel
from siad.config import LLAMA_7B_ARCHITECTURE
from siad.encoders import filter_official_state_dict, import_imagebind_model

# the full-size smoke: the paper's ImageBind-Huge and LLaMA-7B built with empty weights
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def empty_full_model():
    config = SIADConfig.siad_llm(llm=dict(name_or_path=None, architecture=LLAMA_7B_ARCHITECTURE))
    with init_empty_weights():
        model = SIADModel(config)
    return model


def _count(params) -> int:
    return sum(p.numel() for p in params)


def test_parameter_counts(empty_full_model):
    model = empty_full_model
    encoders = [model.vision_encoder, model.text_encoder]
    assert all(p.is_meta for e in encoders for p in e.parameters())
    with init_empty_weights():
        reference = import_imagebind_model().imagebind_huge()
    real = _count(v for k, v in reference.named_parameters() if k in filter_official_state_dict(dict(reference.named_parameters())))
    encoder = _count(p for e in encoders for p in e.parameters())
    assert abs(encoder - real) / real < 0.01
    assert abs(encoder - 0.99e9) / 0.99e9 < 0.01
    llm = model.llm
    base = _count(p for n, p in llm.named_parameters() if "lora_" not in n)
    lora = _count(p for n, p in llm.named_parameters() if "lora_" in n)
    assert abs(base - 6.74e9) / 6.74e9 < 0.001
    assert lora == 33_554_432  # 32 layers x 4 projections x r=32 x (4096 + 4096)
    assert model.llama_proj.weight.shape == (4096, 1024)


def test_encoder_keys_and_shapes_equal_imagebind_huge(empty_full_model):
    with init_empty_weights():
        reference = import_imagebind_model().imagebind_huge()
    expected = {k: tuple(v.shape) for k, v in filter_official_state_dict(reference.state_dict()).items()}
    vision = {k: tuple(v.shape) for k, v in empty_full_model.vision_encoder.state_dict().items()}
    text = {k: tuple(v.shape) for k, v in empty_full_model.text_encoder.state_dict().items()}
    assert all(".vision." in k for k in vision) and all(".text." in k for k in text)
    own = {**vision, **text}
    assert len(own) == len(vision) + len(text) and own == expected
    assert own["modality_trunks.vision.blocks.31.mlp.fc1.weight"] == (5120, 1280)
    assert own["modality_preprocessors.text.token_embedding.weight"] == (49408, 1024)


def test_stage_tokens_are_taken_after_the_quarter_blocks(empty_full_model):
    vision = empty_full_model.vision_encoder
    assert empty_full_model.config.vision.stages == vision.stages == (7, 15, 23, 31)
    assert vision.stage_channels == (1280,) * 4 and vision.stage_strides == (14,) * 4
    assert vision.stage_grids(224) == [(16, 16)] * 4
    assert all(torch.Size([1024, 1280]) == linear.weight.shape for linear in empty_full_model.stage_projection.linears)
