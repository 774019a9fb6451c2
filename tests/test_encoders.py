import subprocess
import sys

import pytest
import torch

from siad import SIADConfig
from siad.encoders import (ImageBindTextEncoder, ImageBindTokenizer, ImageBindVision, filter_official_state_dict,
                           import_imagebind_model, load_official_checkpoint)


@pytest.mark.slow
def test_imagebind_package_init_is_never_run():
    code = ("import sys; from siad.encoders import import_imagebind_model; import_imagebind_model(); "
            "assert 'imagebind.data' not in sys.modules, 'imagebind.data was imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


@pytest.fixture(scope="module")
def tokenizer():
    return ImageBindTokenizer()


def _towers(config):
    return ImageBindVision(config.vision, config.embed_dim), ImageBindTextEncoder(config.text, config.embed_dim)


@pytest.fixture(scope="module")
def vision():
    torch.manual_seed(0)
    return _towers(SIADConfig.tiny())[0].eval()


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return _towers(SIADConfig.tiny())[1].eval()


def test_tokenizer_pack_truncates_the_named_piece(tokenizer):
    long_name = tokenizer.encode("very " * 100 + "long class")
    suffix = tokenizer.encode("with damaged")
    ids = tokenizer.pack([[1, 2], long_name, suffix], shrink=1)
    assert len(ids) == 77 and ids[0] == tokenizer.sot_id and ids[-1] == tokenizer.eot_id
    assert ids[-1 - len(suffix):-1] == suffix  # the state words survive
    assert tokenizer.truncate("a " * 200, 10).count("a") == 10


def test_stage_tokens_and_embedding_shapes(vision):
    pixels = torch.randn(2, 3, 224, 224)
    out = vision(pixels)
    assert len(out.stage_tokens) == 4 and out.grids == [(16, 16)] * 4
    assert vision.stage_channels == (32,) * 4 and vision.stage_strides == (14,) * 4
    for tokens, maps in zip(out.stage_tokens, out.stage_maps):
        assert tokens.shape == (2, 256, 32) and maps.shape == (2, 32, 16, 16)
    assert out.image_embedding.shape == (2, 32)
    assert torch.allclose(out.image_embedding.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_stage_tokens_equal_forward_hooks_on_the_blocks(vision):
    """The block-by-block run gives exactly what forward hooks on blocks[i] see (layout L x B x D)."""
    seen = {}
    hooks = [vision.modality_trunks["vision"].blocks[i].register_forward_hook(
        lambda m, a, o, i=i: seen.__setitem__(i, o)) for i in (0, 1, 2, 3)]
    try:
        pixels = torch.randn(1, 3, 224, 224)
        out = vision(pixels)
    finally:
        for h in hooks:
            h.remove()
    for k, i in enumerate((0, 1, 2, 3)):
        assert seen[i].shape == (257, 1, 32)
        assert torch.equal(out.stage_tokens[k], seen[i][1:].permute(1, 0, 2))


def test_text_matches_imagebind_forward(encoder, tokenizer):
    """Our text path equals the upstream ImageBind text forward (77-token padding) on trimmed ids."""
    full = tokenizer._bpe(["a photo of a damaged bottle.", "a photo of a screw."])  # 2 x 77
    ours = encoder.encode_text(tokenizer.batch(["a photo of a damaged bottle.", "a photo of a screw."]))
    pre = encoder.modality_preprocessors["text"](text=full)
    hidden = encoder.modality_trunks["text"](**pre["trunk"])
    theirs = encoder.modality_heads["text"](hidden, **pre["head"])
    theirs = torch.nn.functional.normalize(theirs, dim=-1)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_learnable_vectors_replace_placeholders(encoder, tokenizer):
    ids = tokenizer.batch(["x x bottle"])
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[0, 1:3] = True
    own = encoder.token_embeddings(ids)
    same = encoder.encode_text(ids, own.clone(), mask)
    assert torch.allclose(same, encoder.encode_text(ids), atol=1e-6)
    vectors = torch.randn_like(own, requires_grad=True)
    changed = encoder.encode_text(ids, vectors, mask)
    assert not torch.allclose(changed, same)
    changed.sum().backward()
    assert vectors.grad[0, 1:3].abs().sum() > 0 and vectors.grad[0, 3:].abs().sum() == 0


def _tiny_official_state(seed: int) -> dict:
    torch.manual_seed(seed)
    module = import_imagebind_model()
    full = module.ImageBindModel(vision_embed_dim=32, vision_num_blocks=4, vision_num_heads=4, text_embed_dim=32,
                                 text_num_blocks=2, text_num_heads=4, out_embed_dim=32, audio_embed_dim=16,
                                 audio_num_blocks=1, audio_num_heads=2, depth_embed_dim=16, depth_num_blocks=1,
                                 depth_num_heads=2, thermal_embed_dim=16, thermal_num_blocks=1,
                                 thermal_num_heads=2, imu_embed_dim=16, imu_num_blocks=1, imu_num_heads=2)
    return full.state_dict()


def test_official_checkpoint_loads_strictly(tmp_path):
    state = _tiny_official_state(3)
    assert any(k.startswith("modality_trunks.audio") for k in state)  # all modalities, as the official file
    path = tmp_path / "imagebind_tiny.pth"
    torch.save(state, path)
    towers = _towers(SIADConfig.tiny())
    load_official_checkpoint(list(towers), path)
    for tower in towers:
        for key, value in tower.state_dict().items():
            assert torch.equal(value, state[key]), key
    assert set(towers[0].state_dict()) | set(towers[1].state_dict()) == set(filter_official_state_dict(state))


def test_wrong_checkpoints_are_refused(tmp_path):
    encoder = list(_towers(SIADConfig.tiny()))
    state = _tiny_official_state(0)
    del state["modality_trunks.vision.blocks.0.attn.in_proj_weight"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="in_proj_weight"):
        load_official_checkpoint(encoder, path)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pth"):
        load_official_checkpoint(encoder, bad)
    with pytest.raises(FileNotFoundError):
        load_official_checkpoint(encoder, tmp_path / "nothing.pth")
    wrong_shape = tmp_path / "wide.pth"
    torch.save({k: torch.zeros([s + 1 for s in v.shape]) for k, v in _tiny_official_state(0).items()}, wrong_shape)
    with pytest.raises(ValueError, match="shape mismatch"):
        load_official_checkpoint(encoder, wrong_shape)
