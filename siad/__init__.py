"""SIAD-LLM: self-improvement anomaly detection via a large language model.

`from siad import SIADConfig, SIADModel`. Submodules are imported on first use, so that
`import siad` stays cheap (no torch/transformers work at import time).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "SIADConfig": "siad.config",
    "SIADModel": "siad.model",
    "DetectionResult": "siad.detection",
    "ReferenceBank": "siad.reference_bank",
}

if TYPE_CHECKING:  # pragma: no cover
    from siad.config import SIADConfig
    from siad.detection import DetectionResult
    from siad.model import SIADModel
    from siad.reference_bank import ReferenceBank

__all__ = ["SIADConfig", "SIADModel", "DetectionResult", "ReferenceBank", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'siad' has no attribute {name!r}")
