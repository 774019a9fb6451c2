import json
import warnings
from pathlib import Path

import pytest

from siad import SIADConfig
from siad.config import (CONFIG_FORMAT_VERSION, MAX_INPUT_SIDE_LIMIT, STAGE_PHRASE_CASES, EfficientNetLiteConfig,
                         ImageBindVisionConfig, MapConfig, upgrade_config_dict)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _format3_dict() -> dict:
    """A real format-3 config.json (flat), written by the siad of that format."""
    return json.loads((FIXTURES / "format3_tiny" / "config.json").read_text())


def test_presets_are_valid_and_hold_the_paper_values():
    paper = SIADConfig.siad_llm()
    assert isinstance(paper.vision, ImageBindVisionConfig) and paper.vision.backbone == "imagebind"
    assert paper.vision.width == 1280 and paper.vision.num_blocks == 32 and paper.vision.patch_size == 14
    assert paper.text.width == 1024 and paper.text.num_blocks == 24 and paper.embed_dim == 1024
    assert paper.vision.stages == (7, 15, 23, 31) and paper.vision.stage_strides == (14,) * 4
    assert paper.map.adapter_lambda == 0.1
    assert paper.llm.name_or_path == "lmsys/vicuna-7b-v1.5"
    assert (paper.llm.lora_r, paper.llm.lora_alpha, paper.llm.lora_dropout) == (32, 32, 0.1)
    assert paper.llm.lora_target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert paper.map.pem_patch_size == 16 and paper.map.pem_groups == 9 and paper.map.logit_scale == 100.0
    assert paper.resolved_stage_phrases == STAGE_PHRASE_CASES[3]
    assert paper.map.self_reference_weight == 0.0 and not paper.vision.trainable and not paper.text.trainable
    tiny = SIADConfig.tiny()
    assert tiny.llm.name_or_path is None and tiny.llm.architecture["hidden_size"] == 64
    mini = SIADConfig.mini()
    assert isinstance(mini.vision, EfficientNetLiteConfig) and mini.vision.backbone.startswith("efficientnet_lite")
    assert mini.vision.pretrained and not mini.vision.trainable and mini.text.trainable
    assert len(mini.resolved_stage_phrases) == mini.num_stages
    v2 = SIADConfig.mini_v2()
    assert v2.vision.backbone == "imagebind" and v2.vision.trainable and v2.text.trainable


@pytest.mark.parametrize("preset", [SIADConfig.siad_llm, SIADConfig.tiny, SIADConfig.mini])
def test_json_round_trip(preset, tmp_path):
    config = preset(text=dict(stage_prompt_mode="concat"), map=dict(si_fusion="replace", use_pem=False))
    again = SIADConfig.from_json_string(config.to_json_string())
    assert again == config and type(again.vision) is type(config.vision)
    path = tmp_path / "config.json"
    config.save(path)
    assert SIADConfig.load(path) == config
    saved = json.loads(path.read_text())
    assert saved["vision"]["stages"] == list(config.vision.stages)
    assert saved["vision"]["backbone"] == config.vision.backbone and saved["map"]["si_fusion"] == "replace"


@pytest.mark.parametrize("changes, field", [
    (dict(vision=dict(stages=(7, 15, 23, 32))), "vision.stages"),
    (dict(vision=dict(stages=(15, 7, 23, 31))), "vision.stages"),
    (dict(vision=dict(num_heads=12)), "vision.num_heads"),
    (dict(text=dict(num_heads=7)), "text.num_heads"),
    (dict(map=dict(adapter_lambda=1.5)), "map.adapter_lambda"),
    (dict(map=dict(adapter_lambda=-0.1)), "map.adapter_lambda"),
    (dict(text=dict(stage_phrase_case=4)), "text.stage_phrase_case"),
    (dict(map=dict(si_fusion="mean")), "map.si_fusion"),
    (dict(map=dict(pem_groups=8)), "map.pem_groups"),
    (dict(map=dict(pem_patch_size=15)), "map.pem_patch_size"),
    (dict(vision=dict(stages=(7, 15, 31))), "text.stage_phrases"),
    (dict(llm=dict(name_or_path=None)), "llm.name_or_path"),
    (dict(text=dict(num_prompt_vectors=0)), "text.num_prompt_vectors"),
    (dict(map=dict(threshold=2.0)), "map.threshold"),
    (dict(vision=dict(image_size=256)), "vision.image_size"),
])
def test_impossible_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=f"SIADConfig.{field}"):
        SIADConfig.siad_llm(**changes)


def test_three_stages_with_explicit_phrases_is_fine():
    config = SIADConfig.siad_llm(vision=dict(stages=(7, 15, 31)), text=dict(stage_phrases=("local feature of", "a", "b")))
    assert config.num_stages == 3


def test_unknown_fields_are_refused():
    data = SIADConfig.tiny().to_dict()
    data["lamda"] = 0.2
    with pytest.raises(ValueError, match="lamda"):
        SIADConfig.from_dict(data)
    data = SIADConfig.tiny().to_dict()
    data["map"]["lamda"] = 0.2
    with pytest.raises(ValueError, match=r"SIADConfig.map: unknown field\(s\) \['lamda'\]"):
        SIADConfig.from_dict(data)
    with pytest.raises(ValueError, match="lamda"):
        SIADConfig.tiny(map=dict(lamda=0.2))
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['threshold'\].*parts"):
        SIADConfig.tiny(threshold=0.2)  # a part's field given at the top level


def test_an_unknown_backbone_or_stage_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown backbone; known: \['efficientnet_lite0', 'efficientnet_lite1', "
                                         r"'efficientnet_lite2', 'imagebind'\]"):
        SIADConfig.mini(vision=dict(backbone="resnet50"))
    data = SIADConfig.mini().to_dict()
    data["vision"]["backbone"] = "vit_b16"
    with pytest.raises(ValueError, match="known: .*efficientnet_lite0"):
        SIADConfig.from_dict(data)
    with pytest.raises(ValueError, match=r"SIADConfig.vision.stages=\(2, 7\).*block groups are 0..6"):
        SIADConfig.mini(vision=dict(stages=(2, 7)))
    with pytest.raises(ValueError, match=r"SIADConfig.vision.backbone='efficientnet_lite3': must be one of"):
        EfficientNetLiteConfig(backbone="efficientnet_lite3")
    with pytest.raises(ValueError, match="SIADConfig.vision.trainable=True.*frozen"):
        SIADConfig.mini(vision=dict(trainable=True))
    with pytest.raises(ValueError, match="encoder_checkpoint.*imagebind"):
        SIADConfig.mini(encoder_checkpoint="imagebind_huge.pth")


def test_replace_changes_fields_inside_a_part_and_switches_backbones():
    config = SIADConfig.tiny()
    changed = config.replace(map={"threshold": 0.25}, embed_dim=32)
    assert changed.map.threshold == 0.25 and changed.map.logit_scale == config.map.logit_scale
    assert config.map.threshold == 0.5  # the original is left alone
    switched = SIADConfig.mini().replace(vision={"backbone": "efficientnet_lite1", "image_size": 240})
    assert switched.vision.backbone == "efficientnet_lite1" and switched.vision.stages == (2, 4)
    to_imagebind = SIADConfig.mini().replace(vision={"backbone": "imagebind", "width": 32, "num_blocks": 4,
                                                     "num_heads": 4, "stages": (1, 3)})
    assert isinstance(to_imagebind.vision, ImageBindVisionConfig)
    assert to_imagebind.vision.image_mean != SIADConfig.mini().vision.image_mean  # ImageBind's own defaults


# ---------------------------------------------------------------------- types and bounds of every field
@pytest.mark.parametrize("changes, field", [
    (dict(map=dict(threshold="0.5")), "map.threshold"),
    (dict(map=dict(threshold=float("nan"))), "map.threshold"),
    (dict(llm=dict(temperature=float("inf"))), "llm.temperature"),
    (dict(vision=dict(max_input_side=1e9)), "vision.max_input_side"),
    (dict(vision=dict(max_input_side=2048.0)), "vision.max_input_side"),
    (dict(vision=dict(max_input_side=10**9)), "vision.max_input_side"),
    (dict(vision=dict(max_input_side=True)), "vision.max_input_side"),
    (dict(map=dict(use_sem=1)), "map.use_sem"),
    (dict(map=dict(use_sem="false")), "map.use_sem"),
    (dict(vision=dict(stages=(7.0, 15, 23, 31))), "vision.stages"),
    (dict(text=dict(stage_phrases=("a", "b", "c", 4))), "text.stage_phrases"),
    (dict(vision=dict(image_mean=(0.5, 0.5))), "vision.image_mean"),
    (dict(llm=dict(name_or_path=7)), "llm.name_or_path"),
    (dict(llm=dict(architecture=["hidden_size", 64])), "llm.architecture"),
    (dict(llm=dict(lora_target_modules="q_proj")), "llm.lora_target_modules"),
    (dict(embed_dim="1024"), "embed_dim"),
])
def test_a_value_of_the_wrong_type_is_a_value_error_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=f"SIADConfig.{field}="):
        SIADConfig.siad_llm(**changes)


def test_a_saved_config_with_a_string_threshold_names_the_file_and_the_field(tmp_path):
    data = SIADConfig.tiny().to_dict()
    data["map"]["threshold"] = "0.5"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"config.json: SIADConfig.map.threshold='0.5'"):
        SIADConfig.load(path)


def test_ints_are_valid_floats_and_stored_as_floats():
    config = SIADConfig.siad_llm(map=dict(threshold=1, logit_scale=50))
    assert config.map.threshold == 1.0 and isinstance(config.map.threshold, float)
    assert isinstance(config.map.logit_scale, float)
    assert SIADConfig.siad_llm(vision=dict(max_input_side=MAX_INPUT_SIDE_LIMIT)).vision.max_input_side == MAX_INPUT_SIDE_LIMIT


# ---------------------------------------------------------------------- format versions
def test_saved_config_carries_the_format_version(tmp_path):
    path = tmp_path / "config.json"
    SIADConfig.tiny().save(path)
    assert json.loads(path.read_text())["format_version"] == CONFIG_FORMAT_VERSION == 4


def test_a_format_3_config_is_upgraded_into_parts():
    flat = _format3_dict()
    assert flat["format_version"] == 3 and "vision_embed_dim" in flat
    upgraded = upgrade_config_dict(flat)
    assert upgraded["format_version"] == 4 and flat["format_version"] == 3  # the input is left alone
    assert upgraded["vision"] == {"backbone": "imagebind", "trainable": False, "width": 32, "num_blocks": 4,
                                  "num_heads": 4, "patch_size": 14, "stages": [0, 1, 2, 3], "image_size": 224,
                                  "image_mean": flat["image_mean"], "image_std": flat["image_std"],
                                  "resize_mode": "squash", "max_input_side": 2048, "max_input_pixels": 40_000_000}
    assert upgraded["text"]["width"] == 32 and upgraded["text"]["trainable"] is False
    assert upgraded["llm"]["name_or_path"] is None and upgraded["llm"]["train"] == "lora"
    assert upgraded["map"]["threshold"] == 0.6 and upgraded["map"]["self_reference_weight"] == 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an upgrade is silent
        loaded = SIADConfig.from_saved_dict(flat)
    assert loaded == SIADConfig.tiny(map=dict(threshold=0.6, self_reference_weight=0.5))
    # the bundled v2's config (format 3, encoders trained from scratch): train_encoder became both parts'
    v2 = dict(flat, train_encoder=True, train_llm="full")
    upgraded = SIADConfig.from_saved_dict(v2)
    assert upgraded.vision.trainable and upgraded.text.trainable and upgraded.llm.train == "full"


def test_an_older_config_without_a_version_is_upgraded(tmp_path):
    old = _format3_dict()
    del old["format_version"]
    del old["min_new_tokens"]  # a field added after the config was written takes its default
    del old["pem_norm"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an upgrade is silent
        loaded = SIADConfig.load(path)
    # their PEM had a per-patch LayerNorm: the upgrade says so
    assert loaded == SIADConfig.tiny(map=dict(threshold=0.6, self_reference_weight=0.5, pem_norm="layer"))
    # and an older config still refuses keys that no version of siad wrote, by name
    old["lamda"] = 0.2
    path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="lamda"):
        SIADConfig.load(path)


def test_a_format_2_config_is_upgraded_to_the_layernorm_pem_and_an_old_wo_sp_model_is_refused():
    old = _format3_dict()
    del old["pem_norm"]
    old["format_version"] = 2
    assert SIADConfig.from_saved_dict(old).map.pem_norm == "layer"
    old["use_stage_prompts"] = False
    with pytest.raises(ValueError, match="w/o SP.*cannot be loaded"):
        upgrade_config_dict(old)


def test_the_bundled_mini_config_is_of_the_current_format_and_loads():
    path = Path(__file__).resolve().parents[1] / "checkpoints" / "siad-mini" / "config.json"
    assert json.loads(path.read_text())["format_version"] == CONFIG_FORMAT_VERSION
    config = SIADConfig.load(path)
    assert config.vision.backbone == SIADConfig.mini().vision.backbone


def test_a_newer_config_with_unknown_keys_loads_with_a_warning_naming_them(tmp_path):
    newer = SIADConfig.tiny(map=dict(threshold=0.6)).to_dict()
    newer.update(format_version=CONFIG_FORMAT_VERSION + 1, fancy_option=[1, 2])
    newer["map"]["map_head_dtype"] = "float32"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(newer))
    with pytest.warns(UserWarning, match=r"newer siad.*\['fancy_option', 'map.map_head_dtype'\]") as caught:
        loaded = SIADConfig.load(path)
    assert str(path) in str(caught[0].message)
    assert loaded == SIADConfig.tiny(map=dict(threshold=0.6))
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
    assert (config.map.few_shot_weight, config.map.few_shot_features, config.map.max_bank_patches) == (0.9, "trunk", 4096)
    # siad.references' defaults are the config's (one place)
    assert references.DEFAULT_FEW_SHOT_WEIGHT == MapConfig.few_shot_weight == config.map.few_shot_weight
    assert references.DEFAULT_FEATURES == config.map.few_shot_features
    assert references.DEFAULT_MAX_BANK_PATCHES == config.map.max_bank_patches
    changed = SIADConfig.tiny(map=dict(max_bank_patches=None, few_shot_weight=0, few_shot_features="visual"))
    assert changed.map.few_shot_weight == 0.0
    for changes, field in ((dict(few_shot_weight=1.5), "few_shot_weight"), (dict(few_shot_weight=-0.1), "few_shot_weight"),
                           (dict(few_shot_weight="0.9"), "few_shot_weight"), (dict(few_shot_features="raw"), "few_shot_features"),
                           (dict(max_bank_patches=0), "max_bank_patches"), (dict(max_bank_patches=4096.0), "max_bank_patches")):
        with pytest.raises(ValueError, match=f"SIADConfig.map.{field}="):
            SIADConfig.tiny(map=changes)
    # a format-3 config saved before the fields existed loads with the defaults, silently
    saved = _format3_dict()
    for name in ("few_shot_weight", "few_shot_features", "max_bank_patches"):
        del saved[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SIADConfig.from_saved_dict(saved) == SIADConfig.tiny(map=dict(threshold=0.6, self_reference_weight=0.5))
    assert SIADConfig.from_json_string(SIADConfig.tiny(map=dict(max_bank_patches=None)).to_json_string()).map.max_bank_patches is None
