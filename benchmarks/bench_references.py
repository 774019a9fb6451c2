"""Cost and memory of few-shot reference maps (siad.references), measured in one run.

- Per-image cost of the reference maps for 0/1/4/16/64 shots, as a ratio to the zero-shot
  `detect(chat=False)` cost of the same model (images read from disk, preprocessed, encoded, text
  maps, scores, maps at the original size). The reference path adds, per image, the 3 x 3 aggregation,
  the chunked nearest-neighbour search against the bank, the upsampling to the image size and the
  fusion with the text maps; the stage tokens are the ones detect already computes, so they are not
  counted twice. Ratio = (zero-shot + reference path) / zero-shot.
- Bank build time (encoding the references, normal scale, coreset) and bank memory per stage and in
  total, with the default coreset bound (`DEFAULT_MAX_BANK_PATCHES`) and without one.
- The full-size arithmetic (ImageBind-Huge: 64 shots x 256 patches x 4 stages x 1280 dims), with and
  without the coreset bound, beside a 15.7 GB model on a 24 GB GPU.

Images: the train/good normals of SIAD-Synth's test classes (made in --data when missing), pooled so
that 64 references exist; queries are the test images of those classes.

Run: python benchmarks/bench_references.py [--model PATH] [--data DIR] [--queries 32] [--repeats 5]
Times are the fastest of --repeats runs (shared CPUs).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from siad import SIADModel
from siad.data import load_dataset
from siad.references import (DEFAULT_CHUNK_ELEMENTS, DEFAULT_MAX_BANK_PATCHES, build_reference_bank,
                             fuse_stage_maps, reference_distances, reference_maps, select_features)

SHOTS = (0, 1, 4, 16, 64)
MB = 1e6


def per_image_ms(work, images: int, repeats: int) -> float:
    """The fastest of `repeats` timed runs (after a warm-up), per image: the CPUs are shared, and the
    minimum is the least disturbed estimate."""
    work()  # warm-up (class text cache, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return 1000.0 * min(times) / images


def full_size_arithmetic(bound: int) -> None:
    shots, patches, stages, dims = 64, 256, 4, 1280
    rows = shots * patches
    print(f"\n== full size (ImageBind-Huge): {shots} shots x {patches} patches x {stages} stages x {dims} dims")
    for label, per_stage in (("no bound", rows), (f"coreset bound {bound}", min(rows, bound))):
        fp32 = per_stage * stages * dims * 4 / MB
        print(f"bank, {label:<20}: {per_stage:>6} rows per stage, {fp32:8.1f} MB float32, {fp32 / 2:8.1f} MB bfloat16")
    chunk = DEFAULT_CHUNK_ELEMENTS * 4 / MB
    batch = 8
    queries = batch * patches * dims * 4 / MB
    building = rows * stages * dims * 4 / MB
    print(f"search working memory: one similarity chunk {chunk:.1f} MB (chunk_elements={DEFAULT_CHUNK_ELEMENTS}) "
          f"+ the aggregated queries of one stage {queries:.1f} MB (batch {batch})")
    print(f"building 64 shots: the stage features before the coreset {building:.1f} MB float32 "
          f"(+ the 128-d coreset projection {rows * 128 * 4 / MB:.1f} MB per stage)")
    worst = 15.7e3 + building + chunk + queries
    print(f"GPU, bf16 model 15.7 GB + unbounded float32 bank while building + chunk + queries = {worst / 1e3:.2f} GB "
          f"of 24 GB ({'fits' if worst < 24e3 else 'DOES NOT FIT'}); the CPU holds the same in RAM")
    vision = 2 * 32 * 12 * dims * dims * (patches + 1) / 1e9 + 2 * 2 * 32 * (patches + 1) ** 2 * dims / 1e9
    for label, per_stage in (("no bound", rows), (f"bound {bound}", min(rows, bound))):
        search = 2 * patches * per_stage * dims * stages / 1e9
        print(f"search FLOPs per image, {label:<12}: {search:6.1f} GFLOP = {100 * search / vision:4.1f}% of the "
              f"ViT-H/14 vision trunk (~{vision:.0f} GFLOP)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="/work/main/checkpoints/siad-mini")
    parser.add_argument("--data", type=Path, default=Path("/tmp/fs_synth"))
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weight", type=float, default=0.9, help="few_shot_weight of the fusion")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = SIADModel.from_pretrained(args.model, device=args.device).eval()
    if not (args.data / "test").is_dir():
        from siad.data.synth import generate

        generate(args.data, progress=False)
    normals = [s.image_path for s in load_dataset("mvtec_format", args.data / "test", "train") if s.label == 0]
    queries = [s.image_path for s in load_dataset("mvtec_format", args.data / "test", "test")][: args.queries]
    if len(normals) < max(SHOTS):
        raise SystemExit(f"{len(normals)} normal images, {max(SHOTS)} needed")
    name = "part"
    batches = [queries[i:i + args.batch_size] for i in range(0, len(queries), args.batch_size)]
    zero = per_image_ms(lambda: model.detect(queries, name, chat=False, batch_size=args.batch_size),
                        len(queries), args.repeats)
    print(f"model {args.model} on {args.device}, torch threads {torch.get_num_threads()}; {len(queries)} query "
          f"images, batch {args.batch_size}; zero-shot detect(chat=False): {zero:.1f} ms per image")
    # what detect has at hand before the fusion: the stage tokens / visual features and the text stage maps
    encoded = []
    with torch.no_grad():
        for chunk in batches:
            pixels, _ = model.prepare_images(chunk)
            vision = model.encode_images(pixels)
            visual = model.visual_features(vision)
            text_maps = model.anomaly_maps(visual, model.class_text_features([name] * len(chunk)), vision.grids).stage_maps
            encoded.append({"trunk": vision.stage_tokens, "visual": visual, "maps": text_maps, "grids": vision.grids})
    size = model.config.vision.image_size
    print(f"\n{'features':<8}{'shots':>6}{'bound':>7}{'rows/stage':>11}{'bank MB':>9}{'MB/stage':>22}"
          f"{'build s':>9}{'refs ms/img':>13}{'ratio':>7}")
    for features in ("trunk", "visual"):
        for shots in SHOTS:
            if shots == 0:
                print(f"{features:<8}{0:>6}{'-':>7}{0:>11}{0.0:>9.2f}{'-':>22}{'-':>9}{0.0:>13.2f}{1.0:>7.2f}")
                continue
            patches = shots * min(h * w for h, w in encoded[0]["grids"])
            for bound in [DEFAULT_MAX_BANK_PATCHES] + ([None] if patches > DEFAULT_MAX_BANK_PATCHES else []):
                start = time.perf_counter()
                bank = build_reference_bank(model, normals[:shots], name, features=features, max_bank_patches=bound,
                                            batch_size=args.batch_size)
                build = time.perf_counter() - start

                def reference_path() -> None:
                    with torch.no_grad():
                        for item in encoded:
                            distances = reference_distances(item[features], item["grids"], bank)
                            fused = fuse_stage_maps(item["maps"], reference_maps(distances, bank.normal_scale, size),
                                                    args.weight)
                            fused.mean(dim=1).flatten(1).amax(dim=1)

                refs = per_image_ms(reference_path, len(queries), args.repeats)
                stage_mb = "/".join(f"{b / MB:.2f}" for b in bank.stage_nbytes)
                print(f"{features:<8}{shots:>6}{str(bound):>7}{bank.stages[0].shape[0]:>11}{bank.nbytes / MB:>9.2f}"
                      f"{stage_mb:>22}{build:>9.2f}{refs:>13.2f}{(zero + refs) / zero:>7.2f}")
    full_size_arithmetic(DEFAULT_MAX_BANK_PATCHES)


if __name__ == "__main__":
    main()
