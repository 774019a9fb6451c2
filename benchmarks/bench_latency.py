"""Latency, throughput and peak memory of SIADModel's three paths, by batch size.

Paths (every answer is generated to exactly max_new_tokens tokens, min_new_tokens = max_new_tokens,
so that random weights do not stop at random places and the paths compare at equal lengths):

  map    detect(chat=False)            pass 1 only, no LLM
  chat   detect(self_improve=False)    pass 1 with the LLM's answer R
  full   detect()                      Algorithm 1: pass 1, answer R, pass 2 (M', S') and R'

For each config, path and batch size: ms per image, images per second and peak memory, then the
ratios between the paths (chat / map, full / chat, full / map) per batch size.

Peak memory: on a GPU `torch.cuda.max_memory_allocated` during the timed calls (and the part above
the weights); on the CPU the peak resident set size (RSS) sampled every 2 ms during the calls
(psutil, or /proc/self/statm), and its rise over the RSS before them.

Configs: "tiny" (the test preset) and "small" (a larger random model, as in bench_model.py) on the
CPU; "full" (the default on a GPU): the paper's architecture, ImageBind-Huge and a LLaMA-7B-shaped
LLM (`LLAMA_7B_ARCHITECTURE`), with random weights, built directly on the device in the chosen
dtype (bfloat16 by default on a GPU): the cost does not depend on the values.

Run:
  python benchmarks/bench_latency.py                                  # CPU: tiny and small, batches 1 4 8
  python benchmarks/bench_latency.py --device cuda                    # GPU: full size, bf16, batches 1 4 8
  python benchmarks/bench_latency.py --configs tiny --batch-sizes 1 2 --repeats 1
This is a script, not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from siad import SIADConfig, SIADModel
from siad.config import LLAMA_7B_ARCHITECTURE

PATHS: dict[str, dict] = {"map": dict(chat=False), "chat": dict(self_improve=False), "full": {}}

from bench_model import SMALL  # noqa: E402  (the "small" random config of bench_model.py)


def make_config(name: str, max_new_tokens: int | None) -> SIADConfig:
    """The named config with fixed-length generation."""
    if name == "tiny":
        config = SIADConfig.tiny()
    elif name == "small":
        config = SIADConfig.tiny(**SMALL)
    elif name == "full":
        config = SIADConfig.siad_llm(llm=dict(name_or_path=None, architecture=dict(LLAMA_7B_ARCHITECTURE)))
    else:
        raise ValueError(f"unknown config {name!r}; expected tiny, small or full")
    if max_new_tokens is not None:
        config = config.replace(llm=dict(max_new_tokens=max_new_tokens))
    return config.replace(llm=dict(min_new_tokens=config.llm.max_new_tokens))


def build_model(config: SIADConfig, dtype: torch.dtype, device: torch.device) -> SIADModel:
    """A model with random weights, built directly on `device` (no host copy of a GPU model)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = SIADModel(config, dtype=dtype, device=device)
    return model.eval()


# ------------------------------------------------------------------------------------ memory
def _rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Memory:
    """Peak memory of a measured block and how much of it is above the memory before it (bytes)."""

    peak: int | None = None
    above_start: int | None = None


@contextmanager
def measure_memory(device: torch.device) -> Iterator[Memory]:
    """GPU: max_memory_allocated; CPU: peak RSS sampled every 2 ms by a thread."""
    memory = Memory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield memory
        torch.cuda.synchronize(device)
        memory.peak = torch.cuda.max_memory_allocated(device)
        memory.above_start = memory.peak - start
        return
    start = _rss_bytes()
    if start is None:
        yield memory
        return
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            value = _rss_bytes()
            if value is not None and value > peak[0]:
                peak[0] = value
            stop.wait(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield memory
    finally:
        stop.set()
        thread.join()
        memory.peak = peak[0]
        memory.above_start = peak[0] - start


# ------------------------------------------------------------------------------------ timing
@dataclass
class Measurement:
    config: str
    path: str
    batch: int
    ms_per_image: float
    images_per_second: float
    memory: Memory


def measure(model: SIADModel, config_name: str, path: str, batch: int, repeats: int, image_size: int,
            device: torch.device) -> Measurement:
    """The median of `repeats` timed detect calls of one batch, after one warm-up call (which also
    caches the class text); the median resists a busy machine better than the mean."""
    rng = np.random.default_rng(batch)
    images = [rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8) for _ in range(batch)]
    kwargs = PATHS[path]
    model.detect(images, "bottle", batch_size=batch, **kwargs)
    calls = []
    with measure_memory(device) as memory:
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model.detect(images, "bottle", batch_size=batch, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            calls.append(time.perf_counter() - start)
    per_image = float(np.median(calls)) / batch
    return Measurement(config_name, path, batch, 1000.0 * per_image, 1.0 / per_image, memory)


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 2 ** 20:.0f}"


def print_table(results: list[Measurement], device: torch.device) -> None:
    what = "GPU max allocated" if device.type == "cuda" else "peak RSS"
    print(f"{'path':<6}{'batch':>6}{'ms/img':>11}{'img/s':>9}{f'{what} MB':>22}{'above start MB':>16}")
    for m in results:
        print(f"{m.path:<6}{m.batch:>6}{m.ms_per_image:>11.1f}{m.images_per_second:>9.2f}"
              f"{_mb(m.memory.peak):>22}{_mb(m.memory.above_start):>16}")
    print("ratios of ms per image:")
    for batch in dict.fromkeys(m.batch for m in results):
        ms = {m.path: m.ms_per_image for m in results if m.batch == batch}
        parts = [f"{a}/{b} = {ms[a] / ms[b]:.2f}" for a, b in (("chat", "map"), ("full", "chat"), ("full", "map"))
                 if a in ms and b in ms]
        print(f"  batch {batch}: " + ", ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--configs", nargs="+", default=None, choices=["tiny", "small", "full"],
                        help="default: full on a GPU, tiny and small on the CPU")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement, median taken (after one warm-up)")
    parser.add_argument("--image-size", type=int, default=256, help="side of the random input images")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="answer length (default: the config's)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    configs = args.configs or (["full"] if device.type == "cuda" else ["tiny", "small"])
    for name in configs:
        config = make_config(name, args.max_new_tokens)
        start = time.perf_counter()
        model = build_model(config, dtype, device)
        params = sum(p.numel() for p in model.parameters())
        print(f"\n== {name}: {params / 1e6:,.1f} M parameters, built in {time.perf_counter() - start:.1f} s; {device}, "
              f"{str(dtype).removeprefix('torch.')}, answers of {config.llm.max_new_tokens} tokens, "
              f"torch threads {torch.get_num_threads()}")
        results = [measure(model, name, path, batch, args.repeats, args.image_size, device)
                   for batch in args.batch_sizes for path in args.paths]
        print_table(results, device)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
