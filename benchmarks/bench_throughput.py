"""Images per second of batch inference as siad.evaluate / siad.predict / siad.calibrate run it
(`siad.runner`: DataLoader workers load and resize, the model detects a batch at a time, shards per
process, scores collected on rank 0), against batch size, DataLoader workers and the number of
processes, map-only and with chat, for the bundled mini model on the CPU; every ratio is measured in
one run of this script.

    python benchmarks/bench_throughput.py [--model checkpoints/siad-mini] [--images 96] [--side 1024]
        [--batch-sizes 1 4 8] [--workers 0 2] [--processes 1 2] [--modes map chat]

Images: `--images` synthetic PNG files of `--side` x `--side` pixels (MVTec AD's are 700 to 1024 px a
side), written to a temporary folder. For each process count P, one launch (P = 1: `python`; P > 1:
`torchrun --nproc_per_node P`, gloo) loads the model once in each process and then, for each mode,
batch size and worker count, runs all the images between two barriers: images/s = images / that wall
time. Every process runs with OMP_NUM_THREADS=1 (what torchrun sets), so the process count is the only
source of parallelism besides the workers. Modes: map = detect(chat=False) (pass 1, no LLM); chat =
Algorithm 1 (both passes, two answers per image, each pass one generate call for the whole batch).
A script, not a test: nothing is asserted; the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_images(folder: Path, count: int, side: int) -> list[Path]:
    """Smooth patterned pictures with sensor-like noise (they compress like photographs of parts)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side]
    paths = []
    for index in range(count):
        base = 120 + 60 * np.sin(x / (20 + index % 7) + rng.uniform(0, 6)) * np.cos(y / 31.0)
        rgb = np.stack([base, base * 0.8 + 20, base * 0.6 + 40], axis=2) + rng.normal(0, 4, (side, side, 3))
        paths.append(folder / f"{index:04d}.png")
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(paths[-1])
    return paths


def child(args: argparse.Namespace) -> None:
    """Inside a launched process: every (mode, batch size, workers) over all images; rank 0 prints one
    JSON line per measurement."""
    from siad.baseline import load_detector
    from siad.runner import (MemoryStore, barrier, check_failures, collect, plan_batches, run_shard,
                             start_processes)

    processes = start_processes("cpu")
    detector = load_detector(args.model)
    paths = sorted(Path(args.folder).glob("*.png"))
    detector.detect(paths[:2], "gear", chat=True)  # warm-up: class text cache, first generation
    for mode in args.modes:
        for batch_size in args.batch_sizes:
            for workers in args.workers:
                def work(batch, items, chat=mode == "chat"):  # noqa: ANN001, ANN202
                    results = detector.detect([item.image for item in items], "gear", chat=chat,
                                              batch_size=len(items))
                    return [r.score for r in results]

                batches = plan_batches([("gear", len(paths))], batch_size)
                store = MemoryStore()
                barrier(processes)
                start = time.perf_counter()
                report = run_shard(batches, paths, work, store, processes, config=detector.config, workers=workers,
                                   progress=False, title="bench")
                check_failures(report.failure, processes)
                scores = [s for _, part in collect(batches, len(batches), lambda b: store.load(b.index), processes)
                          for s in part]
                barrier(processes)
                seconds = time.perf_counter() - start
                if processes.is_main:
                    assert len(scores) == len(paths)
                    print(json.dumps({"mode": mode, "batch": batch_size, "workers": workers,
                                      "processes": processes.world, "images": len(paths), "seconds": seconds}),
                          flush=True)


def launch(args: argparse.Namespace, folder: Path, processes: int) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    options = ["--child", "--folder", str(folder), "--model", args.model, "--modes", *args.modes,
               "--batch-sizes", *map(str, args.batch_sizes), "--workers", *map(str, args.workers)]
    if processes == 1:
        command = [sys.executable, str(Path(__file__).resolve()), *options]
    else:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_addr", "127.0.0.1", "--master_port", str(port), str(Path(__file__).resolve()), *options]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed:\n{result.stderr[-3000:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def report(rows: list[dict], args: argparse.Namespace) -> None:
    rate = {(r["mode"], r["batch"], r["workers"], r["processes"]): r["images"] / r["seconds"] for r in rows}
    print(f"{'mode':<5}{'batch':>6}{'workers':>8}{'procs':>6}{'img/s':>9}{'ms/img':>9}")
    for (mode, batch, workers, procs), value in sorted(rate.items()):
        print(f"{mode:<5}{batch:>6}{workers:>8}{procs:>6}{value:>9.2f}{1000 / value:>9.1f}")
    print("\nratios of images/s (measured in this run):")
    one, top = min(args.processes), max(args.processes)
    for mode in args.modes:
        for workers in args.workers:
            first = rate[(mode, args.batch_sizes[0], workers, one)]
            parts = [f"batch {b} / {args.batch_sizes[0]}: {rate[(mode, b, workers, one)] / first:.2f}"
                     for b in args.batch_sizes[1:]]
            print(f"  {mode}, {workers} workers, {one} process: " + ", ".join(parts))
        for batch in args.batch_sizes:
            parts = []
            if len(args.workers) > 1:
                low, high = args.workers[0], args.workers[-1]
                gain = rate[(mode, batch, high, one)] / rate[(mode, batch, low, one)]
                parts.append(f"workers {high} / {low}: {gain:.2f}")
            if top != one:
                parts += [f"{top} processes / {one} ({w} workers): "
                          f"{rate[(mode, batch, w, top)] / rate[(mode, batch, w, one)]:.2f}" for w in args.workers]
            if parts:
                print(f"  {mode}, batch {batch}: " + ", ".join(parts))
        if "map" in args.modes and mode == "chat":
            ratio = [rate[("map", b, w, one)] / rate[("chat", b, w, one)]
                     for b in args.batch_sizes for w in args.workers]
            print(f"  map / chat images/s (1 process, over the settings): {min(ratio):.1f} to {max(ratio):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(REPO / "checkpoints" / "siad-mini"))
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--modes", nargs="+", default=["map", "chat"], choices=["map", "chat"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="siad-throughput-") as folder:
        write_images(Path(folder), args.images, args.side)
        print(f"{args.images} PNG images of {args.side} x {args.side} px; model {args.model}; CPU, "
              f"OMP_NUM_THREADS=1 per process, {os.cpu_count()} CPUs visible\n")
        rows = [row for processes in args.processes for row in launch(args, Path(folder), processes)]
    report(rows, args)
    print(f"\n(whole benchmark: {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
