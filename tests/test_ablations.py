"""train/ablations.py: the table of a variant's seeds (the runs themselves are training runs, not tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "train" / "ablations.py"


def _module():
    spec = importlib.util.spec_from_file_location("ablations_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(image: float, pixel: float, accuracy: float | None, second: bool = True) -> dict:
    mean = {"pass1": {"image_auroc": image, "pixel_auroc": pixel}, "answers": {"pass1": {"accuracy": accuracy}}}
    if second:
        mean["pass2"] = {"image_auroc": image + 0.1, "pixel_auroc": pixel}
        mean["answers"]["pass2"] = {"accuracy": accuracy}
    return {"mean": mean}


def test_the_table_gives_the_mean_and_spread_over_seeds():
    ablations = _module()
    rows = [("full", [_report(0.6, 0.8, 0.5), _report(0.8, 0.8, 0.7)]), ("wo_si", [_report(0.7, 0.9, None, False)])]
    table = ablations.summarise(rows, 300).splitlines()
    assert table[0].startswith("| variant (300 steps, 2 seeds) |")
    assert table[2] == "| Full model | 70.0 +- 14.1 | 80.0 +- 0.0 | 60.0 +- 14.1 | 80.0 +- 14.1 | 80.0 +- 0.0 | 60.0 +- 14.1 |"
    assert table[3] == "| w/o SI (self-improvement) | 70.0 | 90.0 | - | - | - | - |"
