"""How a trained model's text maps are fused with its reference maps: chosen on the validation families only.

The model is evaluated by `siad.evaluate`'s code (pass 1, map only, 224 x 224) on SIAD-Synth's 6 validation
families with each fusion setting written into its config for the run (`siad.references.fuse_stage_maps`):

- zero-shot: the self-reference weight w (0: the text maps alone; 1: the self-reference alone) for the
  "linear" fusion (1 - w) M + w R and the "geometric" fusion M^(1 - w) R^w;
- k-shot (--shots, --seeds): the few-shot weight, both fusions (R: the mean of the bank's and the
  self-reference's maps, at the self-reference weight chosen above, --self-weight).

Run: python benchmarks/fusion_choice.py --model runs/mini/final [--data data/siad_validation] [--shots 4]
     [--seeds 0] [--weights 0 0.3 0.5 0.7 0.9 1] [--self-weight 0.7]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from common import evaluate_on, pct
from siad import SIADModel

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/fusion_choice.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "siad_validation")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7, 0.9, 1.0])
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--self-weight", type=float, default=None,
                        help="the self-reference weight of the few-shot runs (default: the model's)")
    args = parser.parse_args(argv)
    if not (args.data / "meta.json").is_file():
        subprocess.run([sys.executable, "-m", "siad.data.synth", "validation", "--out", str(args.data), "--quiet"],
                       check=True)
    model = SIADModel.from_pretrained(args.model).eval()
    original = model.config
    print(f"# {args.model} on {args.data} (validation families), pass 1, map only, 224 x 224")
    print("\n| fusion | self-reference weight | image AUROC | pixel AUROC |\n|---|---|---|---|")
    for mode in ("linear", "geometric"):
        for weight in args.weights:
            model.config = original.replace(map={"reference_fusion": mode, "self_reference_weight": weight})
            scores = evaluate_on(model, args.data)
            print(f"| {mode} | {weight:g} | {pct(scores.image_auroc)} | {pct(scores.pixel_auroc)} |", flush=True)
    if args.shots:
        own = original.map.self_reference_weight if args.self_weight is None else args.self_weight
        print(f"\n| fusion | few-shot weight ({args.shots}-shot, seeds {args.seeds}, self-reference weight {own:g}) "
              f"| image AUROC | pixel AUROC |\n|---|---|---|---|")
        for mode in ("linear", "geometric"):
            for weight in [w for w in args.weights if w > 0]:
                model.config = original.replace(map={"reference_fusion": mode, "self_reference_weight": own,
                                                     "few_shot_weight": weight})
                scores = evaluate_on(model, args.data, shots=args.shots, seeds=args.seeds)
                print(f"| {mode} | {weight:g} | {pct(scores.image_auroc)} | {pct(scores.pixel_auroc)} |", flush=True)
    model.config = original
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
