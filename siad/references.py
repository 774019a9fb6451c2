"""Few-shot references: a memory of normal patches of one class (DESIGN 9, issue 11; beyond the paper).

Given k normal images of the class under inspection, every stage k keeps the patch features of those
images (a `ReferenceBank`); a query patch's distance to the bank marks what the references never
showed. Notation: B query images, K stages, stage k on an H_k x W_k patch grid (N_k = H_k W_k
patches; every grid is given, never derived from N_k), S = image size.

The parts: the bank and its files (`siad.reference_bank.ReferenceBank`); its maps, the self-reference
and the fusion (`siad.reference_maps`, where the settings were measured); here, making a bank and
matching it to a model (re-exporting the names of both, their old home):

- Features (`features=`): "trunk", the raw stage features P_k of the vision backbone
  (`VisionFeatures.stage_tokens`, DESIGN 9's first candidate, as PatchCore and WinCLIP+ use backbone
  features), or "visual", the adapted features S_emd_k (`SIADModel.visual_features`).
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
- Matching (`check_bank`, `banks_for_images`): a bank serves only the model (fingerprint) and the
  class it was made for; `detect`'s `references=` become one bank (or None) per image.
- `draw_references`: the few-shot protocol's draw of k normal images of a class.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from siad.config import MapConfig
from siad.detection import ZERO_SHOT, check_class_name, normalise_class_name, shot_mode  # noqa: F401 (re-exported)
from siad.jsonfile import short_repr
from siad.reference_bank import (BANK_FORMAT, BANK_VERSION, FEATURE_KINDS, MAX_NORMAL_SCALE,  # noqa: F401 (re-exported)
                                 MIN_NORMAL_SCALE, ReferenceBank, bank_paths)
from siad.reference_maps import (DEFAULT_CHUNK_ELEMENTS, DEFAULT_FEW_SHOT_WEIGHT,  # noqa: F401 (re-exported)
                                 FUSION_FLOOR, aggregate_patches, fuse_stage_maps, lower_median, nearest_distances,
                                 reference_distances, reference_maps, self_reference_distances, self_reference_maps)

# The few-shot settings live in SIADConfig.map (few_shot_features, few_shot_weight, max_bank_patches);
# these names are their defaults, measured as `siad.reference_maps` says.
DEFAULT_FEATURES: str = MapConfig.few_shot_features  # measured (siad.reference_maps)
DEFAULT_MAX_BANK_PATCHES: int = MapConfig.max_bank_patches  # 16 shots of 256 patches; 64 shots cut to a quarter
CORESET_PROJECTION_DIM = 128
NORMAL_SCALE_QUANTILE = 0.99
NORMAL_SCALE_QUERIES = 1024  # reference patches (all images together) whose distances give the scale
FINGERPRINT_SAMPLES = 4096

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


def select_features(model: Any, vision: Any, features: str) -> list[torch.Tensor]:
    """The stage features of a kind for a batch: K x (B x N x D_k). "trunk": `vision.stage_tokens`;
    "visual": `model.visual_features(vision)` (stage projection, adapter, SEM)."""
    if features == "trunk":
        return list(vision.stage_tokens)
    if features == "visual":
        return list(model.visual_features(vision))
    raise ValueError(f"features must be one of {FEATURE_KINDS}, got {features!r}")


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
    check_class_name(class_name)
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
