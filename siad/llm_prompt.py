"""The Vicuna/PandaGPT prompt format of SIAD-LLM (DESIGN 3.8) and the limits on user text in it:
`### Human: <Img>{image token}</Img> {map tokens}{description} {question}\n### Assistant:`, turns end
with `\n###`; user text enters it only through `sanitize_user_text()`.

- `conversation_texts`, `conversation_header`, `conversation_segments`: a conversation as text and
  embedding segments; `PromptBuilder`: segments -> a padded batch of embeddings (`LLMInputs`), with the
  answer tokens as labels for training.
- `TextLimits`: caps on user text and on the whole prompt, in LM tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence, Union

import torch
import torch.nn as nn

STOP_STRING = "###"
IGNORE_INDEX = -100

# A segment of a prompt: text, or a block of embeddings (n x H) spliced in at that place.
Segment = Union[str, torch.Tensor]


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
