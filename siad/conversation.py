"""Follow-up questions about an image (`SIADModel.chat`, `chat_stream`): the chat history as the prompt
reads it, the checks of a message and a description, and the cache of each image's passes.

- `history_turns`: Gradio messages ({"role", "content"}) or (question, answer) pairs -> turns.
- `check_message`, `check_description`, `prompt_description`: the user's text, checked.
- `FollowUpContext`, `follow_up_context`: what a follow-up needs from an image's passes (its image
  token and the final map's PEM tokens); `PassCache`: a bounded, thread-safe LRU of them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable, Sequence

import torch

from siad.network import Passes
from siad.prompts import QUESTION, describe

Conversation = Sequence[Any]


@dataclass(frozen=True)
class FollowUpContext:
    """What a follow-up question about one image needs from its passes: image token 1 x H and the
    final map's PEM tokens Kg x H (None without PEM)."""

    image_tokens: torch.Tensor
    map_tokens: torch.Tensor | None


class PassCache:
    """A bounded, thread-safe LRU map from an image's pass key (see `SIADModel._pass_key`) to its
    `FollowUpContext`; capacity 0 keeps nothing. A copied or unpickled cache starts empty."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Hashable, FollowUpContext] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> FollowUpContext | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: Hashable, item: FollowUpContext) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __getstate__(self) -> dict[str, Any]:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(int(state["capacity"]))


def follow_up_context(run: Passes, index: int) -> FollowUpContext:
    """Image `index`'s tokens from a batch's passes (copied: the batch tensors are not kept alive)."""
    assert run.image_tokens is not None
    tokens = None if run.final_map_tokens is None else run.final_map_tokens[index].detach().clone()
    return FollowUpContext(run.image_tokens[index].detach().clone(), tokens)



def check_description(description: Any) -> str | None:
    """A description argument: a string (stripped; None when blank) or None."""
    if description is None:
        return None
    if not isinstance(description, str):
        raise ValueError(f"the description must be a string or None, got {type(description).__name__}")
    return description.strip() or None


def check_message(message: Any) -> str:
    if not isinstance(message, str):
        raise ValueError(f"the message must be a string, got {type(message).__name__}")
    if not message.strip():
        raise ValueError("the message is empty")
    return message.strip()


def prompt_description(description: str | None, class_name: str) -> tuple[str, str]:
    """The description a prompt uses and what to call it in an error: the given one
    ("description"), else the paper's or the generic one, which names the class ("class name")."""
    if description:
        return description, "description"
    return describe(class_name), "class name"


def message_text(content: Any) -> str:
    """The text of a chat message's content: a string, or Gradio's list of parts ({"type": "text", ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, (list, tuple)):
        return " ".join(message_text(part) for part in content if not isinstance(part, dict)
                        or part.get("type", "text") == "text").strip()
    return "" if content is None else str(content)


def history_turns(history: Conversation | None) -> list[tuple[str, str | None]]:
    """Gradio messages or (question, answer) pairs -> (question, answer) pairs."""
    turns: list[tuple[str, str | None]] = []
    if history is None:
        return turns
    if not isinstance(history, (list, tuple)):
        raise ValueError(f"the history must be a list of messages or (question, answer) pairs, got "
                         f"{type(history).__name__}")
    pending: str | None = None
    for item in history:
        if isinstance(item, dict):
            role, text = item.get("role"), message_text(item.get("content"))
            if role == "user":
                if pending is not None:
                    turns.append((pending, ""))
                pending = text
            elif role == "assistant":
                turns.append((pending if pending is not None else QUESTION, text))
                pending = None
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            turns.append((str(item[0]), None if item[1] is None else str(item[1])))
        else:
            raise ValueError(f"history items must be messages or (question, answer) pairs, got {item!r}")
    if pending is not None:
        turns.append((pending, ""))
    return turns
