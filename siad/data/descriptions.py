"""The phrases of the class descriptions of the paper's tables 8-16 (appendix F), shared by the
dataset modules (`siad.data.datasets`, which hold each dataset's table) and `siad.prompts` (the
description of a class no table names)."""

from __future__ import annotations

WITHOUT_DAMAGE = "without any damage, flaw, defect, scratch, hole or broken part."

GENERIC_DESCRIPTION = (
    "This is a photo of a {name} for anomaly detection, which should be without any damage, flaw, "
    "defect, scratch, hole or broken part."
)


def plain(subject: str) -> str:
    """The tables' plain description: "This is a photo of <subject> for anomaly detection, which should
    be without any damage, ..."."""
    return f"This is a photo of {subject} for anomaly detection, which should be {WITHOUT_DAMAGE}"


def medical(subject: str) -> str:
    """The medical tables' description: "This is a photo of <subject> for medical anomaly detection, which
    should be without any damage, ..."."""
    return f"This is a photo of {subject} for medical anomaly detection, which should be {WITHOUT_DAMAGE}"
