"""The LLM side of SIAD-LLM: loading, LoRA, the Vicuna prompt format and generation.

- `load_language_model()`: any causal LM by Hub id or local path through `AutoModelForCausalLM`,
  loaded straight into the requested dtype and device (no fp32 copy in host memory), or built with
  random weights from a transformers config dict (`SIADConfig.llm.architecture`) together with
  SIAD's own small BPE tokenizer (`build_siad_tokenizer`).
- `add_lora()`: the LoRA adapter through peft with the config's values.
- `conversation_segments()`, `PromptBuilder`: the Vicuna/PandaGPT format of DESIGN 3.8:
  `### Human: <Img>{image token}</Img> {map tokens}{description} {question}\n### Assistant:`,
  turns end with `\n###`; user text enters it only through `sanitize_user_text()`.
- `TextLimits`: caps on user text and on the whole prompt, in LM tokens.
- `build_generation_config()`, `generate()`: transformers' own `generate` on the prompt embeddings
  with a `GenerationConfig` (greedy by default, stop string `###`, EOS), optionally streaming
  through `AnswerStreamer`.
"""

from __future__ import annotations

import copy
import math
import queue
import re
import threading
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, Union

import torch
import torch.nn as nn
from transformers.generation import BaseStreamer, GenerationConfig, StoppingCriteria, StoppingCriteriaList

from siad.config import LLM_SIZE_LIMITS, SIADConfig, check_llm_sizes
from siad.jsonfile import short_repr
from siad.prompts import (ABNORMAL_STATES, CLASS_DESCRIPTIONS, NORMAL_ANSWER, NORMAL_STATES, POSITION_WORDS,
                          QUESTION, TEMPLATES, answer_text)
from siad.weights import check_loaded_finite

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

    source: overrides config.llm.name_or_path (e.g. a saved model's `llm/` folder). With neither,
    the LLM is built from `config.llm.architecture` with random weights and SIAD's own tokenizer.
    quantization: None, "8bit" or "4bit" (bitsandbytes, GPU only).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

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
        from transformers import BitsAndBytesConfig

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
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.llm.lora_r, lora_alpha=config.llm.lora_alpha, lora_dropout=config.llm.lora_dropout,
                      target_modules=list(config.llm.lora_target_modules), bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        # the adapter takes the base model's dtype (peft would otherwise upcast it to float32)
        return get_peft_model(model, lora, autocast_adapter_dtype=False)


# ---------------------------------------------------------------------- user text
# Runs of '#' (ASCII and full-width forms): "###" opens and closes the turns of the prompt format.
_TURN_MARKS = re.compile(r"[#\uff03\ufe5f]{2,}")
# The image tags of the prompt format, also with spaces or another case ("< /IMG >").
_IMAGE_TAGS = re.compile(r"<\s*/?\s*img\s*>", re.IGNORECASE)
# Line and paragraph breaks: the turns of the prompt format start on a new line.
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


def sanitize_user_text(text: str) -> str:
    """User text (a description, a class name's description, a question, an earlier answer) as it may
    enter the prompt: on one line, without the image tags `<Img>` / `</Img>` and without runs of
    '#' (each becomes one '#'), so that it can neither open a turn ("### Human:", "### Assistant:")
    nor end the answer, nor close or open the image. Tokens such as `</s>` are kept as literal text
    by `PromptBuilder` (`split_special_tokens`). Text without these marks is unchanged (but stripped).
    """
    text = _LINE_BREAKS.sub(" ", text)
    while True:  # removing a tag can join two halves into a new one: "<Im<Img>g>"
        text, removed = _IMAGE_TAGS.subn("", text)
        if not removed:
            break
    return _TURN_MARKS.sub("#", text).strip()


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


# ---------------------------------------------------------------------- prompts
@dataclass
class LLMInputs:
    """A padded batch for the LLM: inputs_embeds B x L x H, attention_mask B x L,
    labels B x L (IGNORE_INDEX outside the answer tokens) or None."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None = None


def conversation_texts(description: str, turns: Sequence[tuple[str, str | None]]) -> list[str]:
    """The text segments of a conversation after the image and map tokens (DESIGN 3.8): the class
    description before the first question, then each question and, except for the last turn, its
    answer. Every piece of user text goes through `sanitize_user_text` here, the one place where it
    enters a prompt."""
    if not turns:
        raise ValueError("a conversation needs at least one question")
    texts: list[str] = []
    for index, (question, answer) in enumerate(turns):
        question = sanitize_user_text(question)
        if index == 0:
            texts.append(f"{sanitize_user_text(description)} {question}\n### Assistant:")
        else:
            texts.append(f" Human: {question}\n### Assistant:")
        if index < len(turns) - 1:
            texts.append(f"{sanitize_user_text(answer or '')}\n{STOP_STRING}")
    return texts


def conversation_header(image_token: torch.Tensor, map_tokens: torch.Tensor | None) -> list[Segment]:
    """The start of every conversation: `### Human: <Img>{image token}</Img> {map tokens}`.

    image_token: 1 x H (llama_proj of the image embedding); map_tokens: Kg x H (PEM) or None.
    """
    segments: list[Segment] = ["### Human: <Img>", image_token, "</Img> "]
    if map_tokens is not None:
        segments.append(map_tokens)
    return segments


def conversation_segments(image_token: torch.Tensor, map_tokens: torch.Tensor | None, description: str,
                          turns: Sequence[tuple[str, str | None]]) -> list[Segment]:
    """The segments of one conversation (DESIGN 3.8):
    `### Human: <Img>{image token}</Img> {map tokens}{description} {question}\n### Assistant:`.

    turns: (question, answer) pairs; the last answer may be None (to be generated).
    """
    return conversation_header(image_token, map_tokens) + conversation_texts(description, turns)


class PromptBuilder:
    """Turns segments into padded LLM inputs (tokens embedded with the LLM's own embedding table)."""

    def __init__(self, tokenizer: Any, embedding: nn.Module) -> None:
        self.tokenizer = tokenizer
        self.embedding = embedding

    def _ids(self, text: str) -> list[int]:
        # split_special_tokens: "</s>" or "<unk>" in user text stay text, never become control tokens
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids)

    def length(self, segments: Sequence[Segment], memo: dict[str, int] | None = None) -> int:
        """The number of LLM positions `build` gives these segments (BOS included); memo: token
        counts of strings already seen (filled here)."""
        memo = {} if memo is None else memo
        total = 1 if self.tokenizer.bos_token_id is not None else 0
        for segment in segments:
            if not isinstance(segment, str):
                total += int(segment.shape[0])
                continue
            if segment not in memo:
                memo[segment] = len(self._ids(segment))
            total += memo[segment]
        return total

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


# ---------------------------------------------------------------------- text limits
class TextLimits:
    """Bounds on the user text of a prompt, in LM tokens (bounded work per request).

    max_text_tokens: the most tokens of each user text (description, question, earlier answer);
    max_prompt_tokens: the most positions of a whole prompt (the LM's context minus the answer
    budget), None when the LM states no context. A text is counted after `sanitize_user_text`; one
    whose UTF-8 length exceeds max_text_tokens times the longest token of the vocabulary (in bytes)
    cannot fit and is refused without being tokenized (tokenizing is superlinear on long words).
    """

    def __init__(self, builder: PromptBuilder, max_text_tokens: int, max_prompt_tokens: int | None,
                 token_bytes: int) -> None:
        self.builder = builder
        self.max_text_tokens = max_text_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self.token_bytes = token_bytes  # `longest_token_bytes` of the tokenizer

    def _count(self, text: str) -> int | None:
        """Tokens of a sanitized text, or None when it has more than max_text_tokens."""
        if len(text.encode("utf-8", errors="replace")) > self.max_text_tokens * self.token_bytes:
            return None
        count = len(self.builder._ids(sanitize_user_text(text)))
        return count if count <= self.max_text_tokens else None

    def check(self, text: str, what: str) -> None:
        """ValueError naming `what` when the text is longer than max_text_tokens."""
        if self._count(text) is None:
            raise ValueError(f"the {what} is too long: at most {self.max_text_tokens} LM tokens "
                             f"(SIADConfig.llm.max_text_tokens)")

    def fit(self, description: str, turns: Sequence[tuple[str, str | None]], header: Sequence[Segment],
            what: str = "description and the question") -> list[tuple[str, str | None]]:
        """The newest turns that fit the prompt after `header` (`conversation_header`; only the shapes
        of its tensors count); older turns, and any earlier turn with a text over max_text_tokens, are
        left out, oldest first. ValueError naming `what` when even the last turn does not fit."""
        turns = list(turns)
        budget = self.max_prompt_tokens
        kept = len(turns)
        memo: dict[str, int] = {}
        for start in range(len(turns) - 1, -1, -1):
            if start < len(turns) - 1 and any(self._count(t or "") is None for t in turns[start]):
                break
            if budget is not None:
                length = self.builder.length([*header, *conversation_texts(description, turns[start:])], memo)
                if length > budget:
                    if start == len(turns) - 1:
                        raise ValueError(f"too long for the LM: the prompt with the {what} needs {length} tokens, "
                                         f"the LM reads at most {budget} (its context minus the answer budget)")
                    break
            kept = start
        return turns[kept:]


def longest_token_bytes(tokenizer: Any) -> int:
    """The longest entry of the tokenizer's vocabulary in UTF-8 bytes: an upper bound on the bytes of
    text one token covers (byte-level BPE, SentencePiece with byte fallback)."""
    return max((len(token.encode("utf-8", errors="replace")) for token in tokenizer.get_vocab()), default=1)


# ---------------------------------------------------------------------- generation
def build_generation_config(config: SIADConfig, tokenizer: Any) -> GenerationConfig:
    """The transformers `GenerationConfig` of a SIAD model from the SIADConfig's generation fields:
    greedy unless config.llm.do_sample (then with temperature and top_p, no top-k), at most
    max_new_tokens, EOS masked for the first min_new_tokens, stopping at the stop string `###` or EOS.

    The penalties and the beam count are set explicitly, so that the base LM's own
    generation_config.json (e.g. Vicuna's sampling settings) does not change SIAD's answers."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    sampling = dict(temperature=config.llm.temperature, top_p=config.llm.top_p, top_k=0) if config.llm.do_sample else {}
    return GenerationConfig(
        max_new_tokens=config.llm.max_new_tokens, min_new_tokens=config.llm.min_new_tokens, do_sample=config.llm.do_sample,
        num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0, stop_strings=STOP_STRING,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=pad, **sampling)


# The bounds on a generation config (a model folder's generation_config.json, or `model.generation_config`
# set in code), on every option that multiplies the work or the memory of a generation (issue 20):
# - the decoding strategy must be one transformers runs itself: greedy, sampling, beam search or beam
#   sampling (`GENERATION_MODES`; contrastive search, DoLa, constrained and group beam search need remote
#   code, assisted generation an assistant);
# - at most MAX_BEAMS beams (memory and work grow with them: 10^6 beams asked 16.6 GB of the tiny model);
#   one returned sequence per prompt (SIAD reads one answer per image);
# - at most MAX_STOP_STRINGS stop strings of MAX_STOP_STRING_CHARS characters (transformers' stop-string
#   tables grow with the vocabulary times their lengths), at most MAX_TOKEN_LIST_ENTRIES token ids in all
#   the token lists (bad words, forced words, suppressed tokens, sequence biases: checked every step);
# - no n-gram blocking beyond MAX_NO_REPEAT_NGRAM tokens;
# - a dynamic cache only (a static one allocates max_cache_len positions at once), and no scores, logits,
#   attentions or hidden states kept per step (their memory grows with every token);
# - max_new_tokens at most SIADConfig's bound (and, when a folder's file is read, below the LM's context);
#   max_time, when set, a positive number of seconds.
MAX_BEAMS = 8
MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARS = 64
MAX_TOKEN_LIST_ENTRIES = 4096
MAX_NO_REPEAT_NGRAM = 64
_KEPT_PER_STEP = ("return_dict_in_generate", "output_scores", "output_logits", "output_attentions",
                  "output_hidden_states")
_TOKEN_LISTS = ("bad_words_ids", "force_words_ids", "suppress_tokens", "begin_suppress_tokens", "sequence_bias")


def _generation_modes() -> tuple[Any, ...]:
    from transformers.generation.configuration_utils import GenerationMode

    return (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE, GenerationMode.BEAM_SEARCH, GenerationMode.BEAM_SAMPLE)


def _count_entries(value: Any) -> int:
    """Token ids in a (nested) list or dict of them (a sequence bias counts its keys' ids)."""
    if isinstance(value, dict):
        return sum(_count_entries(k) + 1 for k in value)
    if isinstance(value, (list, tuple)):
        return sum(_count_entries(v) for v in value)
    return 1


def check_generation_config(settings: GenerationConfig, source: str) -> None:
    """Refuse a generation config past the bounds above: ValueError naming `source` and the option."""
    from siad.config import SIZE_LIMITS

    def refuse(name: str, why: str) -> typing.NoReturn:
        raise ValueError(f"{source}: {name}={short_repr(getattr(settings, name, None))}: {why}")

    mode = settings.get_generation_mode()
    if mode not in _generation_modes():
        raise ValueError(f"{source}: its options ask for {mode.value.replace('_', ' ')}; SIAD generates by greedy "
                         f"search, sampling, beam search or beam sampling only")
    beams = settings.num_beams
    if beams is not None and (not isinstance(beams, int) or not 1 <= beams <= MAX_BEAMS):
        refuse("num_beams", f"at most {MAX_BEAMS} beams (siad.llm.MAX_BEAMS)")
    if settings.num_return_sequences not in (None, 1):
        refuse("num_return_sequences", "SIAD reads one answer per prompt: 1")
    limit = settings.max_new_tokens
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= SIZE_LIMITS["max_new_tokens"]:
        refuse("max_new_tokens", f"a positive integer of at most {SIZE_LIMITS['max_new_tokens']}")
    stops = settings.stop_strings
    stop_list = [stops] if isinstance(stops, str) else list(stops or [])
    if len(stop_list) > MAX_STOP_STRINGS or any(not isinstance(t, str) or len(t) > MAX_STOP_STRING_CHARS
                                                 for t in stop_list):
        refuse("stop_strings", f"at most {MAX_STOP_STRINGS} strings of at most {MAX_STOP_STRING_CHARS} characters")
    for name in _TOKEN_LISTS:
        if _count_entries(getattr(settings, name, None) or []) > MAX_TOKEN_LIST_ENTRIES:
            refuse(name, f"at most {MAX_TOKEN_LIST_ENTRIES} token ids (siad.llm.MAX_TOKEN_LIST_ENTRIES)")
    ngram = settings.no_repeat_ngram_size
    if ngram is not None and (not isinstance(ngram, int) or ngram > MAX_NO_REPEAT_NGRAM):
        refuse("no_repeat_ngram_size", f"at most {MAX_NO_REPEAT_NGRAM}")
    if settings.cache_implementation not in (None, "dynamic"):
        refuse("cache_implementation", "only the dynamic cache (a static one allocates max_cache_len positions)")
    if getattr(settings, "max_cache_len", None) is not None:
        refuse("max_cache_len", "must be unset (the cache grows with the answer)")
    for name in _KEPT_PER_STEP:
        if getattr(settings, name, False):
            refuse(name, "must be false: SIAD keeps the answers only")
    seconds = settings.max_time
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not 0 < seconds < math.inf):
        refuse("max_time", "a positive number of seconds, or unset")


def generation_settings(base: GenerationConfig, max_new_tokens: int | None = None) -> GenerationConfig:
    """A copy of `base` for one call, checked against the bounds (`check_generation_config`, so that
    settings changed in code are bounded too): max_new_tokens capped, min_new_tokens at most that.

    When min_new_tokens reaches max_new_tokens (fixed-length answers, as the benchmarks ask) the stop
    string is off too, so that every answer is exactly that long (EOS is masked by min_new_tokens).
    Between 0 and max_new_tokens, min_new_tokens masks EOS only (transformers' meaning); the answer
    text is the same either way, as it is cut before the first `###`."""
    check_generation_config(base, "the model's generation config")
    settings = copy.deepcopy(base)
    limit = int(base.max_new_tokens)
    if max_new_tokens is not None:
        limit = min(limit, int(max_new_tokens))
    settings.max_new_tokens = limit
    settings.min_new_tokens = min(int(base.min_new_tokens or 0), limit)
    if settings.min_new_tokens >= limit:
        settings.stop_strings = None
    return settings


def answer_text_of(text: str) -> str:
    """The answer in decoded generated text: everything before the first `###`, stripped."""
    return text.split(STOP_STRING)[0].strip()


class AnswerStreamer(BaseStreamer):
    """The answer of a one-row `generate`, as text while it is produced (transformers' streamer API).

    Iterate over it in another thread than the one that generates: each item is the answer so far,
    cut before the stop string and stripped; a trailing '#' or '##' (perhaps the start of `###`) and
    an incomplete character wait for the next token. The last item is the whole answer, exactly what
    `generate` returns. `fail(error)` (from the generating thread) makes the iteration raise it.
    """

    _END = object()

    def __init__(self, tokenizer: Any, timeout: float | None = None) -> None:
        self.tokenizer = tokenizer
        self.timeout = timeout
        self._queue: queue.Queue = queue.Queue()
        self._tokens: list[int] = []
        self._prompt_seen = False
        self._shown: str | None = None

    def _text(self) -> str:
        return self.tokenizer.decode(self._tokens, skip_special_tokens=True)

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate first hands over the prompt's ids (none with inputs_embeds)
            self._prompt_seen = True
            return
        if value.numel() != 1:
            raise ValueError("AnswerStreamer streams one answer at a time (batch size 1)")
        self._tokens.append(int(value.reshape(-1)[0]))
        text = self._text()
        if STOP_STRING in text:
            partial = answer_text_of(text)
        else:
            partial = text.rstrip("#").rstrip("\ufffd").strip()
        if partial and partial != self._shown:
            self._shown = partial
            self._queue.put(partial)

    def end(self) -> None:
        final = answer_text_of(self._text())
        if final != self._shown:
            self._shown = final
            self._queue.put(final)
        self._queue.put(self._END)

    def fail(self, error: BaseException) -> None:
        self._queue.put(error)

    def __iter__(self) -> Iterator[str]:
        while True:
            item = self._queue.get(timeout=self.timeout)
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class _StageClock(BaseStreamer):
    """Splits the time of one `generate` call into "llm_prefill" (until the first new token) and
    "llm_decode", for a timer (a context-manager factory such as `StageTimer`), and passes the tokens
    on to another streamer."""

    def __init__(self, timer: Callable[[str], Any], streamer: BaseStreamer | None) -> None:
        self.timer = timer
        self.streamer = streamer
        self._puts = 0
        self._stage: Any = None

    def _switch(self, name: str | None) -> None:
        if self._stage is not None:
            self._stage.__exit__(None, None, None)
        self._stage = None
        if name is not None:
            self._stage = self.timer(name)
            self._stage.__enter__()

    def put(self, value: torch.Tensor) -> None:
        if self._puts < 2:
            self._switch(("llm_prefill", "llm_decode")[self._puts])
        self._puts += 1
        if self.streamer is not None:
            self.streamer.put(value)

    def end(self) -> None:
        self._switch(None)
        if self.streamer is not None:
            self.streamer.end()


class _Cancelled(StoppingCriteria):
    """Stops every row once `event` is set (a consumer that stopped reading a stream)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor | None, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def generate(llm: nn.Module, tokenizer: Any, inputs: LLMInputs, settings: GenerationConfig,
             streamer: BaseStreamer | None = None, cancel: threading.Event | None = None,
             timer: Callable[[str], Any] | None = None) -> list[str]:
    """Answers for a left-padded batch, by transformers' `generate` on the prompt embeddings.

    settings: a transformers `GenerationConfig` (see `build_generation_config`, `generation_settings`);
    streamer: receives the new tokens as they come (e.g. `AnswerStreamer`, batch size 1); cancel: an
    event that stops the generation when set; timer: an optional context-manager factory, called with
    "llm_prefill" and "llm_decode". Returns the answers, cut before `###` and stripped.
    """
    clock = _StageClock(timer, streamer) if timer is not None else streamer
    criteria = StoppingCriteriaList([_Cancelled(cancel)] if cancel is not None else [])
    try:
        sequences = llm.generate(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                                 generation_config=settings, tokenizer=tokenizer, streamer=clock,
                                 stopping_criteria=criteria)
    finally:
        if isinstance(clock, _StageClock):
            clock._switch(None)
    return [answer_text_of(tokenizer.decode(row, skip_special_tokens=True)) for row in sequences]
