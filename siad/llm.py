"""The LLM of SIAD-LLM: loading, SIAD's own tokenizer and LoRA. Its prompt format is `siad.llm_prompt`,
its generation `siad.generation` (their names are re-exported here, their old home).

- `load_language_model()`: any causal LM by Hub id or local path through `AutoModelForCausalLM`,
  loaded straight into the requested dtype and device (no fp32 copy in host memory), or built with
  random weights from a transformers config dict (`SIADConfig.llm.architecture`) together with
  SIAD's own small BPE tokenizer (`build_siad_tokenizer`).
- `add_lora()`: the LoRA adapter through peft with the config's values.
- `enable_activation_checkpointing()`: for training the LM's decoder layers.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig,
                          PreTrainedTokenizerFast)

from siad.config import LLM_SIZE_LIMITS, SIADConfig, check_llm_sizes
from siad.generation import (MAX_BEAMS, MAX_NO_REPEAT_NGRAM, MAX_STOP_STRING_CHARS,  # noqa: F401 (re-exported)
                             MAX_STOP_STRINGS, MAX_TOKEN_LIST_ENTRIES, AnswerStreamer, answer_text_of,
                             build_generation_config, check_generation_config, generate, generation_settings)
from siad.llm_prompt import (IGNORE_INDEX, STOP_STRING, LLMInputs, PromptBuilder,  # noqa: F401 (re-exported)
                             Segment, TextLimits, conversation_header, conversation_segments, conversation_texts,
                             longest_token_bytes, sanitize_user_text)
from siad.prompts import (ABNORMAL_STATES, CLASS_DESCRIPTIONS, NORMAL_ANSWER, NORMAL_STATES, POSITION_WORDS,
                          QUESTION, TEMPLATES, answer_text)
from siad.weights import check_loaded_finite

# Model folders are data: code they carry (`auto_map`) is never run and transformers never asks on
# standard input whether to run it; weights are read from safetensors only (no pickle).
NO_REMOTE_CODE: dict[str, Any] = {"trust_remote_code": False}


# ---------------------------------------------------------------------- tokenizer
def tokenizer_corpus() -> list[str]:
    """The text SIAD's own small tokenizer is trained on: prompts, descriptions, answers, ensemble."""
    lines = [f"### Human: <Img></Img> {d} {QUESTION}\n### Assistant:"
             for table in CLASS_DESCRIPTIONS.values() for d in table.values()]
    lines.append(NORMAL_ANSWER + "\n###")
    for p in POSITION_WORDS:
        lines.append(answer_text([p]) + "\n###")
        for q in POSITION_WORDS:
            if q != p:
                lines.append(answer_text([p, q]) + "\n###")
    for state in NORMAL_STATES + ABNORMAL_STATES:
        for template in TEMPLATES:
            lines.append(template.format(state.format("object")))
    lines.append("What kind of defect is it? Where is it? Describe the image. How large is the anomaly?")
    return lines


def build_siad_tokenizer(vocab_size: int, corpus: list[str] | None = None) -> Any:
    """SIAD's own byte-level BPE tokenizer (any text encodes; no unknown tokens), trained on
    `corpus` (default: `tokenizer_corpus()`), with LLaMA's special tokens <unk> <s> </s> and <pad>."""
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(specials):
        raise ValueError(f"vocab_size={vocab_size} is below the byte alphabet ({len(alphabet) + len(specials)})")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    backend.train_from_iterator(corpus if corpus is not None else tokenizer_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")


# ---------------------------------------------------------------------- loading
def load_language_model(config: SIADConfig, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu", source: str | Path | None = None,
                        local_files_only: bool = False, quantization: str | None = None,
                        cache_dir: str | Path | None = None) -> tuple[nn.Module, Any]:
    """The base causal LM and its tokenizer.

    source: overrides config.llm.name_or_path (e.g. a saved model's `llm/` folder). With neither,
    the LLM is built from `config.llm.architecture` with random weights and SIAD's own tokenizer.
    quantization: None, "8bit" or "4bit" (bitsandbytes, GPU only).
    """
    name = str(source) if source is not None else config.llm.name_or_path
    if name is None:
        architecture = dict(config.llm.architecture or {})
        model_type = architecture.pop("model_type", "llama")
        llm_config = AutoConfig.for_model(model_type, **architecture)
        check_llm_sizes(llm_config_sizes(llm_config), "SIADConfig.llm.architecture")
        model = AutoModelForCausalLM.from_config(llm_config, dtype=dtype, **NO_REMOTE_CODE)
        model = model.to(device) if not _is_meta(model) else model
        tokenizer = build_siad_tokenizer(int(llm_config.vocab_size))
        return model, tokenizer
    kwargs: dict[str, Any] = dict(dtype=dtype, local_files_only=local_files_only, cache_dir=cache_dir,
                                  use_safetensors=True, **NO_REMOTE_CODE)
    if quantization is not None:
        if quantization not in ("8bit", "4bit"):
            raise ValueError(f"quantization must be None, '8bit' or '4bit', got {quantization!r}")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=quantization == "8bit", load_in_4bit=quantization == "4bit",
            bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16)
    kwargs["device_map"] = {"": str(torch.device(device))}
    # the declared sizes are checked before the model is instantiated (transformers checks the weights'
    # shapes against them while it loads)
    llm_config = AutoConfig.from_pretrained(name, local_files_only=local_files_only, cache_dir=cache_dir,
                                            **NO_REMOTE_CODE)
    check_llm_sizes(llm_config_sizes(llm_config), f"{name} (its config.json)")
    model = AutoModelForCausalLM.from_pretrained(name, config=llm_config, **kwargs)
    check_loaded_finite(model, str(name))
    tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_files_only, cache_dir=cache_dir,
                                              **NO_REMOTE_CODE)
    return model, tokenizer


def llm_config_sizes(llm_config: Any) -> dict[str, Any]:
    """The sizes of a transformers config that `siad.config.LLM_SIZE_LIMITS` bounds, by transformers'
    names (its attribute map resolves GPT-2's n_layer and the like); None where the config has none."""
    return {name: getattr(llm_config, name, None) for name in LLM_SIZE_LIMITS}


def _is_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def add_lora(model: nn.Module, config: SIADConfig) -> nn.Module:
    """Wrap the base LM with the LoRA adapter of the config (the base is frozen by peft)."""
    from peft import LoraConfig, get_peft_model  # deferred: peft takes seconds to import

    lora = LoraConfig(r=config.llm.lora_r, lora_alpha=config.llm.lora_alpha, lora_dropout=config.llm.lora_dropout,
                      target_modules=list(config.llm.lora_target_modules), bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        # the adapter takes the base model's dtype (peft would otherwise upcast it to float32)
        return get_peft_model(model, lora, autocast_adapter_dtype=False)



def enable_activation_checkpointing(llm: nn.Module) -> None:
    """Activation (gradient) checkpointing of a transformers LM's decoder layers, for training:
    activations are recomputed in the backward pass instead of kept (transformers >= 5 names it
    `activation_checkpointing_enable`, earlier `gradient_checkpointing_enable`). At the paper's size
    one pair of images costs 0.9 GB of activations with it and 4.2 GB without
    (`benchmarks/full_size_smoke.py`)."""
    kwargs = {"use_reentrant": False}
    if hasattr(llm, "activation_checkpointing_enable"):
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
