"""Converters on checkpoints synthesised here in the official key formats, at tiny size."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from siad import SIADConfig, SIADModel
from siad.convert import main
from siad.llm import load_language_model
from tests.test_encoders import _tiny_official_state


def _pandagpt_state(hidden: int, embed: int, layers: int, rank: int, default_segment: bool) -> dict:
    g = torch.Generator().manual_seed(5)
    state = {"llama_proj.weight": torch.randn(hidden, embed, generator=g),
             "llama_proj.bias": torch.randn(hidden, generator=g)}
    seg = ".default" if default_segment else ""
    for n in range(layers):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            base = f"llama_model.base_model.model.model.layers.{n}.self_attn.{proj}"
            state[f"{base}.lora_A{seg}.weight"] = torch.randn(rank, hidden, generator=g)
            state[f"{base}.lora_B{seg}.weight"] = torch.randn(hidden, rank, generator=g)
    return state


@pytest.fixture
def checkpoints(tmp_path):
    imagebind = tmp_path / "imagebind_tiny.pth"
    torch.save(_tiny_official_state(7), imagebind)
    pandagpt = tmp_path / "pytorch_model.pt"
    torch.save(_pandagpt_state(hidden=64, embed=32, layers=2, rank=4, default_segment=False), pandagpt)
    llm, tokenizer = load_language_model(SIADConfig.tiny())
    llm.save_pretrained(tmp_path / "tiny-llm")
    tokenizer.save_pretrained(tmp_path / "tiny-llm")
    return imagebind, pandagpt, tmp_path / "tiny-llm"


def test_imagebind_converter(checkpoints, tmp_path):
    imagebind, _, _ = checkpoints
    out = tmp_path / "enc.safetensors"
    assert main(["imagebind", str(imagebind), str(out), "--preset", "tiny"]) == 0
    converted = load_file(out)
    original = torch.load(imagebind, weights_only=True)
    assert not any(k.startswith("modality_trunks.audio") for k in converted)
    for key, value in converted.items():
        assert torch.equal(value, original[key])


@pytest.mark.parametrize("default_segment", [False, True])
def test_pandagpt_converter(tmp_path, default_segment):
    path = tmp_path / "delta.pt"
    state = _pandagpt_state(hidden=64, embed=32, layers=2, rank=4, default_segment=default_segment)
    torch.save(state, path)
    assert main(["pandagpt", str(path), str(tmp_path / "out")]) == 0
    proj = load_file(tmp_path / "out" / "llama_proj.safetensors")
    assert torch.equal(proj["weight"], state["llama_proj.weight"])
    adapter = load_file(tmp_path / "out" / "llm_adapter" / "adapter_model.safetensors")
    seg = ".default" if default_segment else ""
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    assert torch.equal(adapter[key], state[f"llama_model.{key.replace('.weight', seg + '.weight')}"])
    assert len(adapter) == 16


def test_init_builds_a_loadable_model(checkpoints, tmp_path):
    imagebind, pandagpt, llm_dir = checkpoints
    out = tmp_path / "init"
    code = main(["init", "--imagebind", str(imagebind), "--pandagpt", str(pandagpt), "--llm", str(llm_dir),
                 "--out", str(out), "--preset", "tiny"])
    assert code == 0
    model = SIADModel.from_pretrained(out)
    original = torch.load(imagebind, weights_only=True)
    encoders = {"vision": model.vision_encoder, "text": model.text_encoder}
    for modality, encoder in encoders.items():
        for key, value in encoder.state_dict().items():
            assert f".{modality}." in key, key  # each tower holds its own modality's official entries
            assert torch.equal(value, original[key]), key
    stored = {k for encoder in encoders.values() for k in encoder.state_dict()}
    assert stored == {k for k in original if k.split(".")[1] in encoders}  # every vision and text entry
    delta = torch.load(pandagpt, weights_only=True)
    assert torch.equal(model.llama_proj.weight, delta["llama_proj.weight"])
    lora_b = dict(model.llm.named_parameters())["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    assert torch.equal(lora_b, delta["llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"])
    assert torch.count_nonzero(model.sem.convs[0].weight) == 0  # fresh modules, SEM starts at zero
    result = model.detect([np.zeros((32, 32, 3), dtype=np.uint8)], ["bottle"])[0]
    assert result.anomaly_map.shape == (32, 32)


def test_wrong_files_name_the_file_and_the_expectation(checkpoints, tmp_path, capsys):
    imagebind, pandagpt, llm_dir = checkpoints
    out = tmp_path / "x"
    # a PandaGPT file where ImageBind is expected, and the other way round
    assert main(["imagebind", str(pandagpt), str(out), "--preset", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "pytorch_model.pt" in err and "ImageBind" in err
    assert main(["pandagpt", str(imagebind), str(out)]) == 1
    err = capsys.readouterr().err
    assert "imagebind_tiny.pth" in err and "llama_proj" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint")
    assert main(["pandagpt", str(junk), str(out)]) == 1
    assert "junk.pt" in capsys.readouterr().err
    # a pickle that is not weights-only is refused by torch.load(weights_only=True)
    evil = tmp_path / "evil.pt"
    torch.save({"llama_proj.weight": torch.zeros(2, 2), "payload": object()}, evil)
    assert main(["pandagpt", str(evil), str(out)]) == 1
    assert "weights_only" in capsys.readouterr().err
    # the huge preset does not accept the tiny encoder
    assert main(["imagebind", str(imagebind), str(out)]) == 1
    assert "is not an ImageBind checkpoint" in capsys.readouterr().err
