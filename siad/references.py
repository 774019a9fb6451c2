"""Few-shot references: a memory of normal patches of one class (DESIGN 9, issue 11; beyond the paper).

Given k normal images of the class under inspection, every stage k keeps the patch features of those
images (a `ReferenceBank`); a query patch's distance to the bank marks what the references never
showed. Notation: B query images, K stages, stage k on an H_k x W_k patch grid (N_k = H_k W_k
patches; every grid is given, never derived from N_k), S = image size.

- Features (`features=`): "trunk", the raw stage features P_k of the vision backbone
  (`VisionFeatures.stage_tokens`, DESIGN 9's first candidate, as PatchCore and WinCLIP+ use backbone
  features), or "visual", the adapted features S_emd_k (`SIADModel.visual_features`).
- Local aggregation (PatchCore): each token is averaged with its 3 x 3 neighbourhood on its stage's
  grid (`aggregate_patches`), then L2-normalised; the bank holds those vectors, M_k x D_k per stage.
- Patch distance: 1 - max cosine to the bank (`nearest_distances`, in chunks of at most
  `chunk_elements` similarities, on the bank's device), K x (B x H_k x W_k) (`reference_distances`).
- Reference map (`reference_maps`): the distance grid upsampled exactly as the text logits
  (`AnomalyMapHead.upsample`), then R_k = d / (d + s_k), s_k the bank's normal scale: the 0.99
  quantile of the distances of the references' own patches to the other references (leave one image
  out; with one shot, to the same image outside each patch's 3 x 3 neighbourhood). R_k lies in
  [0, 1), is 0.5 where a patch is as far from the bank as the farthest normal patches were, and is a
  two-way softmax of log d and log s_k, as a text map is a softmax of two logits.
- Fusion (`fuse_stage_maps`): fused_k = (1 - w) * M_k + w * R_k (w = few_shot_weight), before PEM,
  so that the LLM and the self-improvement loop see the fused maps; the image score stays max of the
  mean over stages. Decided by `benchmarks/few_shot_fusion.py` (siad-mini v1, the bundled model then,
  SIAD-Synth's 8 unseen test classes, 224 test images, seeds 0 and 1; image / pixel AUROC, mean over classes):
      maps                      1-shot          4-shot
      zero-shot text maps       0.614 / 0.769   0.614 / 0.769
      trunk, w = 0.5            0.697 / 0.832   0.696 / 0.848
      trunk, w = 0.9            0.728 / 0.853   0.727 / 0.872   <- best (image + pixel), the default
      trunk, R alone (w = 1)    0.718 / 0.850   0.716 / 0.874
      visual, w = 0.5           0.651 / 0.775   0.671 / 0.801
      visual, R alone           0.639 / 0.772   0.627 / 0.821
      trunk without s_k, w=0.9  0.715 / 0.837   0.713 / 0.848
  So: "trunk" features, w = DEFAULT_FEW_SHOT_WEIGHT = 0.9; the normal scale is worth +0.01 image /
  +0.02 pixel AUROC in the fusion. (LayerNorm or L2 of the tokens before the 3 x 3 average changed
  nothing: within 0.002; Gaussian smoothing sigma 4 before the score neither.)
- Self-reference (`self_reference_distances`, `self_reference_maps`; zero-shot, beyond the paper): the
  same distance with the image's own patches outside each patch's (2r + 1)^2 neighbourhood as the bank,
  scaled by the image's median distance. `SIADModel` fuses it like a bank's maps
  (config.map.self_reference_weight) for images without references; with a bank and the self-reference
  on, the reference map is the mean of the two. That mean was measured against the bank alone with
  a one-off script (not kept; `siad.evaluate --shots` gives the end-to-end figures of the shipped model)
  (4 shots, seed 0, 224 px, image / pixel AUROC, fused (0.1 text + 0.9 R) vs (0.1 text + 0.4 self +
  0.5 bank), the nearest to the mean with w = 0.9): siad-mini v1 on SIAD-Synth's unseen test classes
  72.2 / 86.6 -> 72.6 / 90.5, on the held-out families 56.2 / 57.5 -> 57.0 / 79.1; siad-mini v2 on the
  test classes 59.6 / 85.5 -> 59.4 / 85.6, on the held-out families 57.3 / 62.7 -> 59.3 / 81.3. The
  held-out families' normal images vary in pose and lighting, so a few references match them poorly
  patch by patch, while the image's own patches still do.
- Bounded banks (`kcenter_greedy`): PatchCore's greedy coreset (k-center greedy on a seeded Gaussian
  random projection to 128 dims) keeps at most `max_bank_patches` rows per stage, the farthest points
  first.
- Model fingerprint (`model_fingerprint`): "<features>:<config hash>:<weights hash>". The config hash
  covers every config field that changes the features (widths, blocks, heads, patch size, stage
  blocks, image size, resize mode, mean/std, input limit; for "visual" also embed_dim and the
  adapter/SEM switches). The weights hash covers every tensor of the modules that make the features
  (the vision preprocessor and trunk; for "visual" also stage projection, adapter and SEM): its name,
  shape and a deterministic sample of 4096 evenly spaced values, rounded to bfloat16 (so a float32
  model and its bfloat16 copy share a fingerprint; a float16 copy may not). Any retraining or other
  checkpoint changes the sampled values; a change confined to unsampled elements would go unnoticed.
  The result is cached on the model (attribute `_siad_reference_fingerprints`, not in the state
  dict), keyed by the config values and each tensor's version counter, storage address, dtype and
  device, so an optimizer step, `load_state_dict` or `.to()` recomputes it; a check costs microseconds.
- Files (`ReferenceBank.save` / `load`): `NAME.safetensors` (stage_0 .. stage_{K-1}, normal_scale;
  the fields in its metadata) and `NAME.json` (the same fields, readable, and the tensor file's
  SHA-256); no pickle; loading validates everything and refuses an edited sidecar or tensor file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from siad.config import FEW_SHOT_FEATURES, FUSION_MODES, MAX_ITEMS, MapConfig
from siad.detection import ZERO_SHOT, normalise_class_name, shot_mode  # noqa: F401 (re-exported)
from siad.jsonfile import parse_json, read_json, short_repr
from siad.modules import AnomalyMapHead, tokens_to_map

# The few-shot settings live in SIADConfig.map (few_shot_features, few_shot_weight, max_bank_patches);
# these names are their defaults, measured as the module docstring says.
FEATURE_KINDS: tuple[str, ...] = FEW_SHOT_FEATURES
DEFAULT_FEATURES: str = MapConfig.few_shot_features  # measured (module docstring)
DEFAULT_FEW_SHOT_WEIGHT: float = MapConfig.few_shot_weight  # measured (module docstring)
DEFAULT_MAX_BANK_PATCHES: int = MapConfig.max_bank_patches  # 16 shots of 256 patches; 64 shots cut to a quarter
DEFAULT_CHUNK_ELEMENTS = 1 << 24  # similarities held at once: 64 MiB in float32
CORESET_PROJECTION_DIM = 128
NORMAL_SCALE_QUANTILE = 0.99
NORMAL_SCALE_QUERIES = 1024  # reference patches (all images together) whose distances give the scale
MIN_NORMAL_SCALE = 1e-3
MAX_NORMAL_SCALE = 2.0  # a cosine distance 1 - cos lies in [0, 2]: so does its quantile, the normal scale
FINGERPRINT_SAMPLES = 4096
BANK_FORMAT = "siad-reference-bank"
BANK_VERSION = 2  # 2: `grids` (one H x W per stage); version 1 held one square `grid_size`, still read

_BANK_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The config values a fingerprint covers, by their format-3 names for ImageBind backbones (so that the banks
# of models saved before the config came in parts still serve them), as (name, part, field).
_IMAGEBIND_TRUNK_FIELDS = (("vision_embed_dim", "vision", "width"), ("vision_num_blocks", "vision", "num_blocks"),
                           ("vision_num_heads", "vision", "num_heads"), ("vision_patch_size", "vision", "patch_size"),
                           ("stage_blocks", "vision", "stages"))
_INPUT_FIELDS = (("image_size", "vision", "image_size"), ("image_mean", "vision", "image_mean"),
                 ("image_std", "vision", "image_std"), ("resize_mode", "vision", "resize_mode"),
                 ("max_input_side", "vision", "max_input_side"))
_BACKBONE_FIELDS = (("backbone", "vision", "backbone"), ("stages", "vision", "stages"))
_VISUAL_FIELDS = (("embed_dim", "", "embed_dim"), ("adapter_lambda", "map", "adapter_lambda"),
                  ("use_adapter", "map", "use_adapter"), ("use_sem", "map", "use_sem"))
_FINGERPRINT_ATTRIBUTE = "_siad_reference_fingerprints"
_JSON_FIELDS_V1 = ("format", "version", "class_name", "features", "num_shots", "stage_blocks", "grid_size",
                   "fingerprint", "max_bank_patches", "seed", "dtype", "shapes", "sha256")
_JSON_FIELDS = ("format", "version", "class_name", "features", "num_shots", "stage_blocks", "grids",
                "fingerprint", "max_bank_patches", "seed", "dtype", "shapes", "sha256")


# ----------------------------------------------------------------------------------------- the bank
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
        from safetensors.torch import save_file

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
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

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


def draw_references(pool: Sequence[Any], shots: int, *, seed: int, class_name: str) -> list[Any]:
    """`shots` distinct items of `pool` (the normal images of a class), drawn with a generator seeded
    by (seed, CRC-32 of the class name), in pool order: the WinCLIP / AnomalyGPT few-shot protocol's
    draw, the same for every run, model and machine (and independent across classes)."""
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 1:
        raise ValueError(f"shots must be a positive integer, got {shots!r}")
    if shots > len(pool):
        raise ValueError(f"{shots} references of class {class_name!r} were asked for, but only {len(pool)} "
                         "normal images are available")
    rng = np.random.default_rng([seed, zlib.crc32(class_name.encode("utf-8"))])
    return [pool[int(i)] for i in np.sort(rng.choice(len(pool), size=shots, replace=False))]


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


# ----------------------------------------------------------------------------------------- fingerprint
def _feature_modules(model: Any, features: str) -> list[tuple[str, nn.Module]]:
    """The modules that make the features of a kind (their tensors are fingerprinted)."""
    if features not in FEATURE_KINDS:
        raise ValueError(f"features must be one of {FEATURE_KINDS}, got {features!r}")
    encoder = model.vision_encoder
    if model.config.vision.backbone == "imagebind":  # the names and modules of the format-3 fingerprints
        modules = [("vision_preprocessor", encoder.modality_preprocessors["vision"]),
                   ("vision_trunk", encoder.modality_trunks["vision"])]
    else:
        modules = [("vision_backbone", encoder)]
    if features == "visual":
        if not hasattr(model, "visual_features"):
            raise ValueError(f"{type(model).__name__} has no adapted visual features; use features='trunk'")
        modules += [(name, getattr(model, name)) for name in ("stage_projection", "adapter", "sem")
                    if getattr(model, name, None) is not None]
    return modules


def _feature_tensors(model: Any, features: str) -> list[tuple[str, torch.Tensor]]:
    return [(f"{prefix}.{name}", t) for prefix, module in _feature_modules(model, features)
            for name, t in [*module.named_parameters(), *module.named_buffers()]]


def _config_values(model: Any, features: str) -> dict[str, Any]:
    config = model.config
    trunk = _IMAGEBIND_TRUNK_FIELDS if config.vision.backbone == "imagebind" else _BACKBONE_FIELDS
    names = trunk + _INPUT_FIELDS + (_VISUAL_FIELDS if features == "visual" else ())
    values = {name: getattr(getattr(config, part) if part else config, field) for name, part, field in names}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _sample_bytes(tensor: torch.Tensor) -> bytes:
    """FINGERPRINT_SAMPLES evenly spaced values of a tensor (all of a small one), as bfloat16 bytes.
    The indices are integer arithmetic on the CPU, so every device samples the same elements."""
    flat = tensor.detach().reshape(-1)
    count = flat.numel()
    if count > FINGERPRINT_SAMPLES:
        index = torch.arange(FINGERPRINT_SAMPLES, dtype=torch.int64) * (count - 1) // (FINGERPRINT_SAMPLES - 1)
        flat = flat[index.to(flat.device)]
    if flat.is_floating_point():
        flat = flat.to(torch.bfloat16).view(torch.int16)
    return flat.cpu().numpy().tobytes()


def model_fingerprint(model: Any, features: str = "trunk") -> str:
    """"<features>:<config hash>:<weights hash>" of the model's `features` (see the module docstring).

    model: a SIADModel (or anything with `config` and a `vision_encoder`, for "trunk").
    Cached on the model, keyed by the config values and the tensors' version counters, addresses,
    dtypes and devices."""
    config_values = _config_values(model, features)
    tensors = _feature_tensors(model, features)
    if any(t.is_meta for _, t in tensors):
        raise ValueError("the model's weights are not loaded (meta tensors): no fingerprint can be taken")
    key = (json.dumps(config_values, sort_keys=True),
           tuple((t._version, t.data_ptr(), t.dtype, str(t.device)) for _, t in tensors))
    cache: dict[str, tuple[Any, str]] = model.__dict__.setdefault(_FINGERPRINT_ATTRIBUTE, {})
    cached = cache.get(features)
    if cached is not None and cached[0] == key:
        return cached[1]
    config_hash = hashlib.sha256(key[0].encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    for name, t in tensors:
        digest.update(f"{name}|{tuple(t.shape)}|".encode())
        digest.update(_sample_bytes(t))
    value = f"{features}:{config_hash}:{digest.hexdigest()[:16]}"
    cache[features] = (key, value)
    return value


def check_bank(bank: ReferenceBank, model_fingerprint: str, class_name: str) -> None:
    """Raise a ValueError saying what differs when `bank` cannot serve a model with this fingerprint
    (another kind of features, another feature configuration, other weights) for images of
    `class_name` (compared after whitespace normalisation)."""
    if bank.fingerprint != model_fingerprint:
        have, want = bank.fingerprint.split(":"), str(model_fingerprint).split(":")
        if len(want) != 3:
            why = f"the fingerprint {model_fingerprint!r} is not a model fingerprint"
        elif have[0] != want[0]:
            why = f"it holds {have[0]!r} features and the model is asked for {want[0]!r} features"
        elif have[1] != want[1]:
            why = (f"it was made with another model configuration (stages {bank.stage_blocks}, grids "
                   f"{['x'.join(map(str, g)) for g in bank.grids]}, dims {[s.shape[1] for s in bank.stages]}; a "
                   "different backbone, stage layout, image size, resize mode, normalisation or width)")
        else:
            why = "it was made with another model (different weights)"
        raise ValueError(f"the reference bank of {short_repr(bank.class_name)} ({bank.num_shots}-shot, "
                         f"{bank.features}) cannot serve this model: {why}; build the references again with this model")
    name = normalise_class_name(class_name) if isinstance(class_name, str) else class_name
    if name != bank.class_name:
        raise ValueError(f"the reference bank is for class {short_repr(bank.class_name)}, not {name!r}: "
                         "references serve only the class they show")


def banks_for_images(references: Any, class_names: Sequence[str], *, fingerprint: Callable[[], str],
                     device: torch.device, build: Callable[[Sequence[Any], str], ReferenceBank]
                     ) -> list[ReferenceBank | None]:
    """One bank (None: zero-shot) per image of `class_names` (normalised names), from what `detect` takes
    as `references`:

    - None, [] or {}: zero-shot for every image;
    - a ReferenceBank: for every image (they must all be of its class);
    - a list of images: normal references of the one class of the images (a bank is built from them
      with `build(images, class_name)`; images of several classes need a dict);
    - a dict {class name: bank or list of images}: each image gets its class's entry; an image whose
      class has none (or an empty list) stays zero-shot.

    A bank made by another model (`fingerprint()`: the model's, asked only when there are references),
    with other features or for another class is a ValueError saying what differs (`check_bank`); banks
    are moved to `device`."""
    names = list(class_names)
    if references is None:
        return [None] * len(names)
    table: dict[str, Any]
    if isinstance(references, ReferenceBank):
        table = {name: references for name in names}
    elif isinstance(references, Mapping):
        table = {}
        for key, value in references.items():
            if not isinstance(key, str) or not key.strip():
                raise ValueError(f"references: a dict's keys must be class names, got {key!r}")
            if normalise_class_name(key) in table:
                raise ValueError(f"references: class {normalise_class_name(key)!r} is given twice")
            table[normalise_class_name(key)] = value
    elif isinstance(references, (list, tuple)):
        classes = list(dict.fromkeys(names))
        if references and len(classes) > 1:
            raise ValueError(f"references: a list of images serves one class, and the images are of "
                             f"{len(classes)} classes {classes}; give a dict {{class name: images or bank}}")
        table = {classes[0]: references} if references else {}
    else:
        raise ValueError("references must be None, a ReferenceBank, a list of normal images of the class or "
                         f"a dict {{class name: bank or images}}, got {type(references).__name__}")
    wanted = fingerprint() if table else ""
    banks: dict[str, ReferenceBank | None] = {}
    for name in dict.fromkeys(names):
        value = table.get(name)
        if isinstance(value, ReferenceBank):
            check_bank(value, wanted, name)
            banks[name] = value if value.device == device else value.to(device)
        elif isinstance(value, (list, tuple)):
            banks[name] = build(value, name) if value else None
        elif value is None:
            banks[name] = None
        else:
            raise ValueError(f"references for class {name!r} must be a ReferenceBank or a list of images, "
                             f"got {type(value).__name__}")
    return [banks[name] for name in names]


# ----------------------------------------------------------------------------------------- features
def aggregate_patches(tokens: torch.Tensor, grid: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """B x N x D patch tokens on an H x W grid (N = H W, row by row) -> B x N x D in `dtype`: each token
    averaged over its 3 x 3 neighbourhood on the grid (borders: over the neighbours that exist),
    L2-normalised."""
    pooled = F.avg_pool2d(tokens_to_map(tokens.to(dtype), grid), kernel_size=3, stride=1, padding=1,
                          count_include_pad=False)
    return F.normalize(pooled.flatten(2).transpose(1, 2), dim=-1)


def select_features(model: Any, vision: Any, features: str) -> list[torch.Tensor]:
    """The stage features of a kind for a batch: K x (B x N x D_k). "trunk": `vision.stage_tokens`;
    "visual": `model.visual_features(vision)` (stage projection, adapter, SEM)."""
    if features == "trunk":
        return list(vision.stage_tokens)
    if features == "visual":
        return list(model.visual_features(vision))
    raise ValueError(f"features must be one of {FEATURE_KINDS}, got {features!r}")


# ----------------------------------------------------------------------------------------- search
def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, *,
                      chunk_elements: int | None = DEFAULT_CHUNK_ELEMENTS) -> torch.Tensor:
    """Q x D queries, M x D bank rows (both L2-normalised) -> Q distances 1 - max cosine, >= 0.

    Runs on the bank's device in the bank's dtype; holds at most `chunk_elements` similarities at a
    time (query rows x bank rows per block; the bank is split too when M alone exceeds the budget).
    chunk_elements=None: one block of Q x M, no loop over the data's size (what an exported graph
    with a dynamic batch needs: `siad.export`)."""
    if chunk_elements is not None and chunk_elements < 1:
        raise ValueError(f"chunk_elements must be positive or None, got {chunk_elements}")
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and bank {tuple(bank.shape)} must be Q x D and M x D")
    if bank.shape[0] == 0:
        raise ValueError("the bank is empty")
    queries = queries.to(device=bank.device, dtype=bank.dtype)
    if chunk_elements is None:
        return (1.0 - (queries @ bank.T).amax(dim=1)).clamp(min=0.0)
    bank_rows = min(bank.shape[0], chunk_elements)
    query_rows = max(1, chunk_elements // bank_rows)
    out = torch.empty(queries.shape[0], dtype=bank.dtype, device=bank.device)
    for q0 in range(0, queries.shape[0], query_rows):
        block = queries[q0:q0 + query_rows]
        best = None
        for m0 in range(0, bank.shape[0], bank_rows):
            top = (block @ bank[m0:m0 + bank_rows].T).amax(dim=1)
            best = top if best is None else torch.maximum(best, top)
        out[q0:q0 + query_rows] = best
    return (1.0 - out).clamp_(min=0.0)


def reference_distances(stage_features: Sequence[torch.Tensor], grids: Sequence[tuple[int, int]],
                        bank: ReferenceBank, *, chunk_elements: int | None = DEFAULT_CHUNK_ELEMENTS
                        ) -> list[torch.Tensor]:
    """K x (B x N_k x D_k) features of the query images (of the bank's kind, before aggregation) on
    their grids -> K float32 patch distances B x H_k x W_k (1 - max cosine to the bank), on the
    queries' device. The search runs on the bank's device (`nearest_distances`; chunk_elements=None:
    unchunked)."""
    if len(stage_features) != bank.num_stages or len(grids) != bank.num_stages:
        raise ValueError(f"{len(stage_features)} stages of features for a bank of {bank.num_stages} stages")
    out = []
    for k, (tokens, grid, rows) in enumerate(zip(stage_features, grids, bank.stages)):
        batch, count, dim = tokens.shape
        if tuple(grid) != tuple(bank.grids[k]) or dim != rows.shape[1]:
            raise ValueError(f"stage {k}: queries of {dim} dims on a {grid[0]} x {grid[1]} grid do not match the "
                             f"bank's {rows.shape[1]} dims on {bank.grids[k][0]} x {bank.grids[k][1]}")
        queries = aggregate_patches(tokens.to(bank.device), grid, dtype=bank.dtype).reshape(-1, dim)
        distances = nearest_distances(queries, rows, chunk_elements=chunk_elements)
        out.append(distances.view(batch, *grid).float().to(stage_features[0].device))
    return out


def reference_maps(distances: Sequence[torch.Tensor], normal_scale: torch.Tensor, image_size: int) -> torch.Tensor:
    """K distances B x H_k x W_k -> B x K x S x S reference maps R_k = d / (d + s_k) in [0, 1), each
    grid upsampled as the text maps are (`AnomalyMapHead.upsample`); normal_scale: K values > 0 (one
    per stage) or B x K (one per image and stage)."""
    stages = len(distances)
    batch = distances[0].shape[0] if stages else 0
    # ndim before sizes: comparing a symbolic batch size with the number of stages would fix the batch
    # size of an exported graph whenever the two happen to be equal
    scale_ok = (normal_scale.ndim == 1 and normal_scale.shape[0] == stages) or (
        normal_scale.ndim == 2 and normal_scale.shape[1] == stages and normal_scale.shape[0] == batch)
    if not stages or any(d.ndim != 3 or d.shape[0] != batch for d in distances) or not scale_ok:
        raise ValueError(f"distances {[tuple(d.shape) for d in distances]} must be K tensors B x H_k x W_k with one "
                         f"normal scale per stage or per image and stage (got {tuple(normal_scale.shape)})")
    upsampled = torch.cat([AnomalyMapHead.upsample(d[:, None].float(), image_size) for d in distances], dim=1)
    scale = normal_scale.to(device=upsampled.device, dtype=upsampled.dtype)
    scale = scale.view(1, -1, 1, 1) if scale.ndim == 1 else scale.view(batch, stages, 1, 1)
    return upsampled / (upsampled + scale)


# ----------------------------------------------------------------------------------------- self-reference
def self_reference_distances(stage_tokens: Sequence[torch.Tensor], grids: Sequence[tuple[int, int]],
                             radius: int) -> list[torch.Tensor]:
    """Zero-shot self-reference (beyond the paper): K x (B x N_k x D_k) stage tokens of the images on
    their grids -> K float32 distances B x H_k x W_k, each patch's 1 - max cosine to the same image's
    patches outside its (2 radius + 1)^2 grid neighbourhood (3 x 3-aggregated as the banks are,
    `aggregate_patches`).

    A patch that repeats elsewhere in its own image (texture, a part's regular structure) is near 0;
    one the rest of the image never shows is far: the "local break of the image's own regularity"
    that the training data teaches the text maps, computed without any training. Memory B x N x N."""
    out = []
    for tokens, (height, width) in zip(stage_tokens, grids, strict=True):
        batch = tokens.shape[0]
        if 2 * radius + 1 >= min(height, width):
            raise ValueError(f"self-reference radius {radius} leaves no patch to compare with on a "
                             f"{height} x {width} grid")
        features = aggregate_patches(tokens, (height, width))
        rows = torch.arange(height, device=tokens.device).repeat_interleave(width)
        cols = torch.arange(width, device=tokens.device).repeat(height)
        near = ((rows[:, None] - rows[None]).abs() <= radius) & ((cols[:, None] - cols[None]).abs() <= radius)
        similarity = (features @ features.transpose(1, 2)).masked_fill_(near, -1.0)
        out.append((1.0 - similarity.amax(dim=-1)).clamp_(min=0.0).view(batch, height, width))
    return out


def self_reference_maps(distances: Sequence[torch.Tensor], image_size: int) -> torch.Tensor:
    """K self-reference distances B x H_k x W_k -> B x K x S x S maps R_self_k = d / (d + m), m the
    image's own median distance at that stage (so 0.5 marks a typical patch of this image and a patch
    the image repeats nowhere approaches 1; an image has no references to take a normal scale from).
    The per-image median scale was measured better than one fixed scale (issue 12 notes)."""
    median = torch.stack([lower_median(d.flatten(1)) for d in distances], dim=1).clamp(min=1e-6)
    return reference_maps(distances, median, image_size)


def lower_median(values: torch.Tensor) -> torch.Tensor:
    """B x N -> B: each row's lower median, the ((N - 1) // 2)-th smallest value (`torch.median`'s), by
    `topk`: ONNX has no median operator, and this way the exported graph computes what the model does."""
    count = values.shape[-1]
    return values.topk((count - 1) // 2 + 1, dim=-1, largest=False).values[..., -1]


FUSION_FLOOR = 1e-4  # the geometric fusion's floor: a map value of 0 would make every fused value 0


def fuse_stage_maps(text_maps: torch.Tensor, reference: torch.Tensor, weight: float | torch.Tensor,
                    mode: str = "linear") -> torch.Tensor:
    """B x K x S x S text maps M and reference maps R -> B x K x S x S fused maps, per stage k:

    - "linear": fused_k = (1 - w) * M_k + w * R_k;
    - "geometric": fused_k = M_k^(1 - w) * R_k^w (both floored at FUSION_FLOOR): high only where both
      maps are high, so that a patch that is merely unique in its image (high R, low M) or a text map's
      false alarm on a patch the image repeats (high M, low R) does not set the image score.

    weight: one value, or B values (one per image); 0 gives the text maps, 1 the reference maps (either mode)."""
    weights = torch.as_tensor(weight, dtype=torch.float32)
    if weights.ndim > 1 or (weights.ndim == 1 and weights.shape[0] != text_maps.shape[0]):
        raise ValueError(f"the fusion weight must be one value or one per image, got shape {tuple(weights.shape)}")
    if bool(((weights < 0) | (weights > 1) | weights.isnan()).any()):
        raise ValueError(f"the fusion weight (the few-shot weight or the self-reference weight) must lie in [0, 1], "
                         f"got {weight!r}")
    if text_maps.shape != reference.shape:
        raise ValueError(f"text maps {tuple(text_maps.shape)} and reference maps {tuple(reference.shape)} differ")
    if mode not in FUSION_MODES:
        raise ValueError(f"the fusion mode must be one of {FUSION_MODES}, got {mode!r}")
    w = weights.to(device=text_maps.device, dtype=text_maps.dtype)
    if w.ndim == 1:
        w = w.view(-1, 1, 1, 1)
    reference = reference.to(text_maps.dtype)
    if mode == "linear":
        return (1.0 - w) * text_maps + w * reference
    fused = text_maps.clamp(min=FUSION_FLOOR) ** (1.0 - w) * reference.clamp(min=FUSION_FLOOR) ** w
    if w.ndim == 0:  # the ends are the maps themselves, exactly (no floor)
        return text_maps if float(w) == 0.0 else reference if float(w) == 1.0 else fused
    return torch.where(w == 0, text_maps, torch.where(w == 1, reference, fused))


# ----------------------------------------------------------------------------------------- coreset
def kcenter_greedy(features: torch.Tensor, count: int, *, seed: int = 0,
                   projection_dim: int = CORESET_PROJECTION_DIM) -> torch.Tensor:
    """PatchCore's greedy coreset: M x D rows -> the sorted indices (int64, features' device) of at
    most `count` rows. From a seeded random start, repeatedly take the row farthest (Euclidean, after a
    seeded Gaussian projection to `projection_dim` dims when D is larger) from those already taken.
    Every row when count >= M; duplicate rows may make the result shorter than count."""
    rows, dim = features.shape
    if count < 1:
        raise ValueError(f"the coreset size must be positive, got {count}")
    if count >= rows:
        return torch.arange(rows, device=features.device)
    generator = torch.Generator().manual_seed(seed)
    points = features.float()
    if dim > projection_dim:
        projection = torch.randn(dim, projection_dim, generator=generator) / math.sqrt(projection_dim)
        points = points @ projection.to(points.device)
    squares = points.square().sum(dim=1)  # |x|^2: each step is then one matrix-vector product
    current = torch.randint(rows, (1,), generator=generator).to(points.device)
    chosen = torch.empty(count, dtype=torch.int64, device=points.device)
    nearest = torch.full((rows,), math.inf, device=points.device)
    for i in range(count):
        chosen[i] = current[0]
        # |x - c|^2 = |x|^2 + |c|^2 - 2 x.c (the index stays a tensor: no device sync per step)
        distances = torch.addmv(squares + squares[current], points, points[current][0], alpha=-2.0)
        nearest = torch.minimum(nearest, distances)
        current = nearest.argmax().view(1)
    return torch.unique(chosen)


# ----------------------------------------------------------------------------------------- building
def _normal_scale(patches: torch.Tensor, grid: Sequence[int], *, seed: int, chunk_elements: int) -> float:
    """n x N x D aggregated features of the references on an H x W grid -> the NORMAL_SCALE_QUANTILE
    quantile of their patches' distances to the other references (n >= 2; at most NORMAL_SCALE_QUERIES
    patches, seeded) or, with one image, to the same image outside each patch's 3 x 3 neighbourhood."""
    shots, count, dim = patches.shape
    if shots == 1:
        width = int(grid[1])
        ys, xs = torch.div(torch.arange(count), width, rounding_mode="floor"), torch.arange(count) % width
        near = ((ys[:, None] - ys[None]).abs() <= 1) & ((xs[:, None] - xs[None]).abs() <= 1)
        similarity = (patches[0] @ patches[0].T).float().masked_fill(near.to(patches.device), -math.inf)
        distances = 1.0 - similarity.amax(dim=1)
        distances = distances[torch.isfinite(distances)]
    else:
        generator = torch.Generator().manual_seed(seed)
        per_image = min(count, max(1, math.ceil(NORMAL_SCALE_QUERIES / shots)))
        parts = []
        for i in range(shots):
            queries = patches[i, torch.randperm(count, generator=generator)[:per_image].to(patches.device)]
            others = [p.reshape(-1, dim) for p in (patches[:i], patches[i + 1:]) if p.shape[0]]
            found = [nearest_distances(queries, o, chunk_elements=chunk_elements) for o in others]
            parts.append(torch.stack(found).amin(dim=0))
        distances = torch.cat(parts)
    if distances.numel() == 0:
        return MIN_NORMAL_SCALE
    return max(float(torch.quantile(distances.float(), NORMAL_SCALE_QUANTILE)), MIN_NORMAL_SCALE)


def bank_from_features(stage_features: Sequence[torch.Tensor], grids: Sequence[tuple[int, int]], *,
                       class_name: str, features: str, stage_blocks: Sequence[int], fingerprint: str,
                       max_bank_patches: int | None = DEFAULT_MAX_BANK_PATCHES, seed: int = 0,
                       dtype: torch.dtype = torch.float32,
                       chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> ReferenceBank:
    """The bank of n normal images from their stage features K x (n x N_k x D_k) on their grids (of kind
    `features`, before aggregation): 3 x 3 aggregation, the normal scale, then the coreset bound per stage.
    The bank stays on the features' device, in `dtype`."""
    if not stage_features:
        raise ValueError("no stage features")
    shots = stage_features[0].shape[0]
    if shots < 1:
        raise ValueError("at least one reference image is needed")
    if len(grids) != len(stage_features):
        raise ValueError(f"{len(grids)} grids for {len(stage_features)} stages")
    rows, scales = [], []
    for k, (tokens, grid) in enumerate(zip(stage_features, grids)):
        if tokens.shape[0] != shots:
            raise ValueError(f"stage {k} has {tokens.shape[0]} images, stage 0 {shots}")
        patches = aggregate_patches(tokens, grid, dtype=dtype)  # n x N x D
        scales.append(_normal_scale(patches, grid, seed=seed, chunk_elements=chunk_elements))
        flat = patches.reshape(-1, patches.shape[-1])
        if max_bank_patches is not None and flat.shape[0] > max_bank_patches:
            flat = flat[kcenter_greedy(flat, max_bank_patches, seed=seed)]
        rows.append(flat.contiguous())
    return ReferenceBank(class_name=normalise_class_name(class_name), features=features, num_shots=shots,
                         stage_blocks=tuple(stage_blocks), grids=tuple(tuple(g) for g in grids),
                         fingerprint=fingerprint,
                         stages=tuple(rows), normal_scale=torch.tensor(scales, dtype=torch.float32,
                                                                       device=rows[0].device),
                         max_bank_patches=max_bank_patches, seed=seed)


@torch.no_grad()
def build_reference_bank(model: Any, images: Sequence[Any], class_name: str, *, features: str = DEFAULT_FEATURES,
                         max_bank_patches: int | None = DEFAULT_MAX_BANK_PATCHES, seed: int = 0,
                         batch_size: int = 8, dtype: torch.dtype = torch.float32,
                         chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> ReferenceBank:
    """The bank of a class from k normal images (paths, PIL images or arrays, as `detect` takes),
    through the model's own preprocessing and encoder (`prepare_images`, `encode_images`, and
    `visual_features` for "visual"). The bank lies on the model's device, in `dtype`."""
    if not isinstance(class_name, str) or not class_name.strip():
        raise ValueError(f"the class name must be a non-empty string, got {class_name!r}")
    items = list(images)
    if not items:
        raise ValueError("no reference images")
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    fingerprint = model_fingerprint(model, features)
    parts: list[list[torch.Tensor]] = []
    grids: list[tuple[int, int]] = []
    for start in range(0, len(items), batch_size):
        pixels, _ = model.prepare_images(items[start:start + batch_size])
        vision = model.encode_images(pixels)
        grids = vision.grids
        parts.append(select_features(model, vision, features))
    stage_features = [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]
    return bank_from_features(stage_features, grids, class_name=class_name, features=features,
                              stage_blocks=model.config.vision.stages, fingerprint=fingerprint,
                              max_bank_patches=max_bank_patches, seed=seed, dtype=dtype,
                              chunk_elements=chunk_elements)
