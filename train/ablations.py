#!/usr/bin/env python
"""The ablations of the paper's Table 3 for the mini model, on SIAD-Synth, with one command.

    python train/ablations.py [--config train/configs/mini.yaml] [--steps 300] [--seeds 0 1 2] [--out runs/ablations]
        [--variants full wo_si ...]

Each variant trains the recipe of `--config` (default `train/configs/mini.yaml`) for the same number of steps with one switch changed,
once per seed (the seed of the weights, the data order and the pseudo-anomalies: train.seed and
data.seed), then `python -m siad.evaluate` (the paper's protocol) measures each run on SIAD-Synth's
unseen test classes (data/siad_synth/test). The table (mean over the seeds, with the spread as
+- one standard deviation when there are several) of image and pixel AUROC and answer accuracy for
pass 1 and pass 2 is written to OUT/ablations.md and OUT/ablations.json. Finished runs are kept: a
rerun only trains and evaluates what is missing (the training itself resumes too).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from siad import evaluate  # noqa: E402

# Table 3 of the paper: (a) text prompts, (b) enhancement modules and adapter.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "full": ("Full model", []),
    "wo_si": ("w/o SI (self-improvement)", ["model.map.use_self_improvement=false"]),
    "wo_sp": ("w/o SP (stage prompts)", ["model.text.use_stage_prompts=false"]),
    "wo_em": ("w/o EM (SEM and PEM)", ["model.map.use_sem=false", "model.map.use_pem=false"]),
    "wo_sem": ("w/o SEM", ["model.map.use_sem=false"]),
    "wo_pem": ("w/o PEM", ["model.map.use_pem=false"]),
    "wo_adapter": ("w/o Adapter", ["model.map.use_adapter=false"]),
    # beyond the paper: the mini's zero-shot self-reference (SIADConfig.map.self_reference_weight)
    "wo_self_reference": ("w/o self-reference (beyond the paper)", ["model.map.self_reference_weight=0"]),
}


DEFAULT_CONFIG = REPO_ROOT / "train" / "configs" / "mini.yaml"


def run_variant(name: str, steps: int, out: Path, test_root: Path, seed: int = 0,
                config: Path = DEFAULT_CONFIG) -> dict:
    """Train (or resume) one variant of the recipe `config` with one seed and evaluate it; returns its report."""
    run_dir = out / name / f"seed{seed}"
    final = run_dir / "final"
    if not (final / "config.json").is_file():
        spec = importlib.util.spec_from_file_location("train_script", REPO_ROOT / "train" / "train.py")
        train_script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(train_script)
        overrides = [f"train.max_steps={steps}", f"train.warmup_steps={max(1, steps // 20)}",
                     f"train.lm_teacher_maps_steps={max(1, 2 * steps // 3)}",  # the curriculum ends within the run
                     f"train.seed={seed}", f"data.seed={seed}", f"output.dir={run_dir}", "output.log_with=null",
                     *VARIANTS[name][1]]
        code = train_script.main(["--config", str(config), *overrides,
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
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="the recipe the variants change (default train/configs/mini.yaml; v2's: mini_v2.yaml)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "ablations")
    parser.add_argument("--test-root", type=Path, default=REPO_ROOT / "data" / "siad_synth" / "test")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of each variant (default 0)")
    args = parser.parse_args(argv)
    if not args.test_root.is_dir():
        raise SystemExit(f"no SIAD-Synth test split at {args.test_root}: run python -m siad.data.synth --out data/siad_synth")
    rows = []
    for name in args.variants:
        reports = []
        for seed in args.seeds:
            reports.append(run_variant(name, args.steps, args.out, args.test_root, seed, args.config))
            print(f"{name} seed {seed}: done", flush=True)
        rows.append((name, reports))
    table = summarise(rows, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablations.md").write_text(table, encoding="utf-8")
    (args.out / "ablations.json").write_text(json.dumps({n: dict(zip(map(str, args.seeds), r)) for n, r in rows},
                                                        indent=2), encoding="utf-8")
    print(table)
    return 0


def summarise(rows: list[tuple[str, list[dict]]], steps: int) -> str:
    """A markdown table of the mean over the test classes (%), averaged over each variant's seeds (with
    +- the standard deviation over the seeds when there are several): image and pixel AUROC and answer
    accuracy, for pass 1 and pass 2 ("-" where a variant has no second pass)."""
    seeds = max(len(reports) for _, reports in rows)
    lines = [f"| variant ({steps} steps, {seeds} seed{'s' if seeds > 1 else ''}) | I-AUROC (S) | P-AUROC (M) | acc. (R) "
             f"| I-AUROC (S') | P-AUROC (M') | acc. (R') |", "|---|---|---|---|---|---|---|"]
    for name, reports in rows:
        cells = []
        for pass_name in ("pass1", "pass2"):
            for key in ("image_auroc", "pixel_auroc", "accuracy"):
                values = []
                for report in reports:
                    mean = report["mean"]
                    source = mean.get("answers", {}).get(pass_name, {}) if key == "accuracy" else mean.get(pass_name, {})
                    if source.get(key) is not None:
                        values.append(100 * source[key])
                if not values:
                    cells.append("-")
                elif len(values) == 1:
                    cells.append(f"{values[0]:.1f}")
                else:
                    cells.append(f"{statistics.mean(values):.1f} +- {statistics.stdev(values):.1f}")
        lines.append(f"| {VARIANTS[name][0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
