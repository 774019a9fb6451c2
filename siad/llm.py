"""The LLM side of SIAD-LLM: loading, LoRA, the Vicuna prompt format and generation.

- `load_language_model()`: any causal LM by Hub id or local path through `AutoModelForCausalLM`,
  loaded straight into the requested dtype and device (no fp32 copy in host memory), or built with
  random weights from a transformers config dict (`SIADConfig.llm_architecture`) together with
  SIAD's own small BPE tokenizer (`build_siad_tokenizer`).
- `add_lora()`: the LoRA adapter through peft with the config's values.
- `PromptBuilder`: the Vicuna/PandaGPT format of DESIGN 3.8:
  `### Human: <Img>{image token}</Img> {map tokens}{description} {question}\n### Assistant:`,
  turns end with `\n###`.
- `generate()`: greedy decoding by default, with a KV cache, stopping at `###` or EOS.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import torch
import torch.nn as nn

from siad.config import SIADConfig
from siad.prompts import (ABNORMAL_STATES, CLASS_DESCRIPTIONS, NORMAL_ANSWER, NORMAL_STATES, POSITION_WORDS,
                          QUESTION, TEMPLATES, answer_text)

STOP_STRING = "###"
IGNORE_INDEX = -100
# Model folders are data: code they carry (`auto_map`) is never run and transformers never asks on
# standard input whether to run it; weights are read from safetensors only (no pickle).
NO_REMOTE_CODE: dict[str, Any] = {"trust_remote_code": False}

# A segment of a prompt: text, or a block of embeddings (n x H) spliced in at that place.
Segment = Union[str, torch.Tensor]


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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

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

    source: overrides config.llm_name_or_path (e.g. a saved model's `llm/` folder). With neither,
    the LLM is built from `config.llm_architecture` with random weights and SIAD's own tokenizer.
    quantization: None, "8bit" or "4bit" (bitsandbytes, GPU only).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    name = str(source) if source is not None else config.llm_name_or_path
    if name is None:
        architecture = dict(config.llm_architecture or {})
        model_type = architecture.pop("model_type", "llama")
        llm_config = AutoConfig.for_model(model_type, **architecture)
        model = AutoModelForCausalLM.from_config(llm_config, dtype=dtype, **NO_REMOTE_CODE)
        model = model.to(device) if not _is_meta(model) else model
        tokenizer = build_siad_tokenizer(int(llm_config.vocab_size))
        return model, tokenizer
    kwargs: dict[str, Any] = dict(dtype=dtype, local_files_only=local_files_only, cache_dir=cache_dir,
                                  use_safetensors=True, **NO_REMOTE_CODE)
    if quantization is not None:
        from transformers import BitsAndBytesConfig

        if quantization not in ("8bit", "4bit"):
            raise ValueError(f"quantization must be None, '8bit' or '4bit', got {quantization!r}")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=quantization == "8bit", load_in_4bit=quantization == "4bit",
            bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16)
    kwargs["device_map"] = {"": str(torch.device(device))}
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_files_only, cache_dir=cache_dir,
                                              **NO_REMOTE_CODE)
    return model, tokenizer


def _is_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def add_lora(model: nn.Module, config: SIADConfig) -> nn.Module:
    """Wrap the base LM with the LoRA adapter of the config (the base is frozen by peft)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_target_modules), bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        # the adapter takes the base model's dtype (peft would otherwise upcast it to float32)
        return get_peft_model(model, lora, autocast_adapter_dtype=False)


# ---------------------------------------------------------------------- prompts
@dataclass
class LLMInputs:
    """A padded batch for the LLM: inputs_embeds B x L x H, attention_mask B x L,
    labels B x L (IGNORE_INDEX outside the answer tokens) or None."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None = None


def conversation_segments(image_token: torch.Tensor, map_tokens: torch.Tensor | None, description: str,
                          turns: list[tuple[str, str | None]]) -> list[Segment]:
    """The segments of one conversation (DESIGN 3.8).

    image_token: 1 x H (llama_proj of the image embedding); map_tokens: Kg x H (PEM) or None;
    turns: (question, answer) pairs; the last answer may be None (to be generated).
    The first question is preceded by the class description.
    """
    if not turns:
        raise ValueError("a conversation needs at least one question")
    segments: list[Segment] = ["### Human: <Img>", image_token, "</Img> "]
    if map_tokens is not None:
        segments.append(map_tokens)
    for index, (question, answer) in enumerate(turns):
        if index == 0:
            segments.append(f"{description} {question}\n### Assistant:")
        else:
            segments.append(f" Human: {question}\n### Assistant:")
        if index < len(turns) - 1:
            segments.append(f"{answer or ''}\n{STOP_STRING}")
    return segments


class PromptBuilder:
    """Turns segments into padded LLM inputs (tokens embedded with the LLM's own embedding table)."""

    def __init__(self, tokenizer: Any, embedding: nn.Module) -> None:
        self.tokenizer = tokenizer
        self.embedding = embedding

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def build(self, conversations: list[list[Segment]], targets: list[str] | None = None,
              padding_side: str = "left") -> LLMInputs:
        """conversations: one segment list each; targets: the answer text to learn (training).

        Training batches are right-padded, generation batches left-padded.
        """
        weight = self.embedding.weight
        bos = self.tokenizer.bos_token_id
        rows: list[torch.Tensor] = []
        label_rows: list[torch.Tensor] = []
        for index, segments in enumerate(conversations):
            pieces: list[torch.Tensor] = []
            labels: list[torch.Tensor] = []
            first = True
            for segment in segments:
                if isinstance(segment, str):
                    ids = ([bos] if first and bos is not None else []) + self._ids(segment)
                    tensor = torch.tensor(ids, dtype=torch.long, device=weight.device)
                    pieces.append(self.embedding(tensor))
                    labels.append(torch.full((len(ids),), IGNORE_INDEX, dtype=torch.long, device=weight.device))
                else:
                    pieces.append(segment.to(device=weight.device, dtype=weight.dtype))
                    labels.append(torch.full((segment.shape[0],), IGNORE_INDEX, dtype=torch.long,
                                             device=weight.device))
                first = False
            if targets is not None:
                ids = self._ids(f"{targets[index]}\n{STOP_STRING}")
                tensor = torch.tensor(ids, dtype=torch.long, device=weight.device)
                pieces.append(self.embedding(tensor))
                labels.append(tensor)
            rows.append(torch.cat(pieces))
            label_rows.append(torch.cat(labels))
        length = max(r.shape[0] for r in rows)
        batch, width = len(rows), weight.shape[1]
        embeds = torch.zeros(batch, length, width, dtype=weight.dtype, device=weight.device)
        mask = torch.zeros(batch, length, dtype=torch.long, device=weight.device)
        labels_out = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long, device=weight.device)
        for b, (row, lab) in enumerate(zip(rows, label_rows)):
            n = row.shape[0]
            span = slice(length - n, length) if padding_side == "left" else slice(0, n)
            embeds[b, span] = row
            mask[b, span] = 1
            labels_out[b, span] = lab
        return LLMInputs(embeds, mask, labels_out if targets is not None else None)


# ---------------------------------------------------------------------- generation
@dataclass
class GenerationConfig:
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def _next_tokens(logits: torch.Tensor, settings: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
    if not settings.do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = sorted_probs.cumsum(dim=-1) - sorted_probs < settings.top_p
        sorted_probs = sorted_probs * keep
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(llm: nn.Module, tokenizer: Any, inputs: LLMInputs, settings: GenerationConfig,
             timer: Callable[[str], Any] | None = None) -> list[str]:
    """Decode answers for a left-padded batch; each stops at `###` or EOS or max_new_tokens.

    timer: an optional context-manager factory, called with "llm_prefill" and "llm_decode".
    Returns the answers, cut before `###` and stripped.
    """
    from contextlib import nullcontext

    timed = timer if timer is not None else (lambda name: nullcontext())
    embedding = llm.get_input_embeddings()
    attention_mask = inputs.attention_mask
    position_ids = _position_ids(attention_mask)
    batch = attention_mask.shape[0]
    generator = None
    if settings.do_sample and settings.seed is not None:
        generator = torch.Generator(device=attention_mask.device).manual_seed(settings.seed)
    eos = tokenizer.eos_token_id
    produced: list[list[int]] = [[] for _ in range(batch)]
    texts = [""] * batch
    finished = [False] * batch
    with timed("llm_prefill"):
        out = llm(inputs_embeds=inputs.inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                  use_cache=True, logits_to_keep=1)
    cache, logits = out.cache, out.logits[:, -1]
    with timed("llm_decode"):
        for step in range(settings.max_new_tokens):
            early = step < settings.min_new_tokens
            if early and eos is not None:
                logits = logits.clone()
                logits[:, eos] = float("-inf")
            tokens = _next_tokens(logits, settings, generator)
            for b in range(batch):
                if finished[b]:
                    continue
                token = int(tokens[b])
                if token == eos:
                    finished[b] = True
                    continue
                produced[b].append(token)
                texts[b] = tokenizer.decode(produced[b], skip_special_tokens=True)
                if STOP_STRING in texts[b] and not early:
                    finished[b] = True
            if all(finished) or step == settings.max_new_tokens - 1:
                break
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=1)
            position_ids = position_ids[:, -1:] + 1
            out = llm(inputs_embeds=embedding(tokens[:, None]), attention_mask=attention_mask,
                      position_ids=position_ids, cache=cache, use_cache=True, logits_to_keep=1)
            cache, logits = out.cache, out.logits[:, -1]
    return [text.split(STOP_STRING)[0].strip() for text in texts]
