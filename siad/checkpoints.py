"""Checkpoints of a training run: `OUT/checkpoints/step-000002/` holds `trainable.safetensors` (the
trainable parameters), `optimizer.pt` (under DeepSpeed, the engine's own `deepspeed/` checkpoint instead),
`training_state-rank<r>.pt` (scheduler, grad scaler and the RNG states of python, numpy, torch and CUDA)
and `state.json` (step, epoch, position in the epoch, settings), written last. A checkpoint is written
into `OUT/checkpoints/.tmp-step-000002`, every file and folder fsynced, and renamed when complete, so a
folder without the `.tmp-` prefix is whole even after a power cut. A write that fails removes its partial
folder; a full disk is a `TrainingError` saying so (`writing_folder`). `--resume` takes the newest
checkpoint whose files can all be read and names any it skips (`resume_checkpoint`). Imports no torch
(the functions that read or write tensors import it).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from siad.training_settings import RESUMABLE_CHANGES, RunSettings, SettingsError, flatten_settings

if TYPE_CHECKING:  # pragma: no cover - typing only: this module imports no torch
    import torch

CHECKPOINT_DIR = "checkpoints"
FINAL_DIR = "final"
STATE_FILE = "state.json"
WEIGHTS_FILE = "trainable.safetensors"
TMP_PREFIX = ".tmp-"
STATE_KEYS: tuple[str, ...] = ("step", "epoch", "offset", "elapsed_s", "world_size", "settings")


class TrainingError(RuntimeError):
    """A run cannot go on (the loss or the weights became non-finite, the disk is full, ...)."""



# ---------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run folder, oldest first: (step, folder)."""
    folder = Path(out) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if path.name.startswith("step-") and path.name[5:].isdigit() and (path / STATE_FILE).is_file():
            found.append((int(path.name[5:]), path))
    return sorted(found)


def latest_checkpoint(out: str | Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def remove_partial_folders(out: str | Path) -> None:
    """Remove the `.tmp-*` folders (checkpoints, final model) left by a run killed while writing them."""
    for folder in (Path(out), Path(out) / CHECKPOINT_DIR):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.name.startswith(TMP_PREFIX) and path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)


def is_disk_full(error: BaseException) -> bool:
    """Whether an error (or one it was raised from) is a full disk or an exceeded quota. torch.save and
    safetensors wrap the OSError: their messages are read too."""
    return _disk_full_cause(error) is not None


def _disk_full_cause(error: BaseException) -> BaseException | None:
    """The error of the chain that says the disk is full (the OSError rather than torch's wrapper)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return current
        if any(sign in str(current) for sign in ("No space left on device", "os error 28", "Disk quota exceeded")):
            return current
        current = current.__cause__ or current.__context__
    return None


def _nearly_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(path).free < 64 * 2**20
    except OSError:
        return False


def free_space(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 2**20:.1f} MiB"
    except OSError:
        return "no space"


@contextmanager
def writing_folder(folder: Path, what: str) -> Iterator[None]:
    """Guard the writing of a temporary folder: when anything fails the partial folder is removed
    first (a later --resume must not find it, nor the disk stay full of it); a full disk becomes a
    `TrainingError` that says so plainly, naming the folder."""
    try:
        yield
    except BaseException as error:
        # torch.save given a path (DeepSpeed's writers) reports a failed write only as "unexpected pos"
        cause = _disk_full_cause(error) or (error if "unexpected pos" in str(error) and _nearly_full(folder.parent)
                                            else None)
        shutil.rmtree(folder, ignore_errors=True)
        if cause is not None:
            raise TrainingError(f"the disk is full: writing {what} into {folder} failed ({cause}). The partial "
                                f"folder was removed ({free_space(folder.parent)} free now); free some space, "
                                f"then continue with --resume") from error
        raise


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then every folder (deepest first), so that their contents are on
    the disk before the folder is renamed into place."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            _fsync_path(Path(root) / name)
        _fsync_path(Path(root))


def _fsync_path(path: Path) -> None:
    if path.is_dir() and os.name == "nt":  # Windows cannot open a folder to fsync it
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_tmp(out: str | Path, step: int) -> Path:
    """The temporary folder a checkpoint is written into (emptied first)."""
    tmp = Path(out) / CHECKPOINT_DIR / f"{TMP_PREFIX}{checkpoint_name(step)}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_folder(tmp: Path, final: Path) -> Path:
    """Rename a fully written folder into place (replacing an older one of the same name), its files and
    folders fsynced before and the parent folder after the rename."""
    fsync_tree(tmp)
    if final.exists():
        old = final.with_name(f"{TMP_PREFIX}old-{final.name}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_path(final.parent)
    return final


def prune_checkpoints(out: str | Path, keep_last: int | None) -> None:
    """Keep only the newest `keep_last` complete checkpoints (all when None)."""
    if keep_last is None:
        return
    for _, path in list_checkpoints(out)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


def save_trainable(named_parameters: Iterable[tuple[str, "torch.Tensor"]], path: Path) -> None:
    """The trainable parameters as safetensors (exact values: no dtype change). Non-finite weights are
    never written: `TrainingError` names them."""
    from safetensors.torch import save_file  # deferred: torch (siad.training imports none)

    from siad.weights import non_finite  # deferred: torch (siad.training imports none)

    state = {name: p.detach().contiguous().cpu() for name, p in named_parameters}
    bad = non_finite(state)
    if bad:
        raise TrainingError(f"{len(bad)} of {len(state)} trainable tensors hold NaN or infinite values "
                            f"({bad[:5]}{' ...' if len(bad) > 5 else ''}); the checkpoint is not written")
    save_file(state, str(path), metadata={"format": "pt"})


def load_trainable(model: "torch.nn.Module", path: Path) -> None:
    """Load `save_trainable`'s file into the trainable parameters; the names must match exactly."""
    import torch  # deferred: torch (siad.training imports none)
    from safetensors.torch import load_file  # deferred: torch (siad.training imports none)

    state = load_file(str(path))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unknown = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unknown:
        raise ValueError(f"{path} does not match the model's trainable parameters: missing {missing[:5]}, "
                         f"unknown {unknown[:5]}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name].to(device=p.device, dtype=p.dtype))


def save_torch(obj: Any, path: Path) -> None:
    """`torch.save` through a Python file object, so that a failed write keeps its OSError (a path
    gives only "unexpected pos")."""
    import torch  # deferred: torch (siad.training imports none)

    with open(path, "wb") as handle:
        torch.save(obj, handle)


def read_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's `state.json`; `ValueError` naming the file when it is not a complete state."""
    path = checkpoint / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} cannot be read: {error}") from error
    missing = [key for key in STATE_KEYS if key not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if missing:
        raise ValueError(f"{path} is not a checkpoint state (missing {missing})")
    return state


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (a missing or unreadable file, named), or None. Reads
    state.json, the weights and the training states in full; the optimizer state's structure only."""
    import torch  # deferred: torch (siad.training imports none)
    from safetensors.torch import load_file  # deferred: torch (siad.training imports none)

    try:
        state = read_state(checkpoint)
    except ValueError as error:
        return str(error)
    files = [checkpoint / WEIGHTS_FILE]
    files += [checkpoint / f"training_state-rank{r}.pt" for r in range(int(state["world_size"]))]
    if not (checkpoint / "deepspeed").is_dir():
        files.append(checkpoint / "optimizer.pt")
    for path in files:
        try:
            if path.suffix == ".safetensors":
                load_file(str(path))
            else:
                torch.load(path, map_location="cpu", weights_only=True, mmap=path.name == "optimizer.pt")
        except Exception as error:  # noqa: BLE001 - any failure to read the file makes it unusable
            return f"{path} cannot be read: {type(error).__name__}: {error}"
    return None


def resume_checkpoint(out: str | Path, report: Callable[[str], None] = print) -> Path | None:
    """The newest checkpoint of a run folder whose files can all be read (None: there is none at all).
    Each unreadable one is reported by name and skipped; if none can be read, `SettingsError`."""
    found = list_checkpoints(out)
    problems = []
    for _, checkpoint in reversed(found):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            if problems:
                report(f"resuming from the older checkpoint {checkpoint} instead")
            return checkpoint
        problems.append(problem)
        report(f"warning: skipping the checkpoint {checkpoint}: {problem}")
    if found:
        raise SettingsError(f"--resume: none of the {len(found)} checkpoints in {Path(out) / CHECKPOINT_DIR} can be "
                            f"read ({'; '.join(problems)}); start afresh in another output.dir")
    return None


def write_state(folder: Path, state: Mapping[str, Any]) -> None:
    (folder / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def settings_changes(saved: Mapping[str, Any], current: RunSettings) -> list[str]:
    """Dotted keys whose values differ between a checkpoint's settings and the current ones, except
    those that may change on resumption (`RESUMABLE_CHANGES`)."""
    flat_saved = flatten_settings(saved)
    flat_now = json.loads(json.dumps(current.flat()))
    keys = set(flat_saved) | set(flat_now)
    return sorted(k for k in keys if k not in RESUMABLE_CHANGES and flat_saved.get(k) != flat_now.get(k))
