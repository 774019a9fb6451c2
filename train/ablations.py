#!/usr/bin/env python
"""The ablations of the paper's Table 3 for the mini model, on SIAD-Synth, with one command.

    python train/ablations.py [--steps 300] [--out runs/ablations] [--variants full wo_si ...]

Each variant trains `train/configs/mini.yaml` for the same number of steps with one switch changed,
then `python -m siad.evaluate` (the paper's protocol) measures it on SIAD-Synth's unseen test classes
(data/siad_synth/test); the table of image and pixel AUROC (pass 2, and pass 1 where the variant has
no self-improvement) is written to OUT/ablations.md and OUT/ablations.json. Finished variants are
kept: a rerun only trains and evaluates what is missing (the training itself resumes too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Table 3 of the paper: (a) text prompts, (b) enhancement modules and adapter.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "full": ("Full model", []),
    "wo_si": ("w/o SI (self-improvement)", ["model.use_self_improvement=false"]),
    "wo_sp": ("w/o SP (stage prompts)", ["model.use_stage_prompts=false"]),
    "wo_em": ("w/o EM (SEM and PEM)", ["model.use_sem=false", "model.use_pem=false"]),
    "wo_sem": ("w/o SEM", ["model.use_sem=false"]),
    "wo_pem": ("w/o PEM", ["model.use_pem=false"]),
    "wo_adapter": ("w/o Adapter", ["model.use_adapter=false"]),
}


def run_variant(name: str, steps: int, out: Path, test_root: Path) -> dict:
    """Train (or resume) one variant and evaluate it; returns the mean rows of its report."""
    import importlib.util

    from siad import evaluate

    run_dir = out / name
    final = run_dir / "final"
    if not (final / "config.json").is_file():
        spec = importlib.util.spec_from_file_location("train_script", REPO_ROOT / "train" / "train.py")
        train_script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(train_script)
        overrides = [f"train.max_steps={steps}", f"train.warmup_steps={max(1, steps // 20)}",
                     f"output.dir={run_dir}", "output.log_with=null", *VARIANTS[name][1]]
        code = train_script.main(["--config", str(REPO_ROOT / "train" / "configs" / "mini.yaml"), *overrides,
                                  "--resume"])
        if code:
            raise SystemExit(f"training {name} failed ({code})")
    report = run_dir / "eval" / "report.json"
    if not report.is_file():
        code = evaluate.main(["--model", str(final), "--dataset", "mvtec_format", "--root", str(test_root),
                              "--out", str(run_dir / "eval"), "--quiet", "--no-plots"])
        if code:
            raise SystemExit(f"evaluating {name} failed ({code})")
    return json.loads(report.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="training steps of every variant")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "ablations")
    parser.add_argument("--test-root", type=Path, default=REPO_ROOT / "data" / "siad_synth" / "test")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    if not args.test_root.is_dir():
        raise SystemExit(f"no SIAD-Synth test split at {args.test_root}: run python -m siad.data.synth --out data/siad_synth")
    rows = []
    for name in args.variants:
        report = run_variant(name, args.steps, args.out, args.test_root)
        rows.append((name, report))
        print(f"{name}: done", flush=True)
    table = summarise(rows, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablations.md").write_text(table, encoding="utf-8")
    (args.out / "ablations.json").write_text(json.dumps({n: r for n, r in rows}, indent=2), encoding="utf-8")
    print(table)
    return 0


def summarise(rows: list[tuple[str, dict]], steps: int) -> str:
    """A markdown table of the mean over the test classes (%): image and pixel AUROC and answer
    accuracy, for pass 1 and pass 2 ("-" where a variant has no second pass)."""
    lines = [f"| variant ({steps} steps each) | I-AUROC (S) | P-AUROC (M) | acc. (R) | I-AUROC (S') | P-AUROC (M') "
             f"| acc. (R') |", "|---|---|---|---|---|---|---|"]
    for name, report in rows:
        mean = report["mean"]
        cells = []
        for pass_name in ("pass1", "pass2"):
            metrics = mean.get(pass_name, {})
            answers = mean.get("answers", {}).get(pass_name, {})
            for value in (metrics.get("image_auroc"), metrics.get("pixel_auroc"), answers.get("accuracy")):
                cells.append("-" if value is None else f"{100 * value:.1f}")
        lines.append(f"| {VARIANTS[name][0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
