"""From patch features to reference maps (DESIGN 9, beyond the paper): the nearest-neighbour search of a
bank, the self-reference, and the fusion of reference maps with the text stage maps. The bank:
`siad.reference_bank`; making one and matching it to a model: `siad.references`.

Notation: B query images, K stages, stage k on an H_k x W_k patch grid (N_k = H_k W_k patches; every
grid is given, never derived from N_k), S = image size.

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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from siad.config import FUSION_MODES, MapConfig
from siad.modules import AnomalyMapHead, tokens_to_map

if TYPE_CHECKING:  # pragma: no cover - typing only: siad.references imports this module
    from siad.reference_bank import ReferenceBank

DEFAULT_FEW_SHOT_WEIGHT: float = MapConfig.few_shot_weight  # measured (module docstring)
DEFAULT_CHUNK_ELEMENTS = 1 << 24  # similarities held at once: 64 MiB in float32


# ----------------------------------------------------------------------------------------- features
def aggregate_patches(tokens: torch.Tensor, grid: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """B x N x D patch tokens on an H x W grid (N = H W, row by row) -> B x N x D in `dtype`: each token
    averaged over its 3 x 3 neighbourhood on the grid (borders: over the neighbours that exist),
    L2-normalised."""
    pooled = F.avg_pool2d(tokens_to_map(tokens.to(dtype), grid), kernel_size=3, stride=1, padding=1,
                          count_include_pad=False)
    return F.normalize(pooled.flatten(2).transpose(1, 2), dim=-1)


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
