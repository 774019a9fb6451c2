"""`SIADConfig`: every hyper-parameter of SIAD-LLM in one object.

The names follow the paper (stage prompts, adapter, SEM, PEM, self-improvement) and
`DESIGN.md` section 3, where the paper leaves a point open. Two presets:

- `SIADConfig.siad_llm()`: ImageBind-Huge + Vicuna-7B with the paper's values;
- `SIADConfig.tiny()`: a model that builds in well under a second on a CPU, for tests.

A config is validated when it is constructed: a value of the wrong type (e.g. the string "0.5"
for a float) or an impossible value raises `ValueError` naming the field.

Saved configs (config.json) carry `format_version` (`CONFIG_FORMAT_VERSION`). Reading one
(`SIADConfig.load`, `from_json_string`, `from_saved_dict`) follows these rules: a config without
a version (written before versions existed: format 1) or of an older version is brought to the
current format by `upgrade_config_dict`; one written by a newer siad loads with a warning that names
the keys this version does not know (they are dropped); unknown keys in a config of this or an older
format are refused. `SIADConfig.from_dict` is for dicts a user writes: it refuses unknown keys.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

# The format of a saved config.json. 1: the configs written before the version existed (no
# "format_version" key); 2: the version key itself; 3: `pem_norm` (PEM's normalisation, before always
# a per-patch LayerNorm) and `use_stage_prompts=False` keeping the prompt vectors. A newer siad that
# changes the meaning of a field raises this and adds the step to `upgrade_config_dict`; a field added
# with a default that keeps older models' behaviour (min_new_tokens, the few-shot fields) needs no step.
CONFIG_FORMAT_VERSION = 3
FORMAT_VERSION_KEY = "format_version"

# Inputs larger than this on their longer side are refused as a setting of max_input_side: the
# bound exists to keep memory bounded, so it cannot be switched off with a huge value.
MAX_INPUT_SIDE_LIMIT = 8192

# Stage phrases of the paper's Table 6; Case 3 is the paper's default.
STAGE_PHRASE_CASES: dict[int, tuple[str, ...]] = {
    1: ("very small region of", "small region of", "large region of", "very large region of"),
    2: ("low level feature of", "mid level feature of", "mid level feature of", "high level feature of"),
    3: ("local feature of", "regional feature of", "regional feature of", "global feature of"),
}

# CLIP normalisation, used by ImageBind's vision trunk.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

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

_ENUMS: dict[str, tuple[Any, ...]] = {
    "stage_phrase_case": (1, 2, 3),
    "stage_prompt_mode": ("sum", "concat"),
    "si_fusion": ("add", "replace"),
    "pem_norm": ("center", "layer"),
    "si_train_response": ("generated", "target"),
    "resize_mode": ("squash", "center_crop"),
    "train_llm": ("lora", "full"),
    "few_shot_features": FEW_SHOT_FEATURES,
}


@dataclass
class SIADConfig:
    """Configuration of a `SIADModel`.

    Encoder (ImageBind; only the vision and text trunks are kept):
        vision_embed_dim, vision_num_blocks, vision_num_heads, vision_patch_size: the ViT trunk.
        text_embed_dim, text_num_blocks, text_num_heads: the text trunk (77-token context,
            CLIP BPE vocabulary of 49408, both fixed by ImageBind's code).
        embed_dim: the joint embedding dimension (ImageBind heads' output).
        stage_blocks: indices of the vision blocks whose output tokens form stages 1..K.
        encoder_checkpoint: where the official `imagebind_huge.pth` comes from when the encoder
            weights are not stored with the model (a local path); None if they are.

    Stage prompts (eq. 3-4, appendix D):
        num_prompt_vectors: E, learnable vectors V (normal) and W (abnormal).
        stage_phrase_case: 1, 2 or 3 (Table 6); stage_phrases overrides it when given.
        stage_prompt_mode: "sum" (t = norm(norm(T(g)) + e)) or "concat" (g followed by each
            ensemble sentence, averaged).

    Visual side:
        adapter_lambda: lambda of eq. 6.
        use_adapter, use_sem, use_pem, use_stage_prompts, use_self_improvement: the switches of
            the paper's ablations (Table 3). "w/o EM" is use_sem=False and use_pem=False.
        pem_patch_size, pem_groups: P and K of eq. 8-11 (K a square number: a sqrt(K) x sqrt(K) grid).
        pem_norm: the "Norm" of eq. 9 on each flattened map patch. "center": the map probabilities
            centred and scaled, (x - 0.5) / 0.5, which keeps each patch's level (how anomalous it is);
            "layer": a per-patch LayerNorm, which removes the level, so that an all-0 and an all-1
            map give the same tokens (every model before format 3 was trained with it; kept to load them).
        logit_scale: the scale of the cosine logits between patch and text features.
        center_patch_features: subtract each image's mean patch feature (per stage) before the cosine
            with the text (beyond the paper; for encoders trained from scratch, whose maps otherwise
            never start to localise: see `AnomalyMapHead`). False: the paper's maps.

    LLM side:
        llm_name_or_path: Hub id or local path of the causal LM (any `AutoModelForCausalLM`).
        llm_architecture: a transformers config dict; when given (and llm_name_or_path is None)
            the LLM is built with random weights from it, with SIAD's own small tokenizer.
        lora_r, lora_alpha, lora_dropout, lora_target_modules: the LoRA adapter (peft).
        max_new_tokens, min_new_tokens, do_sample, temperature, top_p: generation (greedy by
            default; min_new_tokens > 0 ignores EOS before that many tokens, and with min_new_tokens
            = max_new_tokens every answer has exactly that many tokens, `###` too: for benchmarks).
            They make the model's transformers `GenerationConfig` (`model.generation_config`).
        max_text_tokens: the most LM tokens of each user text in a prompt (description, follow-up
            question, each earlier turn); longer ones are refused (older turns left out).
        chat_cache_size: how many images' passes (Algorithm 1) `detect` and `chat` keep for
            follow-up questions, each then one generation (0: none kept).

    What trains:
        train_encoder: also train the ImageBind trunks (only for models without pretrained
            weights, such as the bundled mini model; the paper keeps ImageBind frozen).
        train_llm: "lora" (the paper: the base LLM frozen, LoRA trained) or "full" (every LLM
            weight trains: for a small LM built from scratch).

    Self-improvement (Algorithm 1):
        si_fusion: "add" (t' = norm(t + t_res)) or "replace" (t' = t_res).
        si_train_response: "generated" (R generated from pass 1 during training) or "target".

    Images and scores:
        image_size, image_mean, image_std: the encoder's input.
        resize_mode: "squash" (the whole image resized to image_size x image_size, so the map
            covers every pixel) or "center_crop" (ImageBind's own resize + centre crop).
        max_input_side: larger inputs are downscaled to this side first (bounded memory); an
            integer in [1, MAX_INPUT_SIDE_LIMIT = 8192].
        score_smoothing_sigma: Gaussian sigma applied to the map before the image score (0: off).
        threshold: the score above which an image is called anomalous.
        max_input_pixels: inputs of more pixels are refused before they are decoded (a JPEG is
            counted at the reduced scale it is decoded at); at most PIL's own hard limit.
        max_map_pixels: the anomaly maps come back at the original image size, or at a smaller
            size of the same aspect ratio when that holds more pixels than this.

    Loss (appendix B): focal_gamma, focal_weight, dice_weight, lm_weight.

    Few-shot references (DESIGN 9, beyond the paper; used only when `detect` / `chat` are given
    normal reference images or a `ReferenceBank`, so zero-shot results never depend on them):
        few_shot_weight: w in fused_k = (1 - w) * M_k + w * R_k, the text stage maps fused with the
            reference maps before PEM, in [0, 1] (0.9: measured, see `siad.references`).
        few_shot_features: the patch features of the banks, "trunk" (raw stage tokens P_k, measured
            best) or "visual" (the adapted features S_emd_k).
        max_bank_patches: the greedy coreset's bound on a bank's rows per stage (None: no bound);
            4096 keeps 16 shots of 256 patches whole.

    Self-reference (beyond the paper; zero-shot, no extra input): an image without references is its
    own reference, the "local break of the image's own regularity" (`siad.references.self_reference_maps`):
        self_reference_weight: w in fused_k = (1 - w) * M_k + w * R_self_k, fused before PEM as the
            few-shot maps are; 0 (the default, the paper's model) turns it off.
        self_reference_radius: a patch is compared with the image's patches outside its
            (2r + 1) x (2r + 1) grid neighbourhood (its own surroundings would hide a defect that spans them).
    """

    # --- encoder -------------------------------------------------------------------
    vision_embed_dim: int = 1280
    vision_num_blocks: int = 32
    vision_num_heads: int = 16
    vision_patch_size: int = 14
    text_embed_dim: int = 1024
    text_num_blocks: int = 24
    text_num_heads: int = 16
    embed_dim: int = 1024
    stage_blocks: tuple[int, ...] = (7, 15, 23, 31)
    encoder_checkpoint: str | None = None

    # --- stage prompts -------------------------------------------------------------
    num_prompt_vectors: int = 12
    stage_phrase_case: int = 3
    stage_phrases: tuple[str, ...] | None = None
    stage_prompt_mode: str = "sum"

    # --- visual modules ------------------------------------------------------------
    adapter_lambda: float = 0.1
    use_adapter: bool = True
    use_sem: bool = True
    use_pem: bool = True
    use_stage_prompts: bool = True
    use_self_improvement: bool = True
    pem_patch_size: int = 16
    pem_groups: int = 9
    pem_norm: str = "center"
    logit_scale: float = 100.0
    center_patch_features: bool = False

    # --- LLM -----------------------------------------------------------------------
    llm_name_or_path: str | None = "lmsys/vicuna-7b-v1.5"
    llm_architecture: dict[str, Any] | None = None
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    max_text_tokens: int = 256
    chat_cache_size: int = 16

    # --- what trains (the paper: the visual modules, prompt vectors, PEM, llama_proj, LoRA) ---
    train_encoder: bool = False
    train_llm: str = "lora"

    # --- self-improvement ----------------------------------------------------------
    si_fusion: str = "add"
    si_train_response: str = "generated"

    # --- images and scores ---------------------------------------------------------
    image_size: int = 224
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    resize_mode: str = "squash"
    max_input_side: int = 2048
    score_smoothing_sigma: float = 0.0
    threshold: float = 0.5
    max_input_pixels: int = 40_000_000
    max_map_pixels: int = 2048 * 2048

    # --- loss ----------------------------------------------------------------------
    focal_gamma: float = 2.0
    focal_weight: float = 1.0
    dice_weight: float = 1.0
    lm_weight: float = 1.0

    # --- few-shot references (beyond the paper; defaults measured in siad.references) ---
    few_shot_weight: float = 0.9
    few_shot_features: str = "trunk"
    max_bank_patches: int | None = 4096

    # --- self-reference (beyond the paper; zero-shot; off by default) ------------------
    self_reference_weight: float = 0.0
    self_reference_radius: int = 2

    # the text encoder's context (fixed by ImageBind's TextPreprocessor) and vocabulary
    text_context_length: int = field(default=77, init=False, repr=False)
    text_vocab_size: int = field(default=49408, init=False, repr=False)

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so that configs compare equal after a round trip.
        for name in ("stage_blocks", "stage_phrases", "lora_target_modules", "image_mean", "image_std"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        self._check_types()
        self._validate()

    # ------------------------------------------------------------------ validation
    def _check_types(self) -> None:
        """Every field against its annotation (an int is a valid float and is stored as one;
        floats must be finite; bool is not an int)."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _has_type(value, hints[f.name]):
                raise ValueError(f"SIADConfig.{f.name}={value!r}: must be of type {f.type}"
                                 f"{' (a finite number)' if 'float' in str(f.type) else ''}, "
                                 f"got {type(value).__name__}")
            if hints[f.name] is float:
                setattr(self, f.name, float(value))

    def _validate(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ValueError(f"SIADConfig.{name}={getattr(self, name)!r}: {message}")

        for name in ("vision_embed_dim", "vision_num_blocks", "vision_num_heads", "vision_patch_size",
                     "text_embed_dim", "text_num_blocks", "text_num_heads", "embed_dim",
                     "num_prompt_vectors", "pem_patch_size", "pem_groups", "lora_r", "lora_alpha",
                     "max_new_tokens", "image_size", "max_input_side"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                fail(name, "must be a positive integer")
        if self.max_input_side > MAX_INPUT_SIDE_LIMIT:
            fail("max_input_side", f"must be at most {MAX_INPUT_SIDE_LIMIT} (the bound keeps memory bounded)")
        for name, (dim, heads) in {
            "vision_num_heads": (self.vision_embed_dim, self.vision_num_heads),
            "text_num_heads": (self.text_embed_dim, self.text_num_heads),
        }.items():
            if dim % heads:
                fail(name, f"the number of heads must divide the width {dim}")
        if not self.stage_blocks:
            fail("stage_blocks", "at least one stage is needed")
        if list(self.stage_blocks) != sorted(set(self.stage_blocks)):
            fail("stage_blocks", "block indices must be strictly increasing")
        if min(self.stage_blocks) < 0 or max(self.stage_blocks) >= self.vision_num_blocks:
            fail("stage_blocks", f"block indices must lie in [0, {self.vision_num_blocks - 1}] "
                                 f"(vision_num_blocks={self.vision_num_blocks})")
        for name, allowed in _ENUMS.items():
            if getattr(self, name) not in allowed:
                fail(name, f"must be one of {allowed}")
        if self.stage_phrases is not None and len(self.stage_phrases) != self.num_stages:
            fail("stage_phrases", f"one phrase per stage is needed ({self.num_stages} stages)")
        if self.stage_phrases is None and self.num_stages != 4:
            fail("stage_phrases", f"the paper's stage phrase cases have 4 stages; with "
                                  f"{self.num_stages} stages give stage_phrases explicitly")
        if self.num_prompt_vectors > 48:
            fail("num_prompt_vectors", "at most 48, so that a stage prompt fits the 77-token text context")
        if not 0.0 <= self.adapter_lambda <= 1.0:
            fail("adapter_lambda", "must lie in [0, 1]")
        if not 0.0 <= self.lora_dropout < 1.0:
            fail("lora_dropout", "must lie in [0, 1)")
        if self.image_size % self.vision_patch_size:
            fail("vision_patch_size", f"must divide image_size={self.image_size}")
        if self.image_size % self.pem_patch_size:
            fail("pem_patch_size", f"must divide image_size={self.image_size}")
        side = math.isqrt(self.pem_groups)
        if side * side != self.pem_groups:
            fail("pem_groups", "must be a square number (the groups form a square grid)")
        if side > self.image_size // self.pem_patch_size:
            fail("pem_groups", "more groups per side than PEM patches per side")
        if self.llm_name_or_path is None and self.llm_architecture is None:
            fail("llm_name_or_path", "give an LLM id or path, or llm_architecture to build one")
        if self.llm_architecture is not None and "hidden_size" not in self.llm_architecture:
            fail("llm_architecture", "must hold at least 'hidden_size' and the other config fields")
        if not self.lora_target_modules:
            fail("lora_target_modules", "name at least one module")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            fail("image_std", "image_mean and image_std need 3 values, std positive")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            fail("min_new_tokens", f"must lie in [0, max_new_tokens={self.max_new_tokens}]")
        for name, least in (("max_text_tokens", 1), ("chat_cache_size", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                fail(name, f"must be an integer >= {least}")
        if self.temperature <= 0:
            fail("temperature", "must be positive")
        if not 0.0 < self.top_p <= 1.0:
            fail("top_p", "must lie in (0, 1]")
        if self.score_smoothing_sigma < 0:
            fail("score_smoothing_sigma", "must be >= 0")
        if not 0.0 <= self.threshold <= 1.0:
            fail("threshold", "must lie in [0, 1]")
        if self.logit_scale <= 0:
            fail("logit_scale", "must be positive")
        if not 0.0 <= self.few_shot_weight <= 1.0:
            fail("few_shot_weight", "must lie in [0, 1]")
        if not 0.0 <= self.self_reference_weight <= 1.0:
            fail("self_reference_weight", "must lie in [0, 1]")
        if (not isinstance(self.self_reference_radius, int) or isinstance(self.self_reference_radius, bool)
                or self.self_reference_radius < 0):
            fail("self_reference_radius", "must be an integer >= 0")
        if self.max_bank_patches is not None and self.max_bank_patches <= 0:
            fail("max_bank_patches", "must be a positive integer or None (no bound)")
        if self.encoder_checkpoint is not None and not isinstance(self.encoder_checkpoint, str):
            fail("encoder_checkpoint", "must be a path string or None")
        for name in ("max_input_pixels", "max_map_pixels"):  # 178_956_970: PIL's hard limit (2 x MAX_IMAGE_PIXELS)
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 178_956_970:
                fail(name, "must be an integer in [1, 178956970] (PIL refuses larger images)")

    # ------------------------------------------------------------------ derived
    @property
    def num_stages(self) -> int:
        return len(self.stage_blocks)

    @property
    def grid_size(self) -> int:
        """Side of the patch-token grid (16 for ViT-H/14 at 224 px)."""
        return self.image_size // self.vision_patch_size

    @property
    def resolved_stage_phrases(self) -> tuple[str, ...]:
        if self.stage_phrases is not None:
            return tuple(self.stage_phrases)
        return STAGE_PHRASE_CASES[self.stage_phrase_case]

    # ------------------------------------------------------------------ presets
    @classmethod
    def siad_llm(cls, **overrides: Any) -> "SIADConfig":
        """The paper's model: ImageBind-Huge and Vicuna-7B with the paper's values."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> "SIADConfig":
        """A tiny random model for tests: builds in well under a second on a CPU."""
        values: dict[str, Any] = dict(
            vision_embed_dim=32, vision_num_blocks=4, vision_num_heads=4,
            text_embed_dim=32, text_num_blocks=2, text_num_heads=4,
            embed_dim=32, stage_blocks=(0, 1, 2, 3), num_prompt_vectors=4,
            llm_name_or_path=None,
            llm_architecture=dict(SMALL_LLAMA_ARCHITECTURE),
            lora_r=4, lora_alpha=8, lora_dropout=0.0, max_new_tokens=16,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def mini(cls, **overrides: Any) -> "SIADConfig":
        """The bundled small model (the app's offline default): ImageBind's architecture at small
        dims and a small LLaMA, all trained from scratch (no pretrained weights exist offline).

        From-scratch features are far from CLIP-like, so the cosine logits use a scale of 10 (with 100,
        the paper's value for pretrained features, the two-state softmax saturates and the maps
        learn far more slowly). The zero-shot self-reference is on (weight 0.7, beyond the paper): on
        the 6 validation families the bundled mini's pass-1 image / pixel AUROC is 57.8 / 85.4 with it,
        52.3 / 67.5 without (README: "Self-reference", with the command and how the weight was chosen)."""
        values: dict[str, Any] = dict(
            vision_embed_dim=96, vision_num_blocks=4, vision_num_heads=3, text_embed_dim=64, text_num_blocks=2,
            text_num_heads=2, embed_dim=64, stage_blocks=(0, 1, 2, 3), num_prompt_vectors=4, logit_scale=10.0,
            llm_name_or_path=None,
            llm_architecture=dict(SMALL_LLAMA_ARCHITECTURE),
            lora_r=4, lora_alpha=8, lora_dropout=0.0, max_new_tokens=32,
            train_encoder=True, train_llm="full", self_reference_weight=0.7,
        )
        values.update(overrides)
        return cls(**values)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values, with the current `format_version`."""
        data = {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}
        data[FORMAT_VERSION_KEY] = CONFIG_FORMAT_VERSION
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SIADConfig":
        """A config from a dict a user wrote: unknown keys are refused. `format_version` may be
        given only as the current version (a saved config of another version: `from_saved_dict`)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"SIADConfig: expected a mapping of fields, got {type(data).__name__}")
        fields = dict(data)
        version = fields.pop(FORMAT_VERSION_KEY, CONFIG_FORMAT_VERSION)
        if version != CONFIG_FORMAT_VERSION:
            raise ValueError(f"SIADConfig.from_dict: format_version={version!r} is not this siad's "
                             f"{CONFIG_FORMAT_VERSION}; read saved configs with SIADConfig.load / from_saved_dict")
        unknown = sorted(set(fields) - _init_fields())
        if unknown:
            raise ValueError(f"SIADConfig: unknown field(s) {unknown}")
        return cls(**fields)

    @classmethod
    def from_saved_dict(cls, data: Any, source: str = "config") -> "SIADConfig":
        """A config from a saved config.json's content (see the module docstring for the rules).
        source: what to call it in messages (e.g. the file's path)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: a SIAD config must be a JSON object, got {type(data).__name__}")
        version = saved_format_version(data, source)
        if version > CONFIG_FORMAT_VERSION:
            unknown = sorted(set(data) - _init_fields() - {FORMAT_VERSION_KEY})
            dropped = f"; keys this version does not know, ignored: {unknown}" if unknown else ""
            warnings.warn(f"{source} was written by a newer siad (config format {version}, this siad reads "
                          f"{CONFIG_FORMAT_VERSION}){dropped}. Upgrade siad to use every setting.", stacklevel=2)
            fields = {k: v for k, v in data.items() if k in _init_fields()}
        else:
            fields = upgrade_config_dict(data, source)
            fields.pop(FORMAT_VERSION_KEY)
            unknown = sorted(set(fields) - _init_fields())
            if unknown:
                raise ValueError(f"{source}: unknown field(s) {unknown} in a config of format {version}")
        return cls(**fields)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_string(cls, text: str, source: str = "config") -> "SIADConfig":
        """A saved config's JSON text (the rules of `from_saved_dict`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source} is not valid JSON: {error}") from error
        return cls.from_saved_dict(data, source)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json_string(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "SIADConfig":
        """A saved config.json (older formats upgraded, newer ones read with a warning)."""
        return cls.from_json_string(Path(path).read_text(encoding="utf-8"), source=str(path))

    def replace(self, **changes: Any) -> "SIADConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _init_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(SIADConfig) if f.init}


def saved_format_version(data: Mapping[str, Any], source: str = "config") -> int:
    """The format version of a saved config dict: its `format_version`, 1 when there is none."""
    version = data.get(FORMAT_VERSION_KEY, 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{source}: format_version={version!r} must be a positive integer")
    return version


def upgrade_config_dict(data: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """A saved config dict of this or an older format -> a new dict in the current format
    (`format_version` = CONFIG_FORMAT_VERSION). Each format step is one block below.

    1 -> 2: format 1 is every config written before the version key existed; its fields mean what
    they mean in format 2 (fields added since then take their defaults), so only the key is added.
    2 -> 3: those models' PEM normalised each map patch with a LayerNorm (`pem_norm="layer"`, whose
    weights they hold). Their "w/o SP" ablation (`use_stage_prompts=False`) had no prompt vectors,
    which format 3's keeps: such a folder cannot be loaded (ValueError saying so).
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
    upgraded[FORMAT_VERSION_KEY] = version
    return upgraded


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a config value matches a field annotation (the few forms SIADConfig uses)."""
    if hint is Any:
        return True
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
    return value
