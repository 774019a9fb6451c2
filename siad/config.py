"""`SIADConfig`: every hyper-parameter of SIAD-LLM in one object.

The names follow the paper (stage prompts, adapter, SEM, PEM, self-improvement) and
`DESIGN.md` section 3, where the paper leaves a point open. Two presets:

- `SIADConfig.siad_llm()`: ImageBind-Huge + Vicuna-7B with the paper's values;
- `SIADConfig.tiny()`: a model that builds in well under a second on a CPU, for tests.

A config is validated when it is constructed: an impossible value raises `ValueError`
naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

_ENUMS: dict[str, tuple[Any, ...]] = {
    "stage_phrase_case": (1, 2, 3),
    "stage_prompt_mode": ("sum", "concat"),
    "si_fusion": ("add", "replace"),
    "si_train_response": ("generated", "target"),
    "resize_mode": ("squash", "center_crop"),
    "train_llm": ("lora", "full"),
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
        logit_scale: the scale of the cosine logits between patch and text features.

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
        max_input_side: larger inputs are downscaled to this side first (bounded memory).
        score_smoothing_sigma: Gaussian sigma applied to the map before the image score (0: off).
        threshold: the score above which an image is called anomalous.

    Loss (appendix B): focal_gamma, focal_weight, dice_weight, lm_weight.
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
    logit_scale: float = 100.0

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

    # --- loss ----------------------------------------------------------------------
    focal_gamma: float = 2.0
    focal_weight: float = 1.0
    dice_weight: float = 1.0
    lm_weight: float = 1.0

    # the text encoder's context (fixed by ImageBind's TextPreprocessor) and vocabulary
    text_context_length: int = field(default=77, init=False, repr=False)
    text_vocab_size: int = field(default=49408, init=False, repr=False)

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so that configs compare equal after a round trip.
        for name in ("stage_blocks", "stage_phrases", "lora_target_modules", "image_mean", "image_std"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        self._validate()

    # ------------------------------------------------------------------ validation
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
        if self.encoder_checkpoint is not None and not isinstance(self.encoder_checkpoint, str):
            fail("encoder_checkpoint", "must be a path string or None")

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
        learn far more slowly)."""
        values: dict[str, Any] = dict(
            vision_embed_dim=96, vision_num_blocks=4, vision_num_heads=3, text_embed_dim=64, text_num_blocks=2,
            text_num_heads=2, embed_dim=64, stage_blocks=(0, 1, 2, 3), num_prompt_vectors=4, logit_scale=10.0,
            llm_name_or_path=None,
            llm_architecture=dict(SMALL_LLAMA_ARCHITECTURE),
            lora_r=4, lora_alpha=8, lora_dropout=0.0, max_new_tokens=32,
            train_encoder=True, train_llm="full",
        )
        values.update(overrides)
        return cls(**values)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SIADConfig":
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"SIADConfig: unknown field(s) {unknown}")
        return cls(**data)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_string(cls, text: str) -> "SIADConfig":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json_string(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "SIADConfig":
        return cls.from_json_string(Path(path).read_text(encoding="utf-8"))

    def replace(self, **changes: Any) -> "SIADConfig":
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
