"""How SIAD-LLM's answers are generated: transformers' own `generate` on the prompt embeddings with a
`GenerationConfig` (greedy by default, stop string `###`, EOS), optionally streaming through
`AnswerStreamer`.

- `build_generation_config`: a model's generation settings from its SIADConfig (a model folder's
  generation_config.json replaces them: `siad.hub.load_generation_config`).
- `check_generation_config`: the bounds on every option that multiplies the work or the memory.
- `generation_settings`: the settings of one call; `generate`: the answers of a prompt batch.
"""

from __future__ import annotations

import copy
import math
import queue
import threading
import typing
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
from transformers.generation import BaseStreamer, GenerationConfig, StoppingCriteria, StoppingCriteriaList
from transformers.generation.configuration_utils import GenerationMode

from siad.config import SIZE_LIMITS, SIADConfig
from siad.jsonfile import short_repr
from siad.llm_prompt import STOP_STRING, LLMInputs


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
    def refuse(name: str, why: str) -> typing.NoReturn:
        raise ValueError(f"{source}: {name}={short_repr(getattr(settings, name, None))}: {why}")

    mode = settings.get_generation_mode()
    if mode not in _generation_modes():
        raise ValueError(f"{source}: its options ask for {mode.value.replace('_', ' ')}; SIAD generates by greedy "
                         f"search, sampling, beam search or beam sampling only")
    beams = settings.num_beams
    if beams is not None and (not isinstance(beams, int) or not 1 <= beams <= MAX_BEAMS):
        refuse("num_beams", f"at most {MAX_BEAMS} beams (siad.generation.MAX_BEAMS)")
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
            refuse(name, f"at most {MAX_TOKEN_LIST_ENTRIES} token ids (siad.generation.MAX_TOKEN_LIST_ENTRIES)")
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
