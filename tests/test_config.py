import json

import pytest

from siad import SIADConfig
from siad.config import STAGE_PHRASE_CASES


def test_presets_are_valid_and_hold_the_paper_values():
    paper = SIADConfig.siad_llm()
    assert paper.vision_embed_dim == 1280 and paper.vision_num_blocks == 32
    assert paper.text_embed_dim == 1024 and paper.text_num_blocks == 24 and paper.embed_dim == 1024
    assert paper.stage_blocks == (7, 15, 23, 31)
    assert paper.adapter_lambda == 0.1
    assert paper.llm_name_or_path == "lmsys/vicuna-7b-v1.5"
    assert (paper.lora_r, paper.lora_alpha, paper.lora_dropout) == (32, 32, 0.1)
    assert paper.lora_target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert paper.pem_patch_size == 16 and paper.pem_groups == 9 and paper.logit_scale == 100.0
    assert paper.resolved_stage_phrases == STAGE_PHRASE_CASES[3]
    assert paper.grid_size == 16
    tiny = SIADConfig.tiny()
    assert tiny.llm_name_or_path is None and tiny.llm_architecture["hidden_size"] == 64


@pytest.mark.parametrize("preset", [SIADConfig.siad_llm, SIADConfig.tiny])
def test_json_round_trip(preset, tmp_path):
    config = preset(stage_phrase_case=1, si_fusion="replace", use_pem=False)
    again = SIADConfig.from_json_string(config.to_json_string())
    assert again == config
    path = tmp_path / "config.json"
    config.save(path)
    assert SIADConfig.load(path) == config
    assert json.loads(path.read_text())["stage_blocks"] == list(config.stage_blocks)


@pytest.mark.parametrize("changes, field", [
    (dict(stage_blocks=(7, 15, 23, 32)), "stage_blocks"),
    (dict(stage_blocks=(15, 7, 23, 31)), "stage_blocks"),
    (dict(vision_num_heads=12), "vision_num_heads"),
    (dict(text_num_heads=7), "text_num_heads"),
    (dict(adapter_lambda=1.5), "adapter_lambda"),
    (dict(adapter_lambda=-0.1), "adapter_lambda"),
    (dict(stage_phrase_case=4), "stage_phrase_case"),
    (dict(si_fusion="mean"), "si_fusion"),
    (dict(pem_groups=8), "pem_groups"),
    (dict(pem_patch_size=15), "pem_patch_size"),
    (dict(stage_blocks=(7, 15, 31)), "stage_phrases"),
    (dict(llm_name_or_path=None), "llm_name_or_path"),
    (dict(num_prompt_vectors=0), "num_prompt_vectors"),
    (dict(threshold=2.0), "threshold"),
])
def test_impossible_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=f"SIADConfig.{field}"):
        SIADConfig.siad_llm(**changes)


def test_three_stages_with_explicit_phrases_is_fine():
    config = SIADConfig.siad_llm(stage_blocks=(7, 15, 31), stage_phrases=("local feature of", "a", "b"))
    assert config.num_stages == 3


def test_unknown_field_is_refused():
    data = SIADConfig.tiny().to_dict()
    data["lamda"] = 0.2
    with pytest.raises(ValueError, match="lamda"):
        SIADConfig.from_dict(data)
