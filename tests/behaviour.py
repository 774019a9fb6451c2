"""What the bundled model does, condensed to compare bit for bit (tests/test_behaviour_unchanged.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "images"


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def behaviour(model_folder: Path, tmp: Path) -> dict[str, Any]:
    """detect with chat (both passes) on the README's examples, 1-shot detect, and an evaluation report's
    numbers on a small generated dataset: every map as a SHA-256 of its float32 bytes."""
    from siad import SIADModel
    from siad.evaluate import main as evaluate_main
    from tests.test_evaluate import make_mvtec_dataset

    model = SIADModel.from_pretrained(model_folder).eval()
    files = sorted(p for p in EXAMPLES.glob("*.png") if not p.stem.endswith("_mask"))
    names = [p.stem.split("_")[0] for p in files]
    results = model.detect(files, names)
    out: dict[str, Any] = {"detect": {p.name: {
        "map": digest(r.anomaly_map), "initial_map": digest(r.initial_map), "score": r.score,
        "initial_score": r.initial_score, "answer": r.answer, "initial_answer": r.initial_answer,
        "is_anomalous": r.is_anomalous} for p, r in zip(files, results)}}
    bank = model.build_references([EXAMPLES / "gear_good.png"], "gear")
    shot = model.detect([EXAMPLES / "gear_missing.png"], "gear", chat=False, references=bank)[0]
    out["one_shot"] = {"map": digest(shot.anomaly_map), "score": shot.score, "mode": shot.mode}
    data = make_mvtec_dataset(tmp / "data")
    report_dir = tmp / "report"
    evaluate_main(["--model", str(model_folder), "--dataset", "mvtec", "--root", str(data), "--out", str(report_dir),
                   "--quiet", "--no-plots"])
    import json

    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    out["report"] = {"mean": report["mean"], "classes": report["classes"]}
    return out
