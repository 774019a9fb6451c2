"""Evaluation metrics for anomaly detection: exact, tie-aware, memory-bounded and fast.

Image level (`labels` and `scores` of the same shape, usually (N,); any shape is flattened):

- `image_auroc(labels, scores)`: area under the ROC curve (= Mann-Whitney U with mid-ranks).
- `average_precision(labels, scores)`: step-wise average precision, as scikit-learn's
  `average_precision_score` (one threshold per distinct score, no interpolation).
- `f1_max(labels, scores)`: the largest F1 over all thresholds (every distinct score).

Pixel level (`masks` and `maps` as N x H x W arrays, an H x W array for one image, or sequences of
such arrays, e.g. one H x W array per image; maps must already have the size of their masks):

- `pixel_auroc(masks, maps)`: AUROC over all pixels of all images.
- `aupro(masks, maps, fpr_limit=0.3)`: area under the per-region-overlap (PRO) curve up to a
  false-positive rate of `fpr_limit`, divided by `fpr_limit` (so 1.0 is perfect).
- `PixelMetricAccumulator`: collects maps image by image during an evaluation loop (a compact copy:
  masks as bool, maps as float32 where that is exact) and computes the pixel metrics at the end.
- `PixelState`: the pixels of any set of images reduced to what every pixel metric needs (the sorted
  normal scores, the sorted anomalous scores with their region weights, the number of regions);
  `PixelState.merge` joins the states of disjoint sets of images exactly, so that the states of the
  shards of a distributed evaluation give, merged, bit for bit the metrics of one process over all
  images (whatever the order or the split of the images: the state is a canonical ordering).

Conventions, the same for every function:

- Labels / masks are binarised as: bool as is; integers `> 0` (so 0/1 and 0/255 both work);
  floats `> 0.5` (0.0/1.0 masks, or masks resized with interpolation). NaN in a float mask raises.
- A threshold `t` predicts "anomalous" for `score >= t`; the curves have one point per distinct
  score, so tied scores move together (ties give the diagonal segments / mid-ranks of scikit-learn).
- Scores are used exactly as given: float16 and float32 maps are compared as float32, float64
  maps as float32 only when every value is exactly representable in float32 (else as float64),
  integer or bool scores as float64. Nothing is rounded or binned.
- Bad input raises `ValueError`: shapes that differ, empty input, NaN or infinite scores, and
  input where the metric is undefined (AUROC and AUPRO need both classes; average precision and
  F1-max need at least one positive), like scikit-learn's `roc_auc_score` raises.

Method: the scores of the negatives are sorted (`np.sort`, float32 where exact), the positives are
reduced to their distinct values (with a count, or a region weight for AUPRO), and all counts at a
threshold come from `np.searchsorted` of the distinct positive values into the sorted negatives.
AUROC is then U / (n_pos * n_neg) in integer arithmetic; AP, F1-max and the PRO curve only change
at distinct positive values, so they are evaluated there. No argsort of all pixels, no quadratic
buffers: beyond its input a call holds one copy of the scores in the working dtype (4 bytes a
pixel for float32 maps) plus O(anomalous pixels) for the positives, and works through the input
in blocks of at most `_BLOCK` values for the temporary masks and casts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
from scipy import ndimage

__all__ = [
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "average_precision",
    "f1_max",
    "PixelMetricAccumulator",
    "PixelState",
]

ArrayLike = Union[np.ndarray, Sequence[float], Sequence[int], Sequence[bool]]
PixelInput = Union[np.ndarray, Sequence[np.ndarray]]

_BLOCK = 1 << 22  # values per block when copying out of the input (about 16 MB of float32)


# --------------------------------------------------------------------------------------- input


def _binarise(labels: np.ndarray) -> np.ndarray:
    """A bool array of the same shape: bool as is, integers > 0, floats > 0.5 (see module doc)."""
    if labels.dtype == np.bool_:
        return labels
    if np.issubdtype(labels.dtype, np.integer):
        return labels > 0
    if np.issubdtype(labels.dtype, np.floating):
        if np.isnan(labels).any():
            raise ValueError("the labels / masks contain NaN")
        return labels > 0.5
    raise ValueError(f"labels / masks must be bool, integer or float, not {labels.dtype}")


def _check_scores(scores: np.ndarray) -> None:
    """Raise ValueError for a non-numeric dtype or NaN / infinite values."""
    if not (scores.dtype == np.bool_ or np.issubdtype(scores.dtype, np.integer)
            or np.issubdtype(scores.dtype, np.floating)):
        raise ValueError(f"scores / maps must be real numbers, not {scores.dtype}")
    if np.issubdtype(scores.dtype, np.floating) and not np.isfinite(scores).all():
        what = "NaN" if np.isnan(scores).any() else "infinite values"
        raise ValueError(f"the scores / maps contain {what}")


def _fits_float32(scores: np.ndarray) -> bool:
    """Whether every value of `scores` is exactly representable as float32."""
    if scores.dtype in (np.float16, np.float32):
        return True
    if scores.dtype != np.float64:
        return False
    with np.errstate(over="ignore"):
        return bool(np.array_equal(scores.astype(np.float32).astype(np.float64), scores))


def _pairs_for_labels(labels: ArrayLike, scores: ArrayLike) -> list[tuple[np.ndarray, np.ndarray]]:
    """Image-level input as one pair of flat arrays (n,), after checking shapes."""
    label_array, score_array = np.asarray(labels), np.asarray(scores)
    if label_array.shape != score_array.shape:
        raise ValueError(f"labels and scores differ in shape: {label_array.shape} vs {score_array.shape}")
    if label_array.size == 0:
        raise ValueError("labels and scores are empty")
    return [(label_array.reshape(-1), score_array.reshape(-1))]


def _as_images(array: np.ndarray, what: str) -> np.ndarray:
    """An (H, W) or (n, H, W) array as (n, H, W) (a view)."""
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3:
        return array
    raise ValueError(f"{what} must be H x W or N x H x W arrays; got shape {array.shape}")


def _pairs_for_pixels(masks: PixelInput, maps: PixelInput) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pixel-level input as a list of (mask, map) pairs, each (n, H, W), after checking shapes."""
    if isinstance(masks, np.ndarray) != isinstance(maps, np.ndarray):
        raise ValueError("masks and maps must both be arrays or both be sequences of arrays")
    mask_list = [masks] if isinstance(masks, np.ndarray) else list(masks)
    map_list = [maps] if isinstance(maps, np.ndarray) else list(maps)
    if len(mask_list) != len(map_list):
        raise ValueError(f"{len(mask_list)} masks but {len(map_list)} maps")
    pairs = []
    for mask, amap in zip(mask_list, map_list):
        mask_array = _as_images(np.asarray(mask), "masks")
        map_array = _as_images(np.asarray(amap), "maps")
        if mask_array.shape != map_array.shape:
            raise ValueError(f"a mask and its map differ in shape: {mask_array.shape} vs {map_array.shape}")
        if mask_array.size:
            pairs.append((mask_array, map_array))
    if not pairs:
        raise ValueError("masks and maps are empty")
    return pairs


def _blocks(array: np.ndarray) -> Iterator[slice]:
    """Slices along axis 0 holding at most about `_BLOCK` values each (at least one row)."""
    per_row = max(1, array[0].size) if array.ndim > 1 else 1
    step = max(1, _BLOCK // per_row)
    for start in range(0, array.shape[0], step):
        yield slice(start, start + step)


def _scan(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, int, np.dtype]:
    """Validate every block; return (number of positives, number of negatives, working dtype)."""
    n_pos = n_total = 0
    exact32 = True
    for labels, scores in pairs:
        for part in _blocks(labels):
            _check_scores(scores[part])
            n_pos += int(np.count_nonzero(_binarise(labels[part])))
            exact32 = exact32 and _fits_float32(scores[part])
        n_total += labels.size
    return n_pos, n_total - n_pos, np.dtype(np.float32 if exact32 else np.float64)


# ------------------------------------------------------------------------------ class splitting


@dataclass(frozen=True)
class _Split:
    """Scores split by class.

    negatives: (n_neg,) sorted ascending; values: (u,) distinct positive scores, ascending;
    weights: (u,) per distinct value, the number of positives with that score (int64) or, for
    AUPRO, the sum of their region weights 1 / region size (float64).
    """

    negatives: np.ndarray
    values: np.ndarray
    weights: np.ndarray

    def negatives_below(self, side: str) -> np.ndarray:
        """(u,) int64: negatives < each value (side="left") or <= each value (side="right")."""
        return np.searchsorted(self.negatives, self.values, side=side).astype(np.int64)


def _distinct(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, starts) for a sorted (n,) array: its distinct values and where each run starts."""
    if sorted_values.size == 0:
        return sorted_values, np.zeros(0, dtype=np.intp)
    starts = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    return sorted_values[starts], starts


def _split_counts(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[_Split, int, int]:
    """Split (label, score) pairs into sorted negatives and counted distinct positive values."""
    n_pos, n_neg, dtype = _scan(pairs)
    negatives = np.empty(n_neg, dtype=dtype)
    positives = np.empty(n_pos, dtype=dtype)
    at_neg = at_pos = 0
    for labels, scores in pairs:
        for part in _blocks(labels):
            mask = _binarise(labels[part]).reshape(-1)
            flat = scores[part].reshape(-1)
            k = int(np.count_nonzero(mask))
            positives[at_pos:at_pos + k] = flat[mask]
            negatives[at_neg:at_neg + flat.size - k] = flat[~mask]
            at_pos, at_neg = at_pos + k, at_neg + flat.size - k
    negatives.sort()
    positives.sort()
    values, starts = _distinct(positives)
    counts = np.diff(np.append(starts, n_pos)).astype(np.int64)
    return _Split(negatives, values, counts), n_pos, n_neg


def _canonical_positives(positives: np.ndarray, region_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The anomalous pixels ordered by (score, region size): a canonical order, so that the region
    weights summed over tied scores are the same whatever order the images came in."""
    order = np.lexsort((region_sizes, positives))
    return positives[order], region_sizes[order]


def _state_from_pairs(pairs: list[tuple[np.ndarray, np.ndarray]], connectivity: int) -> "PixelState":
    """The `PixelState` of (mask, map) pairs: every pixel once, regions labelled per image."""
    structure = _structure(connectivity)
    n_pos, n_neg, dtype = _scan(pairs)
    negatives = np.empty(n_neg, dtype=dtype)
    positives = np.empty(n_pos, dtype=dtype)
    region_sizes = np.empty(n_pos, dtype=np.int64)
    at_neg = at_pos = n_regions = n_images = 0
    for masks, maps in pairs:
        for index in range(masks.shape[0]):
            mask = _binarise(masks[index])
            amap = maps[index]
            k = int(np.count_nonzero(mask))
            negatives[at_neg:at_neg + mask.size - k] = amap[~mask]
            at_neg += mask.size - k
            n_images += 1
            if k == 0:
                continue
            regions, count = ndimage.label(mask, structure=structure)
            sizes = np.bincount(regions.ravel())
            positives[at_pos:at_pos + k] = amap[mask]
            region_sizes[at_pos:at_pos + k] = sizes[regions[mask]]
            at_pos += k
            n_regions += int(count)
    negatives.sort()
    positives, region_sizes = _canonical_positives(positives, region_sizes)
    return PixelState(negatives=negatives, positives=positives, region_sizes=region_sizes, n_regions=n_regions,
                      n_images=n_images, connectivity=connectivity)


def _split_regions(
    pairs: list[tuple[np.ndarray, np.ndarray]], connectivity: int
) -> tuple[_Split, int, int]:
    """Split pixels into sorted negatives and distinct positive values weighted by 1 / region size.

    Returns (split, number of ground-truth regions over all images, number of normal pixels).
    """
    return _state_from_pairs(pairs, connectivity).region_split()


def _require_both(n_pos: int, n_neg: int, metric: str) -> None:
    if n_pos == 0 or n_neg == 0:
        missing = "positive (anomalous)" if n_pos == 0 else "negative (normal)"
        raise ValueError(f"{metric} is undefined: there is no {missing} sample")


# ------------------------------------------------------------------------------------- metrics


def _auroc(split: _Split, n_pos: int, n_neg: int) -> float:
    """U / (n_pos * n_neg) with U = sum over positives of (#negatives below + #ties / 2)."""
    below, up_to = split.negatives_below("left"), split.negatives_below("right")
    twice_u = int(np.dot(split.weights, below + up_to))  # int64: < 2 * n_pos * n_neg
    return twice_u / (2 * n_pos * n_neg)  # Python ints: one correctly rounded division


def image_auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve of `scores` (N,) for binary `labels` (N,); ties count one half.

    Equal to scikit-learn's `roc_auc_score(labels, scores)`. Raises ValueError when only one
    class is present.
    """
    split, n_pos, n_neg = _split_counts(_pairs_for_labels(labels, scores))
    _require_both(n_pos, n_neg, "AUROC")
    return _auroc(split, n_pos, n_neg)


def pixel_auroc(masks: PixelInput, maps: PixelInput) -> float:
    """AUROC over all pixels: `masks` (N, H, W) ground truth, `maps` (N, H, W) anomaly scores.

    Also takes one (H, W) image, or sequences of (H, W) / (n, H, W) arrays (sizes may differ
    between images). Equal to `roc_auc_score(masks.ravel() > 0, maps.ravel())`.
    """
    split, n_pos, n_neg = _split_counts(_pairs_for_pixels(masks, maps))
    _require_both(n_pos, n_neg, "pixel AUROC")
    return _auroc(split, n_pos, n_neg)


def _precision_counts(split: _Split, n_neg: int) -> tuple[np.ndarray, np.ndarray]:
    """(true positives, false positives) at each threshold `score >= value`, both (u,) int64."""
    true_pos = np.cumsum(split.weights[::-1])[::-1]  # positives >= each value
    false_pos = n_neg - split.negatives_below("left")
    return true_pos, false_pos


def _average_precision(split: _Split, n_pos: int, n_neg: int) -> float:
    if n_pos == 0:
        raise ValueError("average precision is undefined: there is no positive (anomalous) sample")
    true_pos, false_pos = _precision_counts(split, n_neg)
    return float(np.dot(split.weights, true_pos / (true_pos + false_pos)) / n_pos)


def _f1_max(split: _Split, n_pos: int, n_neg: int) -> float:
    if n_pos == 0:
        raise ValueError("F1 is undefined: there is no positive (anomalous) sample")
    true_pos, false_pos = _precision_counts(split, n_neg)
    return float(np.max(2.0 * true_pos / (true_pos + false_pos + n_pos)))


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """Average precision of `scores` (N,) for binary `labels` (N,), as scikit-learn computes it.

    AP = sum over distinct thresholds of (R_k - R_(k-1)) * P_k, step-wise (no interpolation).
    Only thresholds at positive scores change recall, so only those are evaluated. Raises
    ValueError when there is no positive label; with no negative label AP is 1.0. For pixel-level
    AP pass masks and maps (any shape, flattened) or use `PixelMetricAccumulator`.
    """
    return _average_precision(*_split_counts(_pairs_for_labels(labels, scores)))


def f1_max(labels: ArrayLike, scores: ArrayLike) -> float:
    """The largest F1 score of `scores` (N,) for binary `labels` (N,) over all thresholds.

    F1 = 2 TP / (2 TP + FP + FN) at `score >= t`, t over every distinct score. For a fixed TP the
    false positives are fewest at a positive score, so those thresholds suffice. Raises
    ValueError when there is no positive label.
    """
    return _f1_max(*_split_counts(_pairs_for_labels(labels, scores)))


def _structure(connectivity: int) -> np.ndarray:
    """The 3 x 3 connectivity structure for `ndimage.label`: 4 (a cross) or 8 (all ones)."""
    if connectivity == 8:
        return np.ones((3, 3), dtype=bool)
    if connectivity == 4:
        return ndimage.generate_binary_structure(2, 1)
    raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under the polyline (x, y) from x[0] to `limit`.

    x (m,) nondecreasing with x[0] < limit <= x[-1]; the curve is interpolated at `limit`.
    """
    end = int(np.searchsorted(x, limit, side="left"))  # first vertex with x >= limit
    xs, ys = x[:end], y[:end]
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1])) / 2.0)
    x0, y0, x1, y1 = x[end - 1], y[end - 1], x[end], y[end]
    y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
    return area + (limit - x0) * (y0 + y_limit) / 2.0


def _aupro(split: _Split, n_regions: int, n_neg: int, fpr_limit: float) -> float:
    """Normalised area under the PRO curve (FPR, PRO), integrated from FPR 0 to `fpr_limit`.

    Between two distinct positive values only negatives are passed, so PRO is constant there and
    the curve is a horizontal line: its vertices are, for each distinct positive value v
    (descending), the point just above v and the point at v (a diagonal if negatives tie at v).
    """
    descending = slice(None, None, -1)
    fpr_above = (n_neg - split.negatives_below("right"))[descending] / n_neg  # FPR at score > v
    fpr_at = (n_neg - split.negatives_below("left"))[descending] / n_neg  # FPR at score >= v
    pro_at = np.cumsum(split.weights[descending]) / n_regions  # PRO at score >= v
    pro_above = np.concatenate(([0.0], pro_at[:-1]))
    x = np.concatenate(([0.0], np.stack([fpr_above, fpr_at], axis=1).ravel(), [1.0]))
    y = np.concatenate(([0.0], np.stack([pro_above, pro_at], axis=1).ravel(), [pro_at[-1]]))
    return _area_up_to(x, y, fpr_limit) / fpr_limit


def _check_fpr_limit(fpr_limit: float) -> float:
    if isinstance(fpr_limit, bool) or not isinstance(fpr_limit, (int, float, np.floating, np.integer)):
        raise ValueError(f"fpr_limit must be a number in (0, 1], got {fpr_limit!r}")
    if not (math.isfinite(fpr_limit) and 0.0 < fpr_limit <= 1.0):
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
    return float(fpr_limit)


def aupro(masks: PixelInput, maps: PixelInput, fpr_limit: float = 0.3, connectivity: int = 8) -> float:
    """Area under the per-region-overlap curve up to FPR `fpr_limit`, divided by `fpr_limit`.

    `masks` (N, H, W) ground truth and `maps` (N, H, W) anomaly scores (or the sequences that
    `pixel_auroc` takes). Ground-truth regions are the connected components of each image's mask,
    8-connected by default (a 3 x 3 structure, as MVTec AD's evaluation code), 4-connected with
    `connectivity=4`. At a threshold t (prediction `map >= t`), PRO is the mean over all regions
    of all images of the fraction of the region's pixels predicted, and FPR the fraction of all
    normal pixels (mask 0, in every image) predicted. The curve has one vertex per distinct
    score, starts at (0, 0), and is integrated with the trapezoidal rule up to exactly
    `fpr_limit` (interpolated there). 1.0 is perfect; a map that puts every normal pixel above
    every anomalous one gives 0.0. Raises ValueError without regions or without normal pixels.
    """
    limit = _check_fpr_limit(fpr_limit)
    _structure(connectivity)  # a bad connectivity fails before any work
    return _aupro_of(_split_regions(_pairs_for_pixels(masks, maps), connectivity), limit)


def _aupro_of(split_regions: tuple[_Split, int, int], limit: float) -> float:
    split, n_regions, n_neg = split_regions
    if n_regions == 0:
        raise ValueError("AUPRO is undefined: no mask has an anomalous region")
    if n_neg == 0:
        raise ValueError("AUPRO is undefined: there is no normal pixel")
    return _aupro(split, n_regions, n_neg, limit)


# ------------------------------------------------------------------------------- merged state


@dataclass(frozen=True)
class PixelState:
    """What the pixel metrics of a set of images need, in a canonical form that merges exactly.

    negatives: (n_neg,) the scores of every normal pixel, ascending; positives: (n_pos,) the scores of
    every anomalous pixel, ascending, tied scores ordered by `region_sizes`; region_sizes: (n_pos,)
    int64, the size of the pixel's ground-truth region (regions are connected components of each
    image's mask, `connectivity` 4 or 8); n_regions: regions over all images; n_images: images.
    Scores are float32 where every map was exact in float32, else float64 (as the one-shot functions).

    The state of a set of images depends only on the set (not on the order of the images), and
    `merge` of the states of disjoint sets is the state of their union, bit for bit: the metrics of
    merged shard states equal those of one pass over all images exactly (a region's weight at a score
    is (its pixels at that score) / (its size), one division, summed over regions in canonical order).
    About 4 bytes a normal pixel and 12 an anomalous one (float32 maps).
    """

    negatives: np.ndarray
    positives: np.ndarray
    region_sizes: np.ndarray
    n_regions: int
    n_images: int
    connectivity: int = 8

    @classmethod
    def of(cls, masks: PixelInput, maps: PixelInput, connectivity: int = 8) -> "PixelState":
        """The state of `masks` and `maps` (what `pixel_auroc` and `aupro` take)."""
        _structure(connectivity)
        return _state_from_pairs(_pairs_for_pixels(masks, maps), connectivity)

    @classmethod
    def merge(cls, states: Sequence["PixelState"]) -> "PixelState":
        """The state of the union of disjoint sets of images, from their states (any order)."""
        states = list(states)
        if not states:
            raise ValueError("no states to merge")
        connectivity = {s.connectivity for s in states}
        if len(connectivity) != 1:
            raise ValueError(f"states of different region connectivity cannot be merged: {sorted(connectivity)}")
        if len(states) == 1:
            return states[0]
        dtype = np.result_type(*[s.negatives.dtype for s in states], *[s.positives.dtype for s in states])
        negatives = np.concatenate([s.negatives.astype(dtype, copy=False) for s in states])
        negatives.sort()
        positives, region_sizes = _canonical_positives(
            np.concatenate([s.positives.astype(dtype, copy=False) for s in states]),
            np.concatenate([s.region_sizes for s in states]))
        return cls(negatives=negatives, positives=positives, region_sizes=region_sizes,
                   n_regions=sum(s.n_regions for s in states), n_images=sum(s.n_images for s in states),
                   connectivity=states[0].connectivity)

    def count_split(self) -> tuple[_Split, int, int]:
        """(split with positive counts, n_pos, n_neg): what AUROC, AP and F1-max need."""
        values, starts = _distinct(self.positives)
        counts = np.diff(np.append(starts, self.positives.size)).astype(np.int64)
        return _Split(self.negatives, values, counts), int(self.positives.size), int(self.negatives.size)

    def region_split(self) -> tuple[_Split, int, int]:
        """(split with region weights, n_regions, n_neg): what AUPRO needs."""
        values, starts = _distinct(self.positives)
        if not self.positives.size:
            return _Split(self.negatives, values, np.zeros(0)), self.n_regions, int(self.negatives.size)
        # runs of equal (score, region size): each adds (pixels in the run) / (region size) to its score
        change = np.concatenate(([True], (self.positives[1:] != self.positives[:-1])
                                 | (self.region_sizes[1:] != self.region_sizes[:-1])))
        runs = np.flatnonzero(change)
        terms = np.diff(np.append(runs, self.positives.size)) / self.region_sizes[runs]
        weights = np.add.reduceat(terms, np.searchsorted(runs, starts))
        return _Split(self.negatives, values, weights), self.n_regions, int(self.negatives.size)

    def pixel_auroc(self) -> float:
        """`pixel_auroc` of the images of this state."""
        split, n_pos, n_neg = self.count_split()
        _require_both(n_pos, n_neg, "pixel AUROC")
        return _auroc(split, n_pos, n_neg)

    def aupro(self, fpr_limit: float = 0.3) -> float:
        """`aupro` of the images of this state (with the state's connectivity)."""
        return _aupro_of(self.region_split(), _check_fpr_limit(fpr_limit))

    def average_precision(self) -> float:
        """Pixel-level `average_precision` of the images of this state."""
        return _average_precision(*self.count_split())

    def f1_max(self) -> float:
        """Pixel-level `f1_max` of the images of this state."""
        return _f1_max(*self.count_split())

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The state as plain arrays (for `np.savez`; read back with `from_arrays`)."""
        counts = np.array([self.n_regions, self.n_images, self.connectivity], dtype=np.int64)
        return {"negatives": self.negatives, "positives": self.positives, "region_sizes": self.region_sizes,
                "counts": counts}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "PixelState":
        """The state written by `to_arrays` (a dict, or an `np.load` archive of it)."""
        n_regions, n_images, connectivity = (int(v) for v in arrays["counts"])
        return cls(negatives=np.asarray(arrays["negatives"]), positives=np.asarray(arrays["positives"]),
                   region_sizes=np.asarray(arrays["region_sizes"]), n_regions=n_regions, n_images=n_images,
                   connectivity=connectivity)


# --------------------------------------------------------------------------------- accumulator


class PixelMetricAccumulator:
    """Collects (mask, map) pairs over an evaluation loop and computes the pixel metrics once.

    `update(masks, maps)` takes (H, W) or (n, H, W) arrays and stores a compact copy: masks as
    bool (1 byte a pixel), maps as float16/float32 when given so or when float64 values are exact
    in float32 (else float64). For MVTec AD's test set (1725 images at 224 x 224, 86.6 M pixels)
    with float32 maps that is about 433 MB stored; computing a metric holds one more float32 copy
    of the scores (about 347 MB) plus O(anomalous pixels), so well under 2 GB in all.
    """

    def __init__(self) -> None:
        self._masks: list[np.ndarray] = []
        self._maps: list[np.ndarray] = []

    def update(self, masks: np.ndarray, maps: np.ndarray) -> None:
        """Add `masks` and `maps`, both (H, W) or (n, H, W) of the same shape (copied)."""
        ((mask_array, map_array),) = _pairs_for_pixels(np.asarray(masks), np.asarray(maps))
        _check_scores(map_array)
        stored_mask = np.array(_binarise(mask_array), dtype=bool, copy=True)
        if map_array.dtype in (np.float16, np.float32):
            stored_map = np.array(map_array, copy=True)
        elif _fits_float32(map_array):
            stored_map = map_array.astype(np.float32)
        else:
            stored_map = map_array.astype(np.float64)
        self._masks.append(stored_mask)
        self._maps.append(stored_map)

    @property
    def num_images(self) -> int:
        """Number of images added so far."""
        return sum(mask.shape[0] for mask in self._masks)

    @property
    def num_pixels(self) -> int:
        """Number of pixels added so far."""
        return sum(mask.size for mask in self._masks)

    def reset(self) -> None:
        """Forget everything added."""
        self._masks, self._maps = [], []

    def _pairs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if not self._masks:
            raise ValueError("no masks and maps have been added")
        return list(zip(self._masks, self._maps))

    def state(self, connectivity: int = 8) -> PixelState:
        """Everything added as a `PixelState` (to merge with the states of other shards)."""
        _structure(connectivity)
        return _state_from_pairs(self._pairs(), connectivity)

    def pixel_auroc(self) -> float:
        """`pixel_auroc` over everything added."""
        split, n_pos, n_neg = _split_counts(self._pairs())
        _require_both(n_pos, n_neg, "pixel AUROC")
        return _auroc(split, n_pos, n_neg)

    def aupro(self, fpr_limit: float = 0.3, connectivity: int = 8) -> float:
        """`aupro` over everything added."""
        return aupro(self._masks, self._maps, fpr_limit=fpr_limit, connectivity=connectivity)

    def average_precision(self) -> float:
        """Pixel-level `average_precision` over everything added."""
        return _average_precision(*_split_counts(self._pairs()))

    def f1_max(self) -> float:
        """Pixel-level `f1_max` over everything added."""
        return _f1_max(*_split_counts(self._pairs()))
