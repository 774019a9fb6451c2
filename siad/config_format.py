"""The format of a saved config.json and the upgrades of older formats: the config's fields
(`upgrade_config_dict`) and, for the formats that renamed them, the weights' names in model.safetensors
(`renamed_weight_keys`). `SIADConfig.from_saved_dict` (`siad.config`) reads saved configs through it.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from siad.jsonfile import short_repr

# The format of a saved config.json. 1: the configs written before the version existed (no
# "format_version" key); 2: the version key itself; 3: `pem_norm` (PEM's normalisation, before always
# a per-patch LayerNorm) and `use_stage_prompts=False` keeping the prompt vectors; 4: the config in
# parts (vision / text / llm / map) with a named vision backbone, and the encoders saved as
# `vision_encoder.*` and `text_encoder.*` (format 3 folders held both as `encoder.*`). A newer siad
# that changes the meaning of a field raises this and adds the step to `upgrade_config_dict`; a field
# added with a default that keeps older models' behaviour needs no step.
CONFIG_FORMAT_VERSION = 4
FORMAT_VERSION_KEY = "format_version"


def saved_format_version(data: Mapping[str, Any], source: str = "config") -> int:
    """The format version of a saved config dict: its `format_version`, 1 when there is none."""
    version = data.get(FORMAT_VERSION_KEY, 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{source}: format_version={short_repr(version)} must be a positive integer")
    return version


# Format 3's flat fields -> (part, field) of format 4; "" is the top level. train_encoder became the
# vision and the text part's `trainable`.
_FORMAT_3_FIELDS: dict[str, tuple[str, str]] = {
    "vision_embed_dim": ("vision", "width"), "vision_num_blocks": ("vision", "num_blocks"),
    "vision_num_heads": ("vision", "num_heads"), "vision_patch_size": ("vision", "patch_size"),
    "stage_blocks": ("vision", "stages"), "image_size": ("vision", "image_size"),
    "image_mean": ("vision", "image_mean"), "image_std": ("vision", "image_std"),
    "resize_mode": ("vision", "resize_mode"), "max_input_side": ("vision", "max_input_side"),
    "max_input_pixels": ("vision", "max_input_pixels"),
    "text_embed_dim": ("text", "width"), "text_num_blocks": ("text", "num_blocks"),
    "text_num_heads": ("text", "num_heads"), "num_prompt_vectors": ("text", "num_prompt_vectors"),
    "stage_phrase_case": ("text", "stage_phrase_case"), "stage_phrases": ("text", "stage_phrases"),
    "stage_prompt_mode": ("text", "stage_prompt_mode"), "use_stage_prompts": ("text", "use_stage_prompts"),
    "llm_name_or_path": ("llm", "name_or_path"), "llm_architecture": ("llm", "architecture"),
    "lora_r": ("llm", "lora_r"), "lora_alpha": ("llm", "lora_alpha"), "lora_dropout": ("llm", "lora_dropout"),
    "lora_target_modules": ("llm", "lora_target_modules"), "train_llm": ("llm", "train"),
    "max_new_tokens": ("llm", "max_new_tokens"), "min_new_tokens": ("llm", "min_new_tokens"),
    "do_sample": ("llm", "do_sample"), "temperature": ("llm", "temperature"), "top_p": ("llm", "top_p"),
    "max_text_tokens": ("llm", "max_text_tokens"), "chat_cache_size": ("llm", "chat_cache_size"),
    **{name: ("map", name) for name in (
        "adapter_lambda", "use_adapter", "use_sem", "use_pem", "use_self_improvement", "logit_scale",
        "center_patch_features", "pem_patch_size", "pem_groups", "pem_norm", "si_fusion", "si_train_response",
        "few_shot_weight", "few_shot_features", "max_bank_patches", "self_reference_weight",
        "self_reference_radius", "score_smoothing_sigma", "threshold", "max_map_pixels")},
    **{name: ("", name) for name in ("embed_dim", "encoder_checkpoint", "focal_gamma", "focal_weight",
                                      "dice_weight", "lm_weight")},
}


def upgrade_config_dict(data: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """A saved config dict of this or an older format -> a new dict in the current format
    (`format_version` = CONFIG_FORMAT_VERSION). Each format step is one block below.

    1 -> 2: format 1 is every config written before the version key existed; its fields mean what
    they mean in format 2 (fields added since then take their defaults), so only the key is added.
    2 -> 3: those models' PEM normalised each map patch with a LayerNorm (`pem_norm="layer"`, whose
    weights they hold). Their "w/o SP" ablation (`use_stage_prompts=False`) had no prompt vectors,
    which format 3's keeps: such a folder cannot be loaded (ValueError saying so).
    3 -> 4: the flat fields go into their parts (`_FORMAT_3_FIELDS`); the vision part is ImageBind's
    (`backbone="imagebind"`, the only backbone before format 4); `train_encoder` becomes both
    `vision.trainable` and `text.trainable`. (The weights' key names change too: `renamed_weight_keys`
    renames `encoder.*` when such a folder is loaded.) An unknown flat key is kept at the top level, where
    `from_dict` refuses it by name.
    """
    version = saved_format_version(data, source)
    if version > CONFIG_FORMAT_VERSION:
        raise ValueError(f"{source}: format {version} is newer than this siad's {CONFIG_FORMAT_VERSION}; "
                         f"it cannot be upgraded, only read (SIADConfig.from_saved_dict)")
    upgraded = dict(data)
    if version == 1:
        version = 2
    if version == 2:
        if upgraded.get("use_stage_prompts") is False:
            raise ValueError(f"{source}: a 'w/o SP' ablation model of format 2 (use_stage_prompts=false without "
                             f"learnable prompt vectors); since format 3 that switch keeps the vectors and removes "
                             f"only the stage phrase, so this model cannot be loaded: train it again")
        upgraded.setdefault("pem_norm", "layer")
        version = 3
    if version == 3:
        flat = {k: v for k, v in upgraded.items() if k != FORMAT_VERSION_KEY}
        nested: dict[str, Any] = {"vision": {"backbone": "imagebind"}, "text": {}, "llm": {}, "map": {}}
        if "train_encoder" in flat:
            trainable = flat.pop("train_encoder")
            nested["vision"]["trainable"] = nested["text"]["trainable"] = trainable
        for key, value in flat.items():
            part, name = _FORMAT_3_FIELDS.get(key, ("", key))
            if part:
                nested[part][name] = value
            else:
                nested[name] = value
        upgraded = nested
        version = 4
    upgraded[FORMAT_VERSION_KEY] = version
    return upgraded


# Config format 4 split the ImageBind `encoder` (vision and text trunks in one module) into
# `vision_encoder` and `text_encoder`: the stored name prefix -> the current one.
_FORMAT_3_WEIGHT_PREFIXES = {f"encoder.{group}.{modality}.": f"{modality}_encoder.{group}.{modality}."
                             for group in ("modality_preprocessors", "modality_trunks", "modality_heads",
                                           "modality_postprocessors") for modality in ("vision", "text")}


def renamed_weight_keys(names: Iterable[str], format_version: int) -> dict[str, str]:
    """stored name -> the model's name of every weight in a model folder's model.safetensors, by the
    config format the folder was written in (before format 4 the encoders were `encoder.*`)."""
    out = {}
    for name in names:
        new = name
        if format_version < 4:
            for old, current in _FORMAT_3_WEIGHT_PREFIXES.items():
                if name.startswith(old):
                    new = current + name[len(old):]
                    break
        out[name] = new
    return out
