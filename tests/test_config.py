import json
import warnings
from pathlib import Path

import pytest

from siad import SIADConfig
from siad.config import CONFIG_FORMAT_VERSION, MAX_INPUT_SIDE_LIMIT, STAGE_PHRASE_CASES, upgrade_config_dict


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


# ---------------------------------------------------------------------- types and bounds of every field
@pytest.mark.parametrize("changes, field", [
    (dict(threshold="0.5"), "threshold"),
    (dict(threshold=float("nan")), "threshold"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(max_input_side=1e9), "max_input_side"),
    (dict(max_input_side=2048.0), "max_input_side"),
    (dict(max_input_side=10**9), "max_input_side"),
    (dict(max_input_side=True), "max_input_side"),
    (dict(use_sem=1), "use_sem"),
    (dict(use_sem="false"), "use_sem"),
    (dict(stage_blocks=(7.0, 15, 23, 31)), "stage_blocks"),
    (dict(stage_phrases=("a", "b", "c", 4)), "stage_phrases"),
    (dict(image_mean=(0.5, 0.5)), "image_mean"),
    (dict(llm_name_or_path=7), "llm_name_or_path"),
    (dict(llm_architecture=["hidden_size", 64]), "llm_architecture"),
    (dict(lora_target_modules="q_proj"), "lora_target_modules"),
])
def test_a_value_of_the_wrong_type_is_a_value_error_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=f"SIADConfig.{field}="):
        SIADConfig.siad_llm(**changes)


def test_a_saved_config_with_a_string_threshold_names_the_field(tmp_path):
    data = SIADConfig.tiny().to_dict()
    data["threshold"] = "0.5"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="SIADConfig.threshold='0.5'"):
        SIADConfig.load(path)


def test_ints_are_valid_floats_and_stored_as_floats():
    config = SIADConfig.siad_llm(threshold=1, logit_scale=50)
    assert config.threshold == 1.0 and isinstance(config.threshold, float)
    assert isinstance(config.logit_scale, float)
    assert SIADConfig.siad_llm(max_input_side=MAX_INPUT_SIDE_LIMIT).max_input_side == MAX_INPUT_SIDE_LIMIT


# ---------------------------------------------------------------------- format versions
def test_saved_config_carries_the_format_version(tmp_path):
    path = tmp_path / "config.json"
    SIADConfig.tiny().save(path)
    assert json.loads(path.read_text())["format_version"] == CONFIG_FORMAT_VERSION == 3


def test_an_older_config_without_a_version_is_upgraded(tmp_path):
    old = SIADConfig.tiny(threshold=0.7).to_dict()
    del old["format_version"]
    del old["min_new_tokens"]  # a field added after the config was written takes its default
    del old["pem_norm"]
    # their PEM had a per-patch LayerNorm: the upgrade says so
    assert upgrade_config_dict(old) == {**old, "pem_norm": "layer", "format_version": CONFIG_FORMAT_VERSION}
    assert "format_version" not in old  # the input is left alone
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an upgrade is silent
        loaded = SIADConfig.load(path)
    assert loaded == SIADConfig.tiny(threshold=0.7, pem_norm="layer")
    # and an older config still refuses keys that no version of siad wrote
    old["lamda"] = 0.2
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="lamda"):
        SIADConfig.load(path)


def test_a_format_2_config_is_upgraded_to_the_layernorm_pem_and_an_old_wo_sp_model_is_refused():
    old = SIADConfig.tiny().to_dict()
    del old["pem_norm"]
    old["format_version"] = 2
    assert SIADConfig.from_saved_dict(old).pem_norm == "layer"
    old["use_stage_prompts"] = False
    with pytest.raises(ValueError, match="w/o SP.*cannot be loaded"):
        upgrade_config_dict(old)


def test_the_bundled_mini_config_is_of_the_current_format_and_loads():
    path = Path(__file__).resolve().parents[1] / "checkpoints" / "siad-mini" / "config.json"
    assert json.loads(path.read_text())["format_version"] == CONFIG_FORMAT_VERSION  # v2, saved by this siad
    assert SIADConfig.load(path).num_stages == 4


def test_a_newer_config_with_unknown_keys_loads_with_a_warning_naming_them(tmp_path):
    newer = SIADConfig.tiny(threshold=0.6).to_dict()
    newer.update(format_version=CONFIG_FORMAT_VERSION + 1, map_head_dtype="float32", fancy_option=[1, 2])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(newer))
    with pytest.warns(UserWarning, match=r"newer siad.*\['fancy_option', 'map_head_dtype'\]") as caught:
        loaded = SIADConfig.load(path)
    assert str(path) in str(caught[0].message)
    assert loaded == SIADConfig.tiny(threshold=0.6)
    with pytest.raises(ValueError, match="newer"):
        upgrade_config_dict(newer)


def test_user_dicts_stay_strict_and_versions_must_be_integers():
    data = SIADConfig.tiny().to_dict()
    assert SIADConfig.from_dict(data) == SIADConfig.tiny()  # to_dict round-trips
    data["format_version"] = CONFIG_FORMAT_VERSION + 1
    with pytest.raises(ValueError, match="format_version"):
        SIADConfig.from_dict(data)
    for version in ("2", 0, 1.5, True):
        data["format_version"] = version
        with pytest.raises(ValueError, match="format_version"):
            SIADConfig.from_saved_dict(data)
    with pytest.raises(ValueError, match="JSON object"):
        SIADConfig.from_saved_dict([1, 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        SIADConfig.from_json_string("{oops")


# ---------------------------------------------------------------------- few-shot fields (no format step)
def test_few_shot_fields_defaults_validation_and_older_configs():
    from siad import references

    config = SIADConfig.tiny()
    assert (config.few_shot_weight, config.few_shot_features, config.max_bank_patches) == (0.9, "trunk", 4096)
    # siad.references' defaults are the config's (one place)
    assert references.DEFAULT_FEW_SHOT_WEIGHT == config.few_shot_weight
    assert references.DEFAULT_FEATURES == config.few_shot_features
    assert references.DEFAULT_MAX_BANK_PATCHES == config.max_bank_patches
    assert SIADConfig.tiny(max_bank_patches=None, few_shot_weight=0, few_shot_features="visual").few_shot_weight == 0.0
    for changes, field in ((dict(few_shot_weight=1.5), "few_shot_weight"), (dict(few_shot_weight=-0.1), "few_shot_weight"),
                           (dict(few_shot_weight="0.9"), "few_shot_weight"), (dict(few_shot_features="raw"), "few_shot_features"),
                           (dict(max_bank_patches=0), "max_bank_patches"), (dict(max_bank_patches=4096.0), "max_bank_patches")):
        with pytest.raises(ValueError, match=f"SIADConfig.{field}="):
            SIADConfig.tiny(**changes)
    # a config saved before the fields existed (format 3 without them) loads with the defaults, silently
    saved = SIADConfig.tiny(threshold=0.6).to_dict()
    for name in ("few_shot_weight", "few_shot_features", "max_bank_patches"):
        del saved[name]
    assert saved["format_version"] == CONFIG_FORMAT_VERSION == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SIADConfig.from_saved_dict(saved) == SIADConfig.tiny(threshold=0.6)
    assert SIADConfig.from_json_string(SIADConfig.tiny(max_bank_patches=None).to_json_string()).max_bank_patches is None
