"""The text of SIAD-LLM as data: class descriptions, the prompt ensemble, the question, the answers.

- `CLASS_DESCRIPTIONS`: the paper's tables 8-16 (appendix F), keyed by dataset and by the class
  name as the dataset spells it, read from the dataset registry (`siad.data.registry`: each dataset's
  module holds its table); `describe()` falls back to `GENERIC_DESCRIPTION`.
- The compositional prompt ensemble of appendix D (7 normal states, 5 abnormal states,
  2 templates): `ensemble_sentences()`.
- The question and the answer templates of DESIGN 3.9 (`answer_text()`); the answer for a mask is
  computed in `siad.answers`.
"""

from __future__ import annotations

# CLASS_DESCRIPTIONS: the paper's tables 8-16 (appendix F), {dataset: {class: description}}, class names as
# the datasets spell them; each dataset's module of `siad.data.datasets` holds its table, and this read-only
# view follows the registry (datasets registered later included).
from siad.data.descriptions import GENERIC_DESCRIPTION as GENERIC_DESCRIPTION
from siad.data.registry import CLASS_DESCRIPTIONS as CLASS_DESCRIPTIONS

# Appendix D, figure 5: state-level and template-level prompts ([o] is the object's name).
NORMAL_STATES: tuple[str, ...] = (
    "{}", "flawless {}", "perfect {}", "unblemished {}",
    "{} without flaw", "{} without defect", "{} without damage",
)
ABNORMAL_STATES: tuple[str, ...] = (
    "damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage",
)
TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a photo of the {}.")

# The two states, in the order of the anomaly map's channels.
STATES: tuple[str, str] = ("normal", "abnormal")
# The state words appended to stage prompts (eq. 3-4) and to the LLM's response (DESIGN 3.10).
STATE_SUFFIXES: dict[str, str] = {"normal": "without damaged", "abnormal": "with damaged"}

QUESTION = "Is there any anomaly in the image?"

POSITION_WORDS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
NORMAL_ANSWER = "No, there is no anomaly in the image."


def known_classes() -> list[str]:
    """Every class name the registered datasets describe (as the datasets spell them), sorted, without repeats."""
    return sorted({name for table in CLASS_DESCRIPTIONS.values() for name in table})


def describe(class_name: str, dataset: str | None = None) -> str:
    """The class description of the paper's tables, or the generic one for an unknown class."""
    if dataset is not None:
        table = CLASS_DESCRIPTIONS.get(dataset.lower(), {})
        if class_name in table:
            return table[class_name]
    for table in CLASS_DESCRIPTIONS.values():
        if class_name in table:
            return table[class_name]
    return GENERIC_DESCRIPTION.format(name=class_name)


def prompt_class_name(class_name: str) -> str:
    """The class name as it is written in text prompts ("metal_nut" -> "metal nut")."""
    return " ".join(class_name.replace("_", " ").split())


def ensemble_sentences(class_name: str, state: str) -> list[str]:
    """The compositional ensemble of appendix D for one state ("normal" or "abnormal")."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    states = NORMAL_STATES if state == "normal" else ABNORMAL_STATES
    name = prompt_class_name(class_name)
    return [template.format(s.format(name)) for s in states for template in TEMPLATES]


def answer_text(positions: list[str]) -> str:
    """The training target of DESIGN 3.9 for anomalies at the given position words.

    `positions` holds one position word per anomalous region (repeats are written once).
    """
    for p in positions:
        if p not in POSITION_WORDS:
            raise ValueError(f"unknown position word {p!r}; expected one of {POSITION_WORDS}")
    if not positions:
        return NORMAL_ANSWER
    if len(positions) == 1:
        return f"Yes, there is an anomaly in the image, at the {positions[0]} of the image."
    unique = list(dict.fromkeys(positions))
    where = unique[0] if len(unique) == 1 else ", ".join(unique[:-1]) + " and " + unique[-1]
    return f"Yes, there are {len(positions)} anomalies in the image, they are at the {where} of the image."


def answer_is_anomalous(answer: str) -> bool | None:
    """The yes/no of an answer: True for "Yes...", False for "No...", None if it says neither."""
    head = answer.strip().lower()
    if head.startswith("yes"):
        return True
    if head.startswith("no"):
        return False
    return None
