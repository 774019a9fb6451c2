"""Where a run of `siad.runner` keeps each finished batch's result, by batch index: in memory
(`MemoryStore`, API calls) or on disk (`DiskStore`: `<out>/.siad-resume/<tool>-<hash>/batch-<i>.npz`,
each written atomically, temporary file and rename), so that a rerun with `--resume` skips the batches
already done. `run_folder` names a run's folder by everything its results depend on (`file_identity`
of the model, the images, the settings).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, Protocol, TypeVar

import numpy as np

Payload = TypeVar("Payload")

RESUME_FOLDER = ".siad-resume"  # under the output folder: one sub-folder per run, removed when it ends


class BatchStore(Protocol[Payload]):
    """Where a run keeps each finished batch's result, by batch index."""

    def has(self, index: int) -> bool: ...

    def save(self, index: int, payload: Payload) -> None: ...

    def load(self, index: int) -> Payload: ...

    def discard(self) -> None: ...


class MemoryStore(Generic[Payload]):
    """Results in memory (API calls; nothing to resume)."""

    def __init__(self) -> None:
        self._results: dict[int, Payload] = {}

    def has(self, index: int) -> bool:
        return index in self._results

    def save(self, index: int, payload: Payload) -> None:
        self._results[index] = payload

    def load(self, index: int) -> Payload:
        return self._results[index]

    def discard(self) -> None:
        self._results.clear()


def atomic_write(path: Path, write: Callable[[Any], None]) -> Path:
    """Write a file through `write(binary handle)` into a temporary file beside `path`, then rename it
    over `path`: a reader (or a resumed run) sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def json_array(value: Any) -> np.ndarray:
    """A JSON-able value as a uint8 array (to store beside arrays in an .npz file)."""
    return np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8)


def from_json_array(array: np.ndarray) -> Any:
    return json.loads(bytes(np.asarray(array, dtype=np.uint8)).decode("utf-8"))


class DiskStore(Generic[Payload]):
    """Results as `<folder>/batch-<index>.npz` files (arrays only, read with allow_pickle=False), each
    written atomically; `encode` / `decode` turn a result into named arrays and back."""

    def __init__(self, folder: Path, encode: Callable[[Payload], dict[str, np.ndarray]],
                 decode: Callable[[Mapping[str, np.ndarray]], Payload]) -> None:
        self.folder = folder
        self._encode = encode
        self._decode = decode

    def path(self, index: int) -> Path:
        return self.folder / f"batch-{index:06d}.npz"

    def has(self, index: int) -> bool:
        return self.path(index).is_file()

    def save(self, index: int, payload: Payload) -> None:
        arrays = self._encode(payload)
        atomic_write(self.path(index), lambda handle: np.savez(handle, **arrays))

    def load(self, index: int) -> Payload:
        with np.load(self.path(index), allow_pickle=False) as archive:
            return self._decode({name: archive[name] for name in archive.files})

    def discard(self) -> None:
        """Remove this run's folder (and the resume folder above it when nothing else is left there)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()
        except OSError:
            pass


def run_folder(out: Path, tool: str, description: Mapping[str, Any]) -> Path:
    """The folder of one run's batch files: `<out>/.siad-resume/<tool>-<hash of description>`. The
    description holds everything the results depend on (model, images, settings, batch size), so a
    rerun with other settings never picks up results that are not its own."""
    text = json.dumps(description, sort_keys=True, default=str)
    return out / RESUME_FOLDER / f"{tool}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"


def file_identity(spec: str) -> Any:
    """What a run's results depend on in a model given by `spec`: for a local folder, the size and
    modification time of each file in it (a retrained model in the same folder is another model; its
    card, README.md, is left out: `--card` rewrites it); for a file (an exported graph), its size and
    modification time; else `spec` itself (a Hub id, zero-shot:...)."""
    folder = Path(spec).expanduser()
    if folder.is_file():
        return [(folder.name, folder.stat().st_size, folder.stat().st_mtime_ns)]
    if not folder.is_dir():
        return spec
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*") if p.is_file() and p.name != "README.md")
