"""Which few-shot fusion: zero-shot text maps vs reference maps vs fused maps, on SIAD-Synth's unseen classes.

For every test class of SIAD-Synth (classes the model never saw in training), K normal references are
drawn from the class's train/good with each seed (the WinCLIP / AnomalyGPT protocol: no test image is
a reference), and image AUROC / pixel AUROC (siad.metrics) are computed for:

- zero-shot: the text stage maps M_k of pass 1 (chat off), as `detect(chat=False)` gives them;
- reference maps alone (w = 1.0) and fused maps fused_k = (1 - w) M_k + w R_k for every weight w,
  with "trunk" (raw stage tokens P_k) and "visual" (adapted features S_emd_k) banks
  (`siad.references`: 3 x 3 aggregation, 1 - max cosine, R = d / (d + s_k));
- "trunk-raw": the trunk distances without the normal scale (R = min(d, 1)), to show what the
  scale does to the fusion.

Final map = mean over stages; image score = its maximum (the text maps' score; no smoothing unless
--smooth-sigma, as siad.evaluate).
Pixel metrics at 224 x 224 (the encoder's grid, masks resized with nearest neighbours, as
`siad.evaluate --eval-size 224`). Metrics per class, then the mean over classes, then over seeds.

Run: python benchmarks/few_shot_fusion.py [--model PATH] [--data DIR] [--shots 1 4] [--seeds 0 1]
     [--weights 0.25 0.5 0.75 0.9 1.0] [--max-test-per-class N] [--smooth-sigma 4] [--json OUT]
SIAD-Synth is made in --data when it is missing (`python -m siad.data.synth --out DIR`, ~1 min).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from siad import SIADModel
from siad.data import group_by_class, load_dataset, load_mask
from siad.metrics import image_auroc, pixel_auroc
from siad.modules import AnomalyMapHead
from siad.references import (bank_from_features, draw_references, fuse_stage_maps, model_fingerprint,
                             reference_distances, reference_maps)

KINDS = ("trunk", "visual", "trunk-raw")


@dataclass
class Encoded:
    """Features of some images of one class: trunk / visual K x (B x N_k x D) on `grids`, text stage maps
    B x K x S x S."""

    trunk: list[torch.Tensor]
    visual: list[torch.Tensor]
    text_maps: torch.Tensor | None
    grids: list[tuple[int, int]]


@torch.no_grad()
def encode(model: SIADModel, paths: list[Path], class_name: str, batch_size: int, with_maps: bool) -> Encoded:
    trunk, visual, maps, grids = [], [], [], []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        pixels, _ = model.prepare_images(chunk)
        vision = model.encode_images(pixels)
        features = model.visual_features(vision)
        trunk.append(vision.stage_tokens)
        visual.append(features)
        grids = vision.grids
        if with_maps:
            text = model.class_text_features([class_name] * len(chunk))
            maps.append(model.anomaly_maps(features, text, vision.grids).stage_maps.float())
    join = lambda parts: [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]  # noqa: E731
    return Encoded(join(trunk), join(visual), torch.cat(maps) if with_maps else None, grids)


def metrics(stage_maps: torch.Tensor, labels: np.ndarray, masks: np.ndarray, sigma: float = 0.0) -> tuple[float, float]:
    """B x K x S x S stage maps -> (image AUROC, pixel AUROC) of the mean map (Gaussian-smoothed when
    sigma > 0, as detect's score_smoothing_sigma) and its maximum."""
    final = AnomalyMapHead.smooth(AnomalyMapHead.combine(stage_maps), sigma)
    scores = final.flatten(1).amax(dim=1).numpy()
    return image_auroc(labels, scores), pixel_auroc(masks, final.numpy())


def ensure_synth(root: Path) -> Path:
    if not (root / "test").is_dir():
        from siad.data.synth import generate

        print(f"making SIAD-Synth in {root} ...", flush=True)
        generate(root, progress=False)
    return root / "test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="/work/main/checkpoints/siad-mini")
    parser.add_argument("--data", type=Path, default=Path("/tmp/fs_synth"))
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9, 1.0])
    parser.add_argument("--max-test-per-class", type=int, default=0, help="0: every test image")
    parser.add_argument("--smooth-sigma", type=float, default=0.0, help="Gaussian sigma on the maps (0: none)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write every figure (per class, per seed) here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = SIADModel.from_pretrained(args.model, device=args.device).eval()
    size = model.config.vision.image_size
    root = ensure_synth(args.data)
    tests = group_by_class(load_dataset("mvtec_format", root, "test"))
    trains = group_by_class(load_dataset("mvtec_format", root, "train"))
    fingerprints = {kind: model_fingerprint(model, kind) for kind in ("trunk", "visual")}
    # results[config][shots][seed][class] = (image, pixel); config "zero-shot" has shots 0, seed 0
    results: dict[str, dict[int, dict[int, dict[str, tuple[float, float]]]]] = {}

    def record(config: str, shots: int, seed: int, class_name: str, value: tuple[float, float]) -> None:
        results.setdefault(config, {}).setdefault(shots, {}).setdefault(seed, {})[class_name] = value

    used = 0
    for class_name, samples in tests.items():
        if args.max_test_per_class:
            good = [s for s in samples if s.label == 0][: args.max_test_per_class // 2]
            bad = [s for s in samples if s.label == 1][: args.max_test_per_class - len(good)]
            samples = good + bad
        used += len(samples)
        labels = np.array([s.label for s in samples])
        masks = np.stack([load_mask(s.mask_path, size) if s.mask_path else np.zeros((size, size), bool)
                          for s in samples])
        query = encode(model, [s.image_path for s in samples], class_name, args.batch_size, with_maps=True)
        record("zero-shot", 0, 0, class_name, metrics(query.text_maps, labels, masks, args.smooth_sigma))
        normals = [s.image_path for s in trains[class_name] if s.label == 0]
        pool = encode(model, normals, class_name, args.batch_size, with_maps=False)
        for shots in args.shots:
            for seed in args.seeds:
                pick = torch.tensor(draw_references(range(len(normals)), shots, seed=seed, class_name=class_name))
                for kind in KINDS:
                    base = "visual" if kind == "visual" else "trunk"
                    features = getattr(pool, base)
                    bank = bank_from_features([f[pick] for f in features], pool.grids, class_name=class_name,
                                              features=base,
                                              stage_blocks=model.config.vision.stages,
                                              fingerprint=fingerprints[base], max_bank_patches=None, seed=seed)
                    distances = reference_distances(getattr(query, base), query.grids, bank)
                    scale = bank.normal_scale if kind != "trunk-raw" else None
                    ref = (reference_maps(distances, scale, size) if scale is not None else torch.cat(
                        [AnomalyMapHead.upsample(d[:, None], size) for d in distances], dim=1).clamp(max=1.0))
                    for weight in args.weights:
                        fused = fuse_stage_maps(query.text_maps, ref, weight)
                        record(f"{kind} w={weight:g}", shots, seed, class_name,
                               metrics(fused, labels, masks, args.smooth_sigma))
        print(f"{class_name}: {len(samples)} test images, {len(normals)} normal references available "
              f"({time.perf_counter() - started:.0f} s)", flush=True)

    classes = list(tests)

    def mean(config: str, shots: int) -> tuple[float, float]:
        per_seed = [np.mean([results[config][shots][seed][c] for c in classes], axis=0)
                    for seed in results[config][shots]]
        return tuple(np.mean(per_seed, axis=0))  # type: ignore[return-value]

    zero = mean("zero-shot", 0)
    print(f"\nSIAD-Synth unseen test classes ({len(classes)}: {', '.join(classes)}), {used} test images"
          f"{' (subset)' if args.max_test_per_class else ''}; model {args.model}; seeds {args.seeds}; "
          "mean over classes, then seeds; image AUROC / pixel AUROC (224 px, "
          f"{'no smoothing' if not args.smooth_sigma else f'Gaussian sigma {args.smooth_sigma:g}'})")
    header = f"{'maps':<22}" + "".join(f"{f'{k}-shot':>17}" for k in args.shots)
    print(header)
    print(f"{'zero-shot (text M_k)':<22}" + "".join(f"{zero[0]:>9.3f} / {zero[1]:.3f}" for _ in args.shots))
    for kind in KINDS:
        for weight in args.weights:
            config = f"{kind} w={weight:g}"
            label = f"{kind} R alone" if weight == 1.0 else config
            cells = "".join(f"{mean(config, k)[0]:>9.3f} / {mean(config, k)[1]:.3f}" for k in args.shots)
            print(f"{label:<22}{cells}")
    best_shots = max(args.shots)
    ranked = sorted(((sum(mean(f"{kind} w={w:g}", best_shots)) / 2, kind, w) for kind in KINDS
                     for w in args.weights), reverse=True)
    print(f"\nbest at {best_shots} shots by (image + pixel) / 2: " +
          ", ".join(f"{kind} w={w:g} ({v:.3f})" for v, kind, w in ranked[:3]))
    print(f"elapsed {time.perf_counter() - started:.0f} s, torch threads {torch.get_num_threads()}")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "classes": classes, "results": results}, indent=1))


if __name__ == "__main__":
    main()
