"""The paper-size SIAD-LLM run end to end on this machine: ImageBind-Huge + a LLaMA-7B-shaped LLM
(`SIADConfig.siad_llm()` with `LLAMA_7B_ARCHITECTURE`), random weights made directly in bfloat16 (the
default dtype is bf16 while the model is built: no float32 copy of any part ever exists).

It runs, on the CPU by default:
  1. `detect` on one image with chat and self-improvement (Algorithm 1: two answers of a few tokens);
  2. one follow-up `chat` turn (served from the cache of passes: one generation);
  3. one training step of `forward` (both passes, focal + dice + LM loss) with the LoRA adapter and the
     trainable modules in float32 under bf16 autocast, as `train/train.py` does for `model.dtype:
     bfloat16`, with the LLM's activation checkpointing (`train.grad_checkpointing: true`; off with
     --no-grad-checkpointing), then an AdamW step;
and prints the shapes at each stage, the time of each stage and the peak resident memory (RSS) against
the size of the weights. A benchmark, not a test: it needs about 21 GB of RAM and several minutes on 2
CPU cores.

    python benchmarks/full_size_smoke.py [--new-tokens 4] [--device cpu] [--threads 2] [--preset tiny]
        [--no-grad-checkpointing]
"""

from __future__ import annotations

import argparse
import resource
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from siad import SIADConfig, SIADModel
from siad.config import LLAMA_7B_ARCHITECTURE
from siad.data.cutpaste import cutpaste_poisson
from siad.profiling import StageTimer

GB = 1e9


def peak_rss() -> float:
    """This process's peak resident set size so far, in bytes (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def current_rss() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        import os

        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(new_tokens: int, device: torch.device, preset: str = "full") -> tuple[SIADModel, float]:
    """The full-size model (or the tiny preset, to try the script) with random bf16 weights; returns it
    and the bytes of its weights and buffers."""
    if preset == "full":
        config = SIADConfig.siad_llm(llm=dict(name_or_path=None, architecture=dict(LLAMA_7B_ARCHITECTURE)))
    else:
        config = SIADConfig.tiny()
    config = config.replace(llm=dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens))
    torch.manual_seed(0)
    with default_dtype(torch.bfloat16), torch.device(device):
        model = SIADModel(config, dtype=torch.bfloat16, device=device)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    return model.eval(), float(weights)


def image(seed: int = 0) -> np.ndarray:
    """A textured test image with a dark blob."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:320, 0:320]
    base = 128 + 40 * np.sin(x / 7.0)[..., None] + rng.normal(0, 8, (320, 320, 3))
    base[140:170, 200:240] -= 90
    return base.clip(0, 255).astype(np.uint8)


def shapes(model: SIADModel, picture: np.ndarray) -> list[str]:
    """One line per stage of the forward pass with the shapes it gives (no LLM generation)."""
    lines = []
    with torch.no_grad():
        pixels, sizes = model.prepare_images([picture])
        lines.append(f"pixels {tuple(pixels.shape)} {pixels.dtype} (original size {sizes[0]})")
        vision = model.encode_images(pixels)
        lines.append(f"stage tokens P_k: {len(vision.stage_tokens)} x {tuple(vision.stage_tokens[0].shape)}; "
                     f"image embedding g {tuple(vision.image_embedding.shape)}")
        features = model.visual_features(vision)
        lines.append(f"visual features S_emd_k (projection, adapter, SEM): {len(features)} x {tuple(features[0].shape)}")
        text = model.class_text_features(["screw"])
        lines.append(f"text features t_(k,s): {tuple(text.shape)}")
        first = model.anomaly_maps(features, text)
        lines.append(f"stage logits {tuple(first.logits.shape)}; stage maps {tuple(first.stage_maps.shape)}; "
                     f"map M {tuple(first.anomaly_map.shape)}")
        tokens = model.map_tokens(first.stage_maps)
        lines.append(f"PEM tokens {tuple(tokens.shape)} {tokens.dtype}; llama_proj(g) "
                     f"{tuple(model.image_tokens(vision).shape)}")
    return lines


def training_step(model: SIADModel, picture: np.ndarray, checkpointing: bool) -> tuple[dict[str, float], float]:
    """One optimizer step on a pair (the normal image and its CutPaste copy): trainable parameters in
    float32, bf16 autocast (what train.py does for model.dtype bfloat16 with mixed_precision bf16),
    the LLM's activations checkpointed when `checkpointing`."""
    from siad.image import resize_for_encoder
    from siad.llm import enable_activation_checkpointing

    normal = resize_for_encoder(picture, model.config.vision.image_size)
    pseudo = cutpaste_poisson(normal, normal, np.random.default_rng(0))
    images = torch.from_numpy(np.stack([normal, pseudo.image]).transpose(0, 3, 1, 2).copy())
    masks = torch.from_numpy(np.stack([np.zeros(pseudo.mask.shape, np.float32), pseudo.mask.astype(np.float32)]))
    batch = {"images": images, "masks": masks, "class_names": ["screw", "screw"],
             "answers": ["No, there is no anomaly in the image.", "Yes, there is an anomaly in the image."]}
    model.train()
    if checkpointing:
        enable_activation_checkpointing(model.llm.get_base_model())
    trainable = [p for _, p in model.trainable_parameters()]
    for p in trainable:
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    start = time.perf_counter()
    with torch.autocast(device_type=model.device.type, dtype=torch.bfloat16):
        output = model(batch)
    output.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    return output.as_floats(), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=4, help="tokens per generated answer (default 4)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--preset", choices=["full", "tiny"], default="full", help="tiny: try the script quickly")
    parser.add_argument("--no-grad-checkpointing", action="store_true",
                        help="keep the LLM's activations in the training step (4.2 GB more at full size)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    baseline = current_rss()
    start = time.perf_counter()
    model, weights = build(args.new_tokens, device, args.preset)
    built = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for _, p in model.trainable_parameters())
    print(f"built in {built:.1f} s: {params / 1e9:.3f} B parameters ({trainable / 1e6:.1f} M trainable), "
          f"weights and buffers {weights / GB:.2f} GB in bf16; RSS {current_rss() / GB:.2f} GB "
          f"(peak {peak_rss() / GB:.2f} GB, {baseline / GB:.2f} GB before building)")
    picture = image()
    model.timer = StageTimer(device)
    print("\nshapes (pass 1 without the LLM; the class's text features computed here, then cached):")
    for line in shapes(model, picture):
        print(f"  {line}")
    print("  " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in model.timer.seconds.items()))
    model.timer.reset()
    start = time.perf_counter()
    result = model.detect([picture], ["screw"])[0]
    detect_s = time.perf_counter() - start
    print(f"\ndetect with chat and self-improvement: {detect_s:.1f} s; score S {result.initial_score:.4f} -> "
          f"S' {result.score:.4f}; map {result.anomaly_map.shape}; R {result.initial_answer!r}; R' {result.answer!r}")
    for name, seconds in sorted(model.timer.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<16} {seconds:8.2f} s  ({model.timer.calls[name]} calls)")
    model.timer.reset()
    start = time.perf_counter()
    answer = model.chat(picture, "screw", None, "Where is the defect?")
    chat_s = time.perf_counter() - start
    print(f"\nchat (one follow-up, passes from the cache): {chat_s:.1f} s; answer {answer!r}")
    for name, seconds in sorted(model.timer.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<16} {seconds:8.2f} s  ({model.timer.calls[name]} calls)")
    model.timer = None
    checkpointing = not args.no_grad_checkpointing
    before = peak_rss()
    losses, step_s = training_step(model, picture, checkpointing)
    print(f"\none training step (forward of both passes, backward, AdamW; LLM activation checkpointing "
          f"{'on' if checkpointing else 'off'}): {step_s:.1f} s, peak RSS {before / GB:.2f} -> {peak_rss() / GB:.2f} GB; "
          + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    peak = peak_rss()
    print(f"\npeak RSS {peak / GB:.2f} GB = {peak / weights:.2f} x the weights ({weights / GB:.2f} GB); "
          f"{(peak - baseline) / GB:.2f} GB above the RSS before building ({baseline / GB:.2f} GB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
