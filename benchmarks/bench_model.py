"""Latency of SIADModel's paths on this machine, split by stage.

For the tiny preset and a larger random "small" config: ms per image for
  map      detect(chat=False)            pass 1, no LLM
  chat     detect(self_improve=False)    pass 1 with the LLM answer R
  full     detect()                      Algorithm 1: pass 1, then M' and R'
at batch 1 and batch 8, split by stage, and the ratio full / chat (target: at most 2.0).
Every answer is generated to exactly max_new_tokens tokens (min_new_tokens = max_new_tokens), so
that both passes decode the same number of tokens whatever the random weights say.
The stage calls show what is reused: the vision trunk runs once per batch for both passes, the
class text is computed once per class (cached), and pass 1's answer is capped at 77 tokens.
Then the cost of a follow-up question (`chat`) after `detect`, with the passes of the image taken
from the model's cache (one generation) and without it (the cache cleared before each question:
Algorithm 1 again, three generations), and the ratio, measured in the same run.

Run: python benchmarks/bench_model.py [--device cpu|cuda] [--dtype float32|bfloat16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from siad import SIADConfig, SIADModel
from siad.profiling import StageTimer
from siad.prompts import QUESTION

STAGES = ("preprocess", "vision", "visual_modules", "class_text", "maps", "pem", "llm_prompt", "llm_prefill",
          "llm_decode", "response_text", "postprocess")

SMALL = dict(
    vision_embed_dim=384, vision_num_blocks=8, vision_num_heads=6, text_embed_dim=256, text_num_blocks=4,
    text_num_heads=4, embed_dim=256, stage_blocks=(1, 3, 5, 7), num_prompt_vectors=8,
    llm_architecture={"model_type": "llama", "hidden_size": 512, "intermediate_size": 1376,
                      "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8,
                      "vocab_size": 1024, "max_position_embeddings": 1024},
    lora_r=8, lora_alpha=16, max_new_tokens=64,
)


def run_path(model: SIADModel, images: list, path: str, repeats: int) -> tuple[float, StageTimer]:
    kwargs = {"map": dict(chat=False), "chat": dict(self_improve=False), "full": {}}[path]
    model.detect(images[:1], "bottle", **kwargs)  # warm-up: the class text is now cached
    timer = StageTimer(model.device)
    model.timer = timer
    start = time.perf_counter()
    for _ in range(repeats):
        model.detect(images, "bottle", batch_size=len(images), **kwargs)
    total = time.perf_counter() - start
    model.timer = None
    return 1000.0 * total / (repeats * len(images)), timer


def follow_up_cost(model: SIADModel, image: np.ndarray, repeats: int) -> dict[str, tuple[float, float]]:
    """ms and LM generations per follow-up question, with and without the cache of passes."""
    generations = [0]
    generate = model.llm.generate

    def counting(*args, **kwargs):
        generations[0] += 1
        return generate(*args, **kwargs)

    model.llm.generate = counting
    try:
        answer = model.detect([image], "bottle")[0].answer  # as the app's Detect: fills the cache
        history = [(QUESTION, answer)]
        costs = {}
        for mode in ("cached", "uncached"):
            model.chat(image, "bottle", history, "Where is it?")  # warm-up
            generations[0] = 0
            start = time.perf_counter()
            for r in range(repeats):
                if mode == "uncached":
                    model.clear_chat_cache()
                model.chat(image, "bottle", history, f"Question {r}?")
            costs[mode] = (1000.0 * (time.perf_counter() - start) / repeats, generations[0] / repeats)
        return costs
    finally:
        del model.llm.generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=["tiny", "small"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    for name in args.configs:
        # every answer is exactly max_new_tokens long (random weights would stop at random places),
        # so that the two passes are compared at equal generation lengths
        config = SIADConfig.tiny(**(SMALL if name == "small" else {}))
        config = config.replace(llm=dict(min_new_tokens=config.llm.max_new_tokens))
        model = SIADModel(config, dtype=dtype, device=args.device).eval()
        params = sum(p.numel() for p in model.parameters())
        print(f"\n== {name}: {params / 1e6:.1f} M parameters, {args.device}, {args.dtype}, "
              f"max_new_tokens={config.llm.max_new_tokens}, torch threads={torch.get_num_threads()}")
        for batch in (1, 8):
            images = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(batch)]
            per_image = {}
            print(f"-- batch {batch}: ms per image by stage (calls per detect call in brackets)")
            header = f"{'path':<6}{'total':>9}" + "".join(f"{s:>15}" for s in STAGES)
            print(header)
            for path in ("map", "chat", "full"):
                ms, timer = run_path(model, images, path, args.repeats)
                per_image[path] = ms
                cells = ""
                for stage in STAGES:
                    sec = timer.seconds.get(stage, 0.0)
                    calls = timer.calls.get(stage, 0) / args.repeats
                    cells += f"{1000 * sec / (args.repeats * batch):>10.2f}[{calls:g}]".rjust(15)
                print(f"{path:<6}{ms:>9.2f}{cells}")
            ratio = per_image["full"] / per_image["chat"]
            print(f"ratio full / chat (two passes / one pass with chat) = {ratio:.2f}  "
                  f"({'within' if ratio <= 2.0 else 'ABOVE'} the 2.0 target); full / map = "
                  f"{per_image['full'] / per_image['map']:.1f}")
        costs = follow_up_cost(model, rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), args.repeats)
        (cached_ms, cached_gen), (uncached_ms, uncached_gen) = costs["cached"], costs["uncached"]
        print(f"-- follow-up question after detect: {cached_ms:.1f} ms, {cached_gen:g} generation(s) with the cache "
              f"of passes; {uncached_ms:.1f} ms, {uncached_gen:g} generations without; "
              f"ratio without / with = {uncached_ms / cached_ms:.2f}")


if __name__ == "__main__":
    main()
