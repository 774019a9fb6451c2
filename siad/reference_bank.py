"""`ReferenceBank`: the normal patch features of one class, per stage (DESIGN 9, beyond the paper), and its
files. How a bank is made and matched to a model: `siad.references`; how its maps are made:
`siad.reference_maps`.

- Files (`ReferenceBank.save` / `load`): `NAME.safetensors` (stage_0 .. stage_{K-1}, normal_scale;
  the fields in its metadata) and `NAME.json` (the same fields, readable, and the tensor file's
  SHA-256); no pickle; loading validates everything and refuses an edited sidecar or tensor file.
- `bank_paths`: the two files of a bank.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from siad.config import FEW_SHOT_FEATURES, MAX_ITEMS
from siad.detection import normalise_class_name, shot_mode
from siad.jsonfile import parse_json, read_json, short_repr

FEATURE_KINDS: tuple[str, ...] = FEW_SHOT_FEATURES
MIN_NORMAL_SCALE = 1e-3
MAX_NORMAL_SCALE = 2.0  # a cosine distance 1 - cos lies in [0, 2]: so does its quantile, the normal scale
BANK_FORMAT = "siad-reference-bank"
BANK_VERSION = 2  # 2: `grids` (one H x W per stage); version 1 held one square `grid_size`, still read

_BANK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_JSON_FIELDS_V1 = ("format", "version", "class_name", "features", "num_shots", "stage_blocks", "grid_size",
                   "fingerprint", "max_bank_patches", "seed", "dtype", "shapes", "sha256")
_JSON_FIELDS = ("format", "version", "class_name", "features", "num_shots", "stage_blocks", "grids",
                "fingerprint", "max_bank_patches", "seed", "dtype", "shapes", "sha256")


@dataclass(frozen=True, eq=False)
class ReferenceBank:
    """The normal patch features of one class, per stage.

    stages: K tensors M_k x D_k, L2-normalised 3 x 3-aggregated patch features, one dtype, one device;
    normal_scale: K float32 values in [MIN_NORMAL_SCALE, MAX_NORMAL_SCALE] (see the module docstring);
    class_name: the class, whitespace
    normalised; features: "trunk" or "visual"; num_shots: how many images made it; stage_blocks: the
    backbone's stages (`SIADConfig.vision.stages`); grids: (H_k, W_k) of each stage's patch grid;
    fingerprint: `model_fingerprint` of
    the model that made it; max_bank_patches: the coreset bound it was made with (None: none);
    seed: the coreset's seed. Construction validates the fields (ValueError).
    """

    class_name: str
    features: str
    num_shots: int
    stage_blocks: tuple[int, ...]
    grids: tuple[tuple[int, int], ...]
    fingerprint: str
    stages: tuple[torch.Tensor, ...]
    normal_scale: torch.Tensor
    max_bank_patches: int | None
    seed: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage_blocks", tuple(self.stage_blocks))
        object.__setattr__(self, "grids", tuple(tuple(g) for g in self.grids))
        object.__setattr__(self, "stages", tuple(self.stages))
        problems = _bank_problems(self)
        if problems:
            raise ValueError("invalid ReferenceBank: " + "; ".join(problems))

    # ------------------------------------------------------------------ properties
    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def device(self) -> torch.device:
        return self.stages[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.stages[0].dtype

    @property
    def stage_nbytes(self) -> list[int]:
        """Bytes of each stage's features."""
        return [s.numel() * s.element_size() for s in self.stages]

    @property
    def nbytes(self) -> int:
        return sum(self.stage_nbytes) + self.normal_scale.numel() * self.normal_scale.element_size()

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "ReferenceBank":
        """A copy of the bank with its features on `device` and/or in `dtype` (renormalised after a cast)."""
        def convert(s: torch.Tensor) -> torch.Tensor:
            out = s.to(device=device or s.device)
            if dtype is not None and dtype != s.dtype:
                out = F.normalize(out.float(), dim=-1).to(dtype)
            return out

        return self._replace(stages=tuple(convert(s) for s in self.stages),
                             normal_scale=self.normal_scale.to(device=device or self.normal_scale.device))

    @property
    def mode(self) -> str:
        """What detection with this bank is called: "k-shot" (`shot_mode`)."""
        return shot_mode(self.num_shots)

    def digest(self) -> str:
        """A SHA-256 of the bank's content (every field and every tensor's values): what a cache of
        results computed with the bank is keyed by. Computed once per bank object and kept on it,
        keyed by each tensor's version counter and address (an in-place change recomputes it)."""
        tensors = (*self.stages, self.normal_scale)
        key = tuple((t._version, t.data_ptr()) for t in tensors)
        cached = self.__dict__.get("_digest")
        if cached is not None and cached[0] == key:
            return cached[1]
        digest = hashlib.sha256(json.dumps(
            [self.class_name, self.features, self.num_shots, list(self.stage_blocks), [list(g) for g in self.grids],
             self.fingerprint, self.max_bank_patches, self.seed, _dtype_name(self.dtype)]).encode())
        for t in tensors:
            digest.update(f"|{tuple(t.shape)}|".encode())
            digest.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
        value = digest.hexdigest()
        object.__setattr__(self, "_digest", (key, value))  # a cache, not a field: the dataclass is frozen
        return value

    def _replace(self, **changes: Any) -> "ReferenceBank":
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        fields.update(changes)
        return ReferenceBank(**fields)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write `path` (safetensors; ".safetensors" is appended when missing) and its JSON sidecar
        (same name, ".json"). Returns both paths. Each file is written to a temporary name first."""
        tensors_path, sidecar_path = bank_paths(path)
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"stage_{k}": s.detach().to("cpu").contiguous() for k, s in enumerate(self.stages)}
        tensors["normal_scale"] = self.normal_scale.detach().to("cpu", torch.float32).contiguous()
        fields = {
            "format": BANK_FORMAT, "version": BANK_VERSION, "class_name": self.class_name,
            "features": self.features, "num_shots": self.num_shots, "stage_blocks": list(self.stage_blocks),
            "grids": [list(g) for g in self.grids], "fingerprint": self.fingerprint,
            "max_bank_patches": self.max_bank_patches, "seed": self.seed, "dtype": _dtype_name(self.dtype),
            "shapes": [list(s.shape) for s in self.stages],
        }
        # The fields also go into the tensor file's metadata, so that its checksum covers them.
        temporary = tensors_path.with_name(tensors_path.name + ".tmp")
        save_file(tensors, str(temporary), metadata={"format": BANK_FORMAT, "bank": json.dumps(fields, sort_keys=True)})
        sidecar = {**fields, "sha256": _sha256(temporary)}
        os.replace(temporary, tensors_path)
        temporary = sidecar_path.with_name(sidecar_path.name + ".tmp")
        temporary.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, sidecar_path)
        return tensors_path, sidecar_path

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str = "cpu") -> "ReferenceBank":
        """Read a bank written by `save` onto `device`. Every field, the file's checksum, the tensor
        names, shapes, dtypes and values (finite, unit rows, positive scales) are checked: anything
        wrong is a ValueError naming it (a missing file is a FileNotFoundError)."""
        tensors_path, sidecar_path = bank_paths(path)
        for p in (tensors_path, sidecar_path):
            if not p.is_file():
                raise FileNotFoundError(f"reference bank file not found: {p}")
        meta = _read_sidecar(sidecar_path)
        if _sha256(tensors_path) != meta["sha256"]:
            raise ValueError(f"{tensors_path} does not match its sidecar {sidecar_path.name} (checksum differs): "
                             "the files were changed or come from two different banks")
        try:
            with safe_open(str(tensors_path), framework="pt") as handle:
                stored = handle.metadata() or {}
            tensors = load_file(str(tensors_path), device=str(device))
        except SafetensorError as error:
            raise ValueError(f"{tensors_path} is not a readable safetensors file: {error}") from error
        try:
            stored_fields = parse_json(stored.get("bank", ""), str(tensors_path))
        except ValueError:
            stored_fields = None
        if stored_fields != {k: v for k, v in meta.items() if k != "sha256"}:
            raise ValueError(f"{sidecar_path.name} does not match the fields stored in {tensors_path.name}: "
                             "the sidecar was edited")
        count = len(meta["shapes"])
        expected = {f"stage_{k}" for k in range(count)} | {"normal_scale"}
        if set(tensors) != expected:
            raise ValueError(f"{tensors_path}: tensors {sorted(tensors)} do not match the expected {sorted(expected)}")
        dtype = _BANK_DTYPES[meta["dtype"]]
        stages = []
        for k, shape in enumerate(meta["shapes"]):
            s = tensors[f"stage_{k}"]
            if list(s.shape) != list(shape) or s.dtype != dtype:
                raise ValueError(f"{tensors_path}: stage_{k} is {s.dtype} {list(s.shape)}, the sidecar says "
                                 f"{meta['dtype']} {shape}")
            norms = s.float().norm(dim=-1)
            tolerance = 1e-3 if dtype == torch.float32 else 2e-2
            if not bool(torch.isfinite(s).all()) or not bool(((norms - 1).abs() <= tolerance).all()):
                raise ValueError(f"{tensors_path}: stage_{k} holds non-finite or non-normalised rows")
            stages.append(s)
        scale = tensors["normal_scale"]
        if scale.dtype != torch.float32 or tuple(scale.shape) != (count,):
            raise ValueError(f"{tensors_path}: normal_scale must be float32 of shape ({count},), "
                             f"got {scale.dtype} {tuple(scale.shape)}")
        try:
            return cls(class_name=meta["class_name"], features=meta["features"], num_shots=meta["num_shots"],
                       stage_blocks=tuple(meta["stage_blocks"]), grids=_sidecar_grids(meta),
                       fingerprint=meta["fingerprint"], stages=tuple(stages), normal_scale=scale,
                       max_bank_patches=meta["max_bank_patches"], seed=meta["seed"])
        except ValueError as error:
            raise ValueError(f"{tensors_path}: {error}") from error


def _sidecar_grids(meta: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    """The grids of a sidecar: version 2's `grids`, or version 1's one square `grid_size` for every stage."""
    if meta["version"] == 1:
        return tuple((meta["grid_size"], meta["grid_size"]) for _ in meta["shapes"])
    return tuple(tuple(g) for g in meta["grids"])


def bank_paths(path: str | Path) -> tuple[Path, Path]:
    """The tensor file and JSON sidecar of a bank: "x" or "x.safetensors" -> (x.safetensors, x.json)."""
    base = Path(path)
    tensors = base if base.suffix == ".safetensors" else base.with_name(base.name + ".safetensors")
    return tensors, tensors.with_suffix(".json")


def _bank_problems(bank: ReferenceBank) -> list[str]:
    """What is wrong with a bank's fields (empty when nothing is)."""
    problems: list[str] = []
    if not isinstance(bank.class_name, str) or not bank.class_name.strip() or normalise_class_name(
            bank.class_name) != bank.class_name:
        problems.append(f"class_name must be a non-empty, whitespace-normalised string, got "
                        f"{short_repr(bank.class_name)}")
    if bank.features not in FEATURE_KINDS:
        problems.append(f"features must be one of {FEATURE_KINDS}, got {short_repr(bank.features)}")
    if not _positive_int(bank.num_shots):
        problems.append(f"num_shots must be a positive integer, got {short_repr(bank.num_shots)}")
    grids_ok = (isinstance(bank.grids, tuple) and len(bank.grids) == len(bank.stages)
                and all(len(g) == 2 and all(_positive_int(v) for v in g) for g in bank.grids))
    if not grids_ok:
        problems.append(f"grids must hold one (height, width) of positive integers per stage, got "
                        f"{short_repr(bank.grids)}")
    if (not bank.stage_blocks or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0
                                         for b in bank.stage_blocks)
            or list(bank.stage_blocks) != sorted(set(bank.stage_blocks))):
        problems.append(f"stage_blocks must be strictly increasing stage indices, got {short_repr(bank.stage_blocks)}")
    if not isinstance(bank.fingerprint, str) or len(bank.fingerprint.split(":")) != 3:
        problems.append(f"fingerprint must be 'features:config:weights', got {short_repr(bank.fingerprint)}")
    elif bank.fingerprint.split(":")[0] != bank.features:
        problems.append(f"fingerprint {short_repr(bank.fingerprint)} is not one of {short_repr(bank.features)} "
                        f"features")
    if bank.max_bank_patches is not None and not _positive_int(bank.max_bank_patches):
        problems.append(f"max_bank_patches must be a positive integer or None, got {short_repr(bank.max_bank_patches)}")
    if not isinstance(bank.seed, int) or isinstance(bank.seed, bool):
        problems.append(f"seed must be an integer, got {short_repr(bank.seed)}")
    stages = bank.stages
    if not stages or not all(isinstance(s, torch.Tensor) for s in stages):
        return problems + ["stages must be a non-empty sequence of tensors"]
    if isinstance(bank.stage_blocks, tuple) and len(stages) != len(bank.stage_blocks):
        problems.append(f"{len(stages)} stages for {len(bank.stage_blocks)} stage blocks")
    for k, s in enumerate(stages):
        if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 1:
            problems.append(f"stage {k} must be M x D with M, D >= 1, got shape {tuple(s.shape)}")
        if s.dtype not in _BANK_DTYPES.values():
            problems.append(f"stage {k} has dtype {s.dtype}; expected one of {sorted(_BANK_DTYPES)}")
        if s.dtype != stages[0].dtype or s.device != stages[0].device:
            problems.append(f"stage {k} is {s.dtype} on {s.device}, stage 0 {stages[0].dtype} on {stages[0].device}")
        if (bank.max_bank_patches is not None and _positive_int(bank.max_bank_patches)
                and s.ndim == 2 and s.shape[0] > bank.max_bank_patches):
            problems.append(f"stage {k} holds {s.shape[0]} rows, more than max_bank_patches={bank.max_bank_patches}")
        if (_positive_int(bank.num_shots) and grids_ok and s.ndim == 2
                and s.shape[0] > bank.num_shots * bank.grids[k][0] * bank.grids[k][1]):
            problems.append(f"stage {k} holds {s.shape[0]} rows, more than {bank.num_shots} shots x "
                            f"{bank.grids[k][0] * bank.grids[k][1]} patches")
    scale = bank.normal_scale
    if (not isinstance(scale, torch.Tensor) or scale.dtype != torch.float32 or tuple(scale.shape) != (len(stages),)
            or not bool(((scale >= MIN_NORMAL_SCALE) & (scale <= MAX_NORMAL_SCALE)).all())):
        problems.append(f"normal_scale must be {len(stages)} float32 values in [{MIN_NORMAL_SCALE}, "
                        f"{MAX_NORMAL_SCALE}] (a quantile of cosine distances, floored at {MIN_NORMAL_SCALE}), got "
                        f"{short_repr(scale.tolist() if isinstance(scale, torch.Tensor) else scale)}")
    return problems


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, d in _BANK_DTYPES.items() if d == dtype)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar's fields, type-checked (the values are checked again by ReferenceBank)."""
    try:
        meta = read_json(path)  # size and nesting bounded
    except ValueError as error:
        raise ValueError(f"not a reference-bank sidecar (invalid JSON, or past siad.jsonfile's bounds): {error}") \
            from error
    if not isinstance(meta, dict) or meta.get("format") != BANK_FORMAT:
        raise ValueError(f"{path} is not a reference-bank sidecar (format is not {BANK_FORMAT!r})")
    if meta.get("version") not in (1, BANK_VERSION):
        raise ValueError(f"{path}: bank format version {short_repr(meta.get('version'))} is not supported "
                         f"(this version reads 1 and {BANK_VERSION})")
    fields = _JSON_FIELDS if meta["version"] == BANK_VERSION else _JSON_FIELDS_V1
    missing, unknown = sorted(set(fields) - set(meta)), sorted(set(meta) - set(fields))
    if missing or unknown:
        raise ValueError(f"{path}: missing fields {missing}, unknown fields {unknown}")
    types = {"class_name": str, "features": str, "num_shots": int, "stage_blocks": list,
             "fingerprint": str, "seed": int, "dtype": str, "shapes": list, "sha256": str}
    for name, kind in types.items():
        if not isinstance(meta[name], kind) or isinstance(meta[name], bool):
            raise ValueError(f"{path}: field {name!r} must be a {kind.__name__}, got {short_repr(meta[name])}")
    if meta["max_bank_patches"] is not None and not _positive_int(meta["max_bank_patches"]):
        raise ValueError(f"{path}: max_bank_patches must be a positive integer or null")
    if meta["dtype"] not in _BANK_DTYPES:
        raise ValueError(f"{path}: dtype must be one of {sorted(_BANK_DTYPES)}, got {short_repr(meta['dtype'])}")
    for name in ("shapes", "stage_blocks", "grids"):
        if isinstance(meta.get(name), list) and len(meta[name]) > MAX_ITEMS:
            raise ValueError(f"{path}: field {name!r} has {len(meta[name])} entries; a bank has at most {MAX_ITEMS} "
                             f"stages")
    shapes = meta["shapes"]
    if not shapes or not all(isinstance(s, list) and len(s) == 2 and all(_positive_int(v) for v in s) for s in shapes):
        raise ValueError(f"{path}: shapes must be a non-empty list of [rows, dims] pairs, got {short_repr(shapes)}")
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in meta["stage_blocks"]):
        raise ValueError(f"{path}: stage_blocks must be integers, got {short_repr(meta['stage_blocks'])}")
    if meta["version"] == 1:
        if not _positive_int(meta["grid_size"]):
            raise ValueError(f"{path}: grid_size must be a positive integer, got {short_repr(meta['grid_size'])}")
    elif not (isinstance(meta["grids"], list) and all(isinstance(g, list) and len(g) == 2 and all(
            _positive_int(v) for v in g) for g in meta["grids"])):
        raise ValueError(f"{path}: grids must be a list of [height, width] pairs, got {short_repr(meta['grids'])}")
    return meta
