"""The command-line options every tool that runs a model over images shares (`siad evaluate`, `predict`,
`calibrate`, `detect`): --device (checked as it is parsed), --dtype, --workers, --resume, and the check
that the output folder can be written before any model runs. Imports no torch (a device other than
"cpu" is checked with it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any


def device_problem(text: str) -> str | None:
    """Why `text` cannot be this process's torch device (not a device name, or an accelerator this
    machine does not have), or None when it can. "cpu" needs no torch (siad predict --onnx runs without it)."""
    if text.strip() == "cpu":
        return None
    import torch  # deferred: the device names are torch's, and the ONNX runtime path never imports torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError) as error:
        return f"{text!r} is not a torch device ({error})"
    if device.type == "cpu":
        return None
    if device.type == "meta":
        return "the meta device holds no data; give cpu or an accelerator"
    if device.type == "mps":
        available, count = torch.backends.mps.is_available(), 1
    else:
        backend = getattr(torch, device.type, None)
        if backend is None or not hasattr(backend, "is_available"):
            return f"{text!r}: this torch cannot run on {device.type} devices"
        available = bool(backend.is_available())
        count = int(backend.device_count()) if available and hasattr(backend, "device_count") else 0
    if not available:
        return f"{text!r}: this machine has no {device.type} device torch can use; give --device cpu"
    if device.index is not None and device.index >= count:
        return f"{text!r}: this machine has {count} {device.type} device(s) (indices 0..{count - 1})"
    return None


def device_argument(text: str) -> str:
    """The argparse type of --device: the name, when `device_problem` finds nothing (else argparse's
    error, exit status 2, before anything runs)."""
    problem = device_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def check_output_folder(folder: Path, option: str = "--out") -> Path:
    """Create `folder` (and its parents) and write and remove a file in it, before any model runs: an
    output that cannot be written is a ValueError naming the option, not a traceback after the work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".siad-write-test-"):
            pass
    except OSError as error:
        raise ValueError(f"{option} {folder} cannot be written: {error.strerror or error}") from error
    return folder


def add_run_arguments(parser: Any, resume: str | None = None) -> None:
    """The options every tool that runs a model over images shares (evaluate, predict, calibrate):
    --device (checked as it is parsed: `device_argument`), --dtype, --workers and, when `resume` says
    what a resumed run skips, --resume."""
    parser.add_argument("--device", default="cpu", type=device_argument, help="torch device (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--workers", type=int, default=2,
                        help="DataLoader worker processes that read and resize the images while the model runs "
                             "(default 2; 0: in the main process)")
    if resume is not None:
        parser.add_argument("--resume", action="store_true", help=resume)
