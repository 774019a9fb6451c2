"""The text of SIAD-LLM as data: class descriptions, the prompt ensemble, the question, the answers.

- `CLASS_DESCRIPTIONS`: the paper's tables 8-16 (appendix F), keyed by dataset and by the class
  name as the dataset spells it; `describe()` falls back to `GENERIC_DESCRIPTION`.
- The compositional prompt ensemble of appendix D (7 normal states, 5 abnormal states,
  2 templates): `ensemble_sentences()`.
- The question and the answer templates of DESIGN 3.9 (`answer_text()`); the answer for a mask is
  computed in `siad.answers`.
"""

from __future__ import annotations

GENERIC_DESCRIPTION = (
    "This is a photo of a {name} for anomaly detection, which should be without any damage, flaw, "
    "defect, scratch, hole or broken part."
)

_WITHOUT = "without any damage, flaw, defect, scratch, hole or broken part."


def _plain(subject: str) -> str:
    return f"This is a photo of {subject} for anomaly detection, which should be {_WITHOUT}"


# Tables 8-16 of the paper, class names as the datasets spell them.
CLASS_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "mvtec": {
        "bottle": "This is a photo of a bottle for anomaly detection, which should be round, " + _WITHOUT,
        "cable": "This is a photo of three cables for anomaly detection, cables cannot be missed or "
                 "swapped, which should be " + _WITHOUT,
        "capsule": "This is a photo of a capsule for anomaly detection, which should be black and orange, "
                   "with print '500', " + _WITHOUT,
        "carpet": _plain("carpet"),
        "grid": _plain("grid"),
        "hazelnut": _plain("a hazelnut"),
        "leather": "This is a photo of leather for anomaly detection, which should be brown and " + _WITHOUT,
        "metal_nut": "This is a photo of a metal nut for anomaly detection, which should be without any "
                     "damage, flaw, defect, scratch, hole or broken part, and shouldn't be fliped.",
        "pill": "This is a photo of a pill for anomaly detection, which should be white, with print 'FF' "
                "and red patterns, " + _WITHOUT,
        "screw": "This is a photo of a screw for anomaly detection, which tail should be sharp, and " + _WITHOUT,
        "tile": _plain("tile"),
        "toothbrush": _plain("a toothbrush"),
        "transistor": _plain("a transistor"),
        "wood": "This is a photo of wood for anomaly detection, which should be brown with patterns, " + _WITHOUT,
        "zipper": _plain("a zipper"),
    },
    "visa": {
        "candle": "This is a photo of 4 candles for anomaly detection, every candle should be round, " + _WITHOUT,
        "capsules": "This is a photo of many small capsules for anomaly detection, every capsule is green, "
                    "should be " + _WITHOUT,
        "cashew": _plain("a cashew"),
        "chewinggum": "This is a photo of a chewinggom for anomaly detection, which should be white, " + _WITHOUT,
        "fryum": "This is a photo of a fryum for anomaly detection on green background, which should be "
                 + _WITHOUT,
        "macaroni1": _plain("4 macaronis"),
        "macaroni2": _plain("4 macaronis"),
        "pcb1": _plain("pcb"),
        "pcb2": _plain("pcb"),
        "pcb3": _plain("pcb"),
        "pcb4": _plain("pcb"),
        "pipe_fryum": _plain("a pipe fryum"),
    },
    "mpdd": {
        "bracket_black": "This is a photo of a bracket_black for anomaly detection, which should be black and "
                         + _WITHOUT,
        "bracket_brown": "This is a photo of a bracket_brown for anomaly detection, which should be brown and "
                         + _WITHOUT,
        "bracket_white": "This is a photo of a bracket_white for anomaly detection, which should be white and "
                         + _WITHOUT,
        "connector": _plain("a connector"),
        "metal_plate": "This is a photo of a metal_plate for anomaly detection, which should be without any "
                       "damage, rust, flaw, defect, scratch, hole or broken part.",
        "tubes": _plain("a tubes"),
    },
    "dtd": {
        name: _plain(f"a {name}")
        for name in ("Woven_001", "Woven_127", "Stratified_154", "Blotchy_099", "Woven_068", "Woven_125",
                     "Marbled_078", "Perforated_037", "Mesh_114", "Fibrous_183", "Matted_069", "Woven_104")
    },
    "btad": {
        name: f"This is a photo of a {name} for anomaly detection, which should be round, " + _WITHOUT
        for name in ("01", "02", "03")
    },
    "sdd": {"SDD": _plain("a electrical_commutators")},
    "br35h": {"brain": "This is a photo of a brain for medical anomaly detection, which should be " + _WITHOUT},
    "brainmri": {"brain": "This is a photo of a brain for medical anomaly detection, which should be " + _WITHOUT},
    "headct": {"brain": "This is a photo of a brain for medical anomaly detection, which should be " + _WITHOUT},
}

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
    """Every class name of the nine datasets (as the datasets spell them), sorted, without repeats."""
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
