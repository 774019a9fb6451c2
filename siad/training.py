"""The reusable parts of `train/train.py`, imported as `from siad import training as T`: this module is
the loop's helpers (stop signals, the data order, the schedules, RNG state, the CSV log) and re-exports
the rest of it, each in its own module:

- `siad.training_settings`: the run settings (YAML + `key=value` overrides; `load_settings`);
- `siad.training_checks`: the checks that run before any model is built;
- `siad.checkpoints`: checkpoints (atomic, fsynced folders; `--resume`), a full disk.

Nothing here builds a model or touches the network; `import siad.training` imports neither torch
nor transformers (the functions that need them import them: `train.py --check` runs without them).

A stop signal (SIGTERM: `docker stop`, Kubernetes, Slurm) ends the run after the current optimizer step,
with that step's checkpoint saved (`StopRequest`, `TrainingStopped`), so `--resume` loses nothing.
"""

from __future__ import annotations

import csv
import math
import random
import signal
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from siad.checkpoints import (CHECKPOINT_DIR, FINAL_DIR, STATE_FILE, STATE_KEYS,  # noqa: F401 (re-exported)
                              TMP_PREFIX, WEIGHTS_FILE, TrainingError, checkpoint_name, checkpoint_problem,
                              checkpoint_tmp, commit_folder, free_space, fsync_tree, is_disk_full, latest_checkpoint,
                              list_checkpoints, load_trainable, prune_checkpoints, read_state,
                              remove_partial_folders, resume_checkpoint, save_torch, save_trainable, settings_changes,
                              write_state, writing_folder)
from siad.training_checks import (check_environment, check_images, check_output,  # noqa: F401 (re-exported)
                                  load_training_samples, model_config, model_folder)
from siad.training_settings import (DTYPES, LR_SCHEDULES, MIXED_PRECISION, PRESETS,  # noqa: F401 (re-exported)
                                    QUANTIZATION, RESUMABLE_CHANGES, SECTIONS, DataSettings, ModelSettings,
                                    OutputSettings, RunSettings, SettingsError, TrainSettings, check_repo_id,
                                    flatten_settings, load_settings, parse_override, pseudo_anomaly_options,
                                    resolve_paths, validate_settings)

LOG_FIELDS: tuple[str, ...] = ("step", "epoch", "loss", "focal", "dice", "lm", "lr", "images_per_s", "elapsed_s")


class TrainingStopped(Exception):
    """The run was asked to stop (SIGTERM) and stopped after saving the checkpoint of its current step;
    `--resume` goes on from there. `signal_number`: the signal that asked."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number


# What `docker stop`, Kubernetes and Slurm send before they kill a process (after a grace period):
# training stops at the end of the optimizer step it is in, saves that step's checkpoint and exits
# with 128 + the signal's number (143), as a process ended by the signal does.
STOP_SIGNALS: tuple[str, ...] = ("SIGTERM",)


class StopRequest:
    """While installed (`install()` ... `restore()`, or `with StopRequest() as stop:`), a stop signal
    (`STOP_SIGNALS`) does not end the process: it only records itself in `signal_number`, which the
    training loop reads after each optimizer step. Installed only in the main thread (Python delivers
    signals there); `restore()` puts the previous handlers back. Holds its state itself (no
    module-level state)."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._record)
        return self

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def _record(self, signal_number: int, frame: Any) -> None:
        self.signal_number = signal_number


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader `worker_init_fn`: the workers ignore stop signals (Slurm signals every process of a
    job), so that the step in progress finishes and its checkpoint is saved; the main process ends them."""
    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


# ---------------------------------------------------------------------------------------------
# Data order


def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1) -> list[list[int]]:
    """The micro-batches of process `rank` in epoch `epoch`: a permutation drawn from (seed, epoch),
    cut into global batches of batch_size x world_size, each process taking its slice. The last global
    batch may be smaller; with several processes it is padded from the start of the permutation so
    that every process gets the same count. Depends only on the arguments."""
    if num_items <= 0 or batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError("epoch_batches: bad arguments")
    order = [int(i) for i in np.random.default_rng([seed, epoch]).permutation(num_items)]
    step = batch_size * world_size
    batches = []
    for start in range(0, num_items, step):
        chunk = order[start:start + step]
        share = batch_size
        if len(chunk) < step:
            share = -(-len(chunk) // world_size)
            chunk = chunk + [order[i % num_items] for i in range(share * world_size - len(chunk))]
        batches.append(chunk[rank * share:(rank + 1) * share])
    return batches


def teacher_maps_probability(step: int, start: float, steps: int) -> float:
    """The LLM's teacher-map probability at optimizer step `step`: `start`, lowered linearly to 0
    over `steps` steps (constant when steps is 0)."""
    if steps <= 0:
        return start
    return start * max(0.0, 1.0 - step / steps)


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int) -> float:
    """The learning-rate multiplier after `step` optimizer steps (linear warm-up, then constant or cosine)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# RNG state


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch and CUDA generator states, as tensors and numbers only (so that
    `torch.load(weights_only=True)` reads them back)."""
    import torch  # deferred: torch (siad.training imports none)

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    import torch  # deferred: torch (siad.training imports none)

    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# CSV log


class CSVLog:
    """`OUT/log.csv`, one row per logged step; on resumption the rows after the checkpoint's step
    (written by the killed run) are dropped, so that the file reads like one uninterrupted run."""

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="", encoding="utf-8") as handle:
                rows = [r for r in csv.DictReader(handle) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        self._handle = self.path.open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=list(LOG_FIELDS), extrasaction="ignore")
        self._writer.writeheader()
        for row in rows:
            self._writer.writerow(row)
        self._handle.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_log(path: str | Path) -> list[dict[str, float]]:
    """The rows of a `CSVLog` file as numbers."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
