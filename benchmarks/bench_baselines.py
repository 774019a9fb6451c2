"""The bundled model against the detectors it must beat, on the same images, in one run.

For each test set (SIAD-Synth's unseen test classes, its held-out families, the real-photo held-out set;
each made when missing), every detector is evaluated by `siad.evaluate`'s code (the same protocol,
metrics, few-shot draws and 224 x 224 pixel resolution), image and pixel AUROC (mean over classes) and
images/s of the whole evaluation on this machine:

- zero-shot: the SIAD model (`--model`, pass 1, map only, and its final pass with the LLM when --chat),
  and the untrained self-reference on the same backbone (`self-reference:<model>`);
- k-shot (--shots, --seeds): the SIAD model with references, the untrained PatchCore-style nearest
  neighbour on the same backbone (`patchcore:<model>`), and anomalib's own PatchCore (anomalib 2.7,
  `PatchcoreModel`, its defaults: coreset ratio 0.1, Gaussian sigma 4 on the map, its re-weighted image
  score) on the same EfficientNet-Lite weights: its timm backbone is built with `pre_trained=False` and
  the tensors of the SIAD model's own backbone are loaded into it, the same stages, input size and
  normalisation.

Run: python benchmarks/bench_baselines.py [--model checkpoints/siad-mini] [--sets synth heldout realphoto]
     [--shots 4] [--seeds 0 1 2] [--chat]
Needs anomalib: pip install -r benchmarks/requirements.txt.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from common import Scores, evaluate_on, pct
from siad import SIADModel
from siad.baseline import BackboneBaseline, _MapDetector
from siad.config import SIADConfig
from siad.references import ZERO_SHOT, ReferenceBank, shot_mode

ROOT = Path(__file__).resolve().parents[1]
SETS = {  # name -> (folder, the command that makes it, the test split's root inside)
    "synth": (ROOT / "data" / "siad_synth", ["-m", "siad.data.synth", "--out"], "test_root"),
    "heldout": (ROOT / "data" / "siad_heldout", ["-m", "siad.data.synth", "heldout", "--out"], None),
    "realphoto": (ROOT / "data" / "siad_realphoto", ["-m", "siad.data.synth", "realphoto", "--out"], None),
}


def test_root(name: str) -> Path:
    folder, command, _ = SETS[name]
    if not (folder / "meta.json").is_file() and not (folder / "test").is_dir():
        subprocess.run([sys.executable, *command, str(folder), "--quiet"], check=True)
    return folder / "test" if name == "synth" else folder


class AnomalibPatchCore(_MapDetector):
    """anomalib's `PatchcoreModel` on the SIAD model's backbone weights, as a detector of this project's
    evaluation code (`build_references` fits its memory bank on the references; `detect` gives its maps
    and scores). One bank per class, rebuilt when the references change."""

    def __init__(self, siad_model: SIADModel, coreset_ratio: float = 0.1) -> None:
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

        super().__init__()
        vision = siad_model.config.vision
        if not vision.backbone.startswith("efficientnet_lite"):
            raise ValueError("this comparison is for an EfficientNet-Lite backbone")
        self.config = siad_model.config.replace(map={"threshold": 0.5, "score_smoothing_sigma": 0.0})
        self.name = "anomalib PatchCore"
        self.coreset_ratio = coreset_ratio
        layers = [f"blocks.{s}" for s in vision.stages]
        timm_name = {"efficientnet_lite0": "tf_efficientnet_lite0", "efficientnet_lite1": "tf_efficientnet_lite1",
                     "efficientnet_lite2": "tf_efficientnet_lite2"}[vision.backbone]
        self.model = PatchcoreModel(layers=layers, backbone=timm_name, pre_trained=False)
        extractor = self.model.feature_extractor.feature_extractor
        own = {k: v for k, v in siad_model.vision_encoder.state_dict().items()}
        wanted = extractor.state_dict()
        missing = [k for k in wanted if k not in own]
        if missing:
            raise ValueError(f"anomalib's backbone has tensors the SIAD backbone lacks: {missing[:5]}")
        extractor.load_state_dict({k: own[k] for k in wanted}, strict=True)
        self.model.eval()
        self._bank_key: Any = None

    @property
    def takes_references(self) -> bool:
        return True

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @torch.no_grad()
    def build_references(self, images: Sequence[Any], class_name: str, *, seed: int = 0,
                         batch_size: int = 8) -> ReferenceBank:
        self.model.train()
        self.model.embedding_store.clear()
        for start in range(0, len(images), batch_size):
            pixels, _ = self.prepare_images(list(images)[start:start + batch_size])
            self.model(pixels)
        torch.manual_seed(seed)
        self.model.subsample_embedding(self.coreset_ratio)
        self.model.eval()
        self._bank_key = (class_name, len(images))
        # the evaluation code only needs a bank-like token that says how many shots it holds
        return _Token(class_name, len(images))  # type: ignore[return-value]

    def reference_banks(self, references: Any, class_names: Sequence[str]) -> list[Any]:
        if references is None:
            raise ValueError("anomalib's PatchCore needs references")
        return [references] * len(class_names)

    @torch.no_grad()
    def anomaly_maps(self, pixels: torch.Tensor, class_names: Sequence[str], banks: Sequence[Any]) -> torch.Tensor:
        out = self.model(pixels)
        self._scores = out.pred_score.flatten()
        distances = out.anomaly_map[:, 0]
        return distances / (1.0 + distances)  # its distances, into [0, 1) (maps are clipped there) keeping their order

    def _detect_batch(self, images: list, names: list[str], banks: Sequence[Any], sigma: float | None = None) -> list:
        """anomalib's own image score (its re-weighted nearest-neighbour distance), not the map's maximum."""
        from siad.image import map_to_original
        from siad.model import DetectionResult

        pixels, sizes = self.prepare_images(images)
        maps = self.anomaly_maps(pixels, names, banks)
        results = []
        for b, size in enumerate(sizes):
            full = map_to_original(maps[b], size, self.config.vision.resize_mode, self.config.map.max_map_pixels)
            score = float(self._scores[b])
            results.append(DetectionResult(anomaly_map=full, score=score, answer=None, initial_map=full,
                                           initial_score=score, initial_answer=None, is_anomalous=False,
                                           class_name=names[b], mode=banks[b].mode))
        return results


class _Token:
    def __init__(self, class_name: str, shots: int) -> None:
        self.class_name, self.num_shots, self.mode = class_name, shots, shot_mode(shots)


def row(name: str, what: str, scores: Scores) -> str:
    return (f"| {name} | {what} | {pct(scores.image_auroc)} | {pct(scores.pixel_auroc)} | "
            f"{scores.images_per_second:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/bench_baselines.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "siad-mini"))
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--chat", action="store_true", help="also the SIAD model's final pass with the LLM")
    args = parser.parse_args(argv)
    model = SIADModel.from_pretrained(args.model).eval()
    backbone = model.vision_encoder
    self_ref = BackboneBaseline(backbone, model.config.replace(map={"threshold": 0.5}), "self-reference",
                                name=f"self-reference:{args.model}")
    patchcore = BackboneBaseline(backbone, model.config.replace(map={"threshold": 0.5}), "patchcore",
                                 name=f"patchcore:{args.model}")
    anomalib = AnomalibPatchCore(model)
    print(f"# model {args.model} ({model.config.vision.backbone}, stages {list(model.config.vision.stages)}); "
          f"{args.shots}-shot seeds {args.seeds}; pixel AUROC at 224 x 224; torch threads {torch.get_num_threads()}")
    for name in args.sets:
        root = test_root(name)
        print(f"\n## {name} ({root})\n")
        print("| detector | mode | image AUROC | pixel AUROC | images/s |")
        print("|---|---|---|---|---|")
        print(row("SIAD (pass 1, map only)", ZERO_SHOT, evaluate_on(model, root)), flush=True)
        if args.chat:
            print(row("SIAD (pass 2, with the LLM)", ZERO_SHOT, evaluate_on(model, root, chat=True, final_pass=True)),
                  flush=True)
        print(row("self-reference (untrained)", ZERO_SHOT, evaluate_on(self_ref, root)), flush=True)
        if args.shots:
            mode = f"{args.shots}-shot"
            print(row("SIAD (pass 1, map only)", mode, evaluate_on(model, root, shots=args.shots, seeds=args.seeds)),
                  flush=True)
            print(row("PatchCore-style (untrained, ours)", mode,
                      evaluate_on(patchcore, root, shots=args.shots, seeds=args.seeds)), flush=True)
            print(row("anomalib PatchCore (same weights)", mode,
                      evaluate_on(anomalib, root, shots=args.shots, seeds=args.seeds)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
