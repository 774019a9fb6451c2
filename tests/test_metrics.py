"""Tests for siad.metrics: against scikit-learn on random and tied data, AUPRO on hand-built cases
with known answers and against a brute-force reference written from the definition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from siad import metrics
from siad.metrics import (
    PixelMetricAccumulator,
    PixelState,
    aupro,
    average_precision,
    f1_max,
    image_auroc,
    pixel_auroc,
)

TOL = 1e-6


def _random_labels_scores(seed: int, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[:2] = [True, False]  # both classes present
    if ties:
        scores = rng.integers(0, rng.integers(2, 12), n).astype(np.float64) + labels * rng.integers(0, 3)
    else:
        scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
    return labels, scores


def _brute_f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    best = 0.0
    for threshold in np.unique(scores):
        predicted = scores >= threshold
        tp = np.sum(predicted & labels)
        fp = np.sum(predicted & ~labels)
        fn = np.sum(~predicted & labels)
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


def _sklearn_f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(np.max(f1))


def _reference_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float, connectivity: int = 8) -> float:
    """Straight from the definition: one curve point per distinct score, PRO averaged over regions."""
    structure = np.ones((3, 3)) if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    regions = []
    for mask, amap in zip(masks, maps):
        labelled, count = ndimage.label(mask, structure=structure)
        regions += [amap[labelled == k] for k in range(1, count + 1)]
    thresholds = np.unique(maps)[::-1]  # every distinct score, descending
    fpr = np.mean(maps[~masks][:, None] >= thresholds[None, :], axis=0)
    overlaps = [np.mean(region[:, None] >= thresholds[None, :], axis=0) for region in regions]
    pro = np.mean(overlaps, axis=0)
    x, y = np.concatenate(([0.0], fpr, [1.0])), np.concatenate(([0.0], pro, [1.0]))
    area = 0.0
    for i in range(1, len(x)):
        if x[i] >= fpr_limit:
            y_limit = y[i - 1] + (y[i] - y[i - 1]) * (fpr_limit - x[i - 1]) / (x[i] - x[i - 1])
            area += (fpr_limit - x[i - 1]) * (y[i - 1] + y_limit) / 2
            break
        area += (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2
    return area / fpr_limit


def _blob_masks_and_maps(seed: int, n: int = 6, size: int = 16, levels: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Masks with a few rectangular regions per image (some images normal) and noisy maps."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for image in range(1, n):
        for _ in range(rng.integers(1, 4)):
            top, left = rng.integers(0, size - 2, 2)
            height, width = rng.integers(1, size // 2, 2)
            masks[image, top:top + height, left:left + width] = True
    maps = rng.normal(size=masks.shape) + masks * rng.uniform(0.5, 2.0)
    if levels:
        maps = np.round(maps * levels) / levels  # many ties, also across classes
    return masks, maps.astype(np.float32)


# --------------------------------------------------------------------------- image-level metrics


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(8))
def test_image_metrics_match_sklearn(seed: int, ties: bool) -> None:
    labels, scores = _random_labels_scores(seed, n=50 + 37 * seed, ties=ties)
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=TOL)
    assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=TOL)
    assert f1_max(labels, scores) == pytest.approx(_sklearn_f1_max(labels, scores), abs=TOL)
    assert f1_max(labels, scores) == pytest.approx(_brute_f1_max(labels, scores), abs=1e-12)


def test_auroc_is_exact_mann_whitney_on_small_tied_case() -> None:
    # pairs (pos, neg): 3 > 1 wins, 3 > 2 wins, 2 = 2 tie, 2 > 1 wins -> (3 + 0.5) / 4
    assert image_auroc([1, 1, 0, 0], [3.0, 2.0, 2.0, 1.0]) == 0.875
    assert image_auroc([0, 1], [1.0, 1.0]) == 0.5
    assert image_auroc([0, 0, 1, 1], [0.0, 1.0, 2.0, 3.0]) == 1.0
    assert image_auroc([1, 1, 0, 0], [0.0, 1.0, 2.0, 3.0]) == 0.0


def test_scores_are_not_rounded_to_float32() -> None:
    # Positives above the negatives only by less than float32 resolution.
    labels = np.array([0, 0, 1, 1])
    scores = np.array([1.0, 1.0, 1.0 + 2.0**-40, 1.0 + 2.0**-40])
    assert image_auroc(labels, scores) == roc_auc_score(labels, scores) == 1.0
    assert pixel_auroc(labels.reshape(1, 2, 2), scores.reshape(1, 2, 2)) == 1.0


def test_integer_and_bool_scores_and_list_input() -> None:
    labels = [0, 1, 1, 0, 1]
    scores = [1, 3, 2, 2, 0]
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    bool_scores = np.array([False, True, True, False, False])
    assert image_auroc(labels, bool_scores) == pytest.approx(roc_auc_score(labels, bool_scores), abs=1e-12)


def test_ap_and_f1_with_only_positives() -> None:
    assert average_precision([1, 1, 1], [0.1, 0.5, 0.5]) == 1.0
    assert f1_max([1, 1, 1], [0.1, 0.5, 0.5]) == 1.0


def test_f1_max_known_value() -> None:
    # threshold 0.8: TP 1, FP 0, FN 1 -> F1 2/3; threshold 0.4: TP 2, FP 1 -> F1 0.8
    assert f1_max([1, 0, 1, 0], [0.8, 0.6, 0.4, 0.2]) == pytest.approx(0.8, abs=1e-12)


# --------------------------------------------------------------------------- pixel-level AUROC


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_pixel_auroc_matches_sklearn_with_ties(seed: int, dtype: type) -> None:
    rng = np.random.default_rng(seed)
    masks = rng.random((5, 24, 20)) < 0.05
    maps = (rng.random(masks.shape) + 0.3 * masks).astype(dtype)
    maps[:, :4] = np.round(maps[:, :4] * 4) / 4  # heavy ties across classes
    expected = roc_auc_score(masks.ravel(), maps.ravel().astype(np.float64))
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=TOL)
    assert average_precision(masks, maps) == pytest.approx(
        average_precision_score(masks.ravel(), maps.ravel().astype(np.float64)), abs=TOL
    )


def test_mask_formats_are_binarised_the_same() -> None:
    rng = np.random.default_rng(3)
    masks = rng.random((3, 8, 8)) < 0.2
    maps = rng.random(masks.shape)
    expected = pixel_auroc(masks, maps)
    assert pixel_auroc(masks.astype(np.uint8) * 255, maps) == expected
    assert pixel_auroc(masks.astype(np.uint8), maps) == expected
    assert pixel_auroc(masks.astype(np.float32), maps) == expected
    assert pixel_auroc(masks * 0.9 + 0.05, maps) == expected  # floats: > 0.5


def test_pixel_inputs_as_sequences_of_different_sizes() -> None:
    rng = np.random.default_rng(4)
    shapes = [(10, 12), (2, 7, 9), (5, 5)]
    masks = [rng.random(shape) < 0.2 for shape in shapes]
    maps = [rng.integers(0, 6, shape).astype(np.float32) for shape in shapes]
    flat_masks = np.concatenate([m.ravel() for m in masks])
    flat_maps = np.concatenate([m.ravel() for m in maps])
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(flat_masks, flat_maps), abs=TOL)
    assert pixel_auroc(masks[0], maps[0]) == pytest.approx(roc_auc_score(masks[0].ravel(), maps[0].ravel()), abs=TOL)


def test_blockwise_copying_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    masks, maps = _blob_masks_and_maps(5, n=7, levels=3)
    expected = (pixel_auroc(masks, maps), aupro(masks, maps), average_precision(masks, maps))
    monkeypatch.setattr(metrics, "_BLOCK", 100)  # smaller than one image: one image a block
    assert (pixel_auroc(masks, maps), aupro(masks, maps), average_precision(masks, maps)) == expected
    monkeypatch.setattr(metrics, "_BLOCK", 7)
    assert image_auroc(masks.ravel(), maps.ravel()) == expected[0]


# ------------------------------------------------------------------------------------- AUPRO


def test_aupro_perfect_and_inverted_maps() -> None:
    masks = np.zeros((3, 6, 6), dtype=bool)
    masks[0, 1:3, 1:4] = True
    masks[1, 4:, 4:] = True
    masks[1, 0, 0] = True
    maps = masks.astype(np.float32)
    assert aupro(masks, maps) == 1.0
    assert aupro(masks, 1.0 - maps) == 0.0
    assert aupro(masks, 1.0 - maps, fpr_limit=1.0) == 0.0


@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_aupro_constant_map_is_the_diagonal(fpr_limit: float) -> None:
    masks = np.zeros((2, 5, 5), dtype=bool)
    masks[0, :2, :2] = True
    # one threshold: the curve goes straight from (0, 0) to (1, 1); area t^2 / 2, divided by t
    assert aupro(masks, np.full(masks.shape, 0.5), fpr_limit=fpr_limit) == pytest.approx(fpr_limit / 2, abs=1e-12)


def test_aupro_two_regions_by_hand() -> None:
    # One 1 x 8 image. Region A = pixel 0 (size 1), region B = pixels 2-4 (size 3), 4 normal pixels.
    mask = np.array([[1, 0, 1, 1, 1, 0, 0, 0]], dtype=bool)
    amap = np.array([[0.9, 0.8, 0.7, 0.6, 0.2, 0.5, 0.1, 0.0]])
    # threshold: 0.9 -> (FPR 0, PRO 1/2); 0.8 -> (1/4, 1/2); 0.7 -> (1/4, 2/3); 0.6 -> (1/4, 5/6);
    # 0.5 -> (1/2, 5/6); 0.2 -> (1/2, 1); 0.1 -> (3/4, 1); 0.0 -> (1, 1).
    # Area to 1: 1/4 * 1/2 + 1/4 * 5/6 + 1/2 * 1 = 5/6. To 0.3: 1/8 + 0.05 * 5/6 = 1/6, / 0.3 = 5/9.
    # To 0.5: 1/8 + 1/4 * 5/6 = 1/3, / 0.5 = 2/3.
    assert aupro(mask, amap, fpr_limit=1.0) == pytest.approx(5 / 6, abs=1e-12)
    assert aupro(mask, amap, fpr_limit=0.3) == pytest.approx(5 / 9, abs=1e-12)
    assert aupro(mask, amap, fpr_limit=0.5) == pytest.approx(2 / 3, abs=1e-12)
    assert aupro(mask, amap) == pytest.approx(5 / 9, abs=1e-12)  # default 0.3


def test_aupro_tie_between_normal_and_anomalous_is_a_diagonal() -> None:
    # One region of 2 pixels with scores 1 and 0.5; 2 normal pixels with 0.5 and 0.
    # Curve: (0, 0) -> (0, 1/2) -> [tie at 0.5] (1/2, 1) -> (1, 1).
    # Area to 1: 1/2 * (1/2 + 1) / 2 + 1/2 = 7/8. To 0.25: 0.25 * (1/2 + 3/4) / 2 = 5/32, / 0.25 = 5/8.
    mask = np.array([[1, 1, 0, 0]], dtype=bool)
    amap = np.array([[1.0, 0.5, 0.5, 0.0]])
    assert aupro(mask, amap, fpr_limit=1.0) == pytest.approx(7 / 8, abs=1e-12)
    assert aupro(mask, amap, fpr_limit=0.25) == pytest.approx(5 / 8, abs=1e-12)


def test_aupro_connectivity() -> None:
    # Anomalous pixels (0, 0) and (1, 1)-(1, 2): two regions 4-connected, one region 8-connected.
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = mask[1, 1] = mask[1, 2] = True
    amap = np.full((4, 4), 0.5)
    amap[mask] = 0.0
    amap[0, 0] = 1.0
    # At threshold 1 (FPR 0) PRO is 1/3 (one region, one of 3 pixels) or 1/2 (mean of 1 and 0);
    # it stays there until FPR 1, so the area up to FPR 1 is that PRO.
    assert aupro(mask, amap, fpr_limit=1.0) == pytest.approx(1 / 3, abs=1e-12)
    assert aupro(mask, amap, fpr_limit=1.0, connectivity=4) == pytest.approx(1 / 2, abs=1e-12)


def test_aupro_regions_are_counted_per_image_and_fpr_over_all_images() -> None:
    # Two images with one region each (sizes 1 and 4), plus a normal image with high scores.
    masks = np.zeros((3, 3, 3), dtype=bool)
    masks[0, 0, 0] = True
    masks[1, :2, :2] = True
    maps = np.zeros(masks.shape)
    maps[0, 0, 0] = 1.0  # region 1 fully found at threshold 1
    maps[2, 0, 0] = 0.5  # one normal pixel (of 22) above the second region
    maps[1, :2, :2] = 0.25
    # (0, 0) -> (0, 1/2) -> (1/22, 1/2) -> (1/22, 1) -> (1, 1); area to 1: 1/44 + 21/22 = 43/44
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(43 / 44, abs=1e-12)


@pytest.mark.parametrize("levels", [0, 2])
@pytest.mark.parametrize("seed", range(4))
def test_aupro_matches_reference(seed: int, levels: int) -> None:
    masks, maps = _blob_masks_and_maps(seed, levels=levels)
    for limit in (0.3, 0.01, 0.77, 1.0):
        assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(_reference_aupro(masks, maps, limit), abs=1e-9)
    assert aupro(masks, maps, connectivity=4) == pytest.approx(_reference_aupro(masks, maps, 0.3, 4), abs=1e-9)


# ------------------------------------------------------------------------------- accumulator


def test_accumulator_matches_one_shot_functions() -> None:
    masks, maps = _blob_masks_and_maps(11, n=9, levels=4)
    accumulator = PixelMetricAccumulator()
    accumulator.update(masks[:4].astype(np.uint8) * 255, maps[:4])
    for image in range(4, 9):
        accumulator.update(masks[image], maps[image].astype(np.float64))
    assert accumulator.num_images == 9
    assert accumulator.num_pixels == masks.size
    assert accumulator.pixel_auroc() == pixel_auroc(masks, maps)
    assert accumulator.aupro() == aupro(masks, maps)
    assert accumulator.aupro(fpr_limit=0.1, connectivity=4) == aupro(masks, maps, 0.1, 4)
    assert accumulator.average_precision() == pytest.approx(
        average_precision_score(masks.ravel(), maps.ravel()), abs=TOL
    )
    assert accumulator.f1_max() == pytest.approx(_sklearn_f1_max(masks.ravel(), maps.ravel()), abs=TOL)
    accumulator.reset()
    with pytest.raises(ValueError, match="no masks"):
        accumulator.pixel_auroc()


def test_accumulator_copies_its_input_and_keeps_float64_exact() -> None:
    accumulator = PixelMetricAccumulator()
    mask = np.array([[0, 0, 1, 1]], dtype=bool)
    amap = np.array([[1.0, 1.0, 1.0 + 2.0**-40, 1.0 + 2.0**-40]])
    accumulator.update(mask, amap)
    amap[:] = 0.0  # the caller reuses its buffer
    assert accumulator.pixel_auroc() == 1.0


# ------------------------------------------------------------------------------- merged state


def _all_pixel_metrics(state: PixelState) -> tuple[float, ...]:
    return (state.pixel_auroc(), state.aupro(), state.aupro(fpr_limit=0.05), state.average_precision(),
            state.f1_max())


def _same_state(a: PixelState, b: PixelState) -> bool:
    return (a.negatives.dtype == b.negatives.dtype and np.array_equal(a.negatives, b.negatives)
            and np.array_equal(a.positives, b.positives) and np.array_equal(a.region_sizes, b.region_sizes)
            and (a.n_regions, a.n_images, a.connectivity) == (b.n_regions, b.n_images, b.connectivity))


@pytest.mark.parametrize("seed", range(6))
def test_merged_shard_states_give_the_metrics_of_all_images_exactly(seed: int) -> None:
    """Images split into shards of random sizes (one may be empty of anomalies), in a random order:
    the merged state is the state of all images, bit for bit, and so are all the metrics; they equal
    the one-shot functions (which are exact) and the accumulator."""
    masks, maps = _blob_masks_and_maps(seed, n=11, levels=3 if seed % 2 else 0)
    rng = np.random.default_rng(100 + seed)
    order = rng.permutation(len(masks))
    cuts = np.sort(rng.choice(np.arange(1, len(masks)), size=rng.integers(1, 5), replace=False))
    shards = np.split(order, cuts)
    states = [PixelState.of(masks[index], maps[index]) for index in shards]
    merged = PixelState.merge(states[::-1])
    whole = PixelState.of(masks, maps)
    assert _same_state(merged, whole)
    assert _all_pixel_metrics(merged) == _all_pixel_metrics(whole)
    assert merged.pixel_auroc() == pixel_auroc(masks, maps)
    assert merged.aupro() == aupro(masks, maps)
    assert merged.aupro() == pytest.approx(_reference_aupro(masks, maps, 0.3), abs=1e-9)
    assert merged.average_precision() == average_precision(masks.ravel(), maps.ravel())
    assert merged.f1_max() == f1_max(masks.ravel(), maps.ravel())
    accumulator = PixelMetricAccumulator()
    for image in range(len(masks)):
        accumulator.update(masks[image], maps[image])
    assert _same_state(accumulator.state(), whole)
    assert merged.n_images == len(masks) and merged.negatives.size + merged.positives.size == masks.size


def test_merge_keeps_float64_maps_exact_and_refuses_mixed_connectivity() -> None:
    masks, maps = _blob_masks_and_maps(3, n=6)
    exact64 = maps.astype(np.float64)
    exact64[3:] += 2.0**-40  # not representable in float32: the whole state works in float64
    one = PixelState.of(masks[:3], exact64[:3])
    two = PixelState.of(masks[3:], exact64[3:])
    assert one.negatives.dtype == np.float32 and two.negatives.dtype == np.float64
    merged = PixelState.merge([one, two])
    assert _same_state(merged, PixelState.of(masks, exact64))
    assert merged.pixel_auroc() == pixel_auroc(masks, exact64)
    with pytest.raises(ValueError, match="connectivity"):
        PixelState.merge([one, PixelState.of(masks[3:], exact64[3:], connectivity=4)])
    with pytest.raises(ValueError, match="no states"):
        PixelState.merge([])
    assert PixelState.of(masks, maps, connectivity=4).aupro() == aupro(masks, maps, connectivity=4)


def test_state_arrays_round_trip_through_an_npz_archive() -> None:
    import io

    masks, maps = _blob_masks_and_maps(5, n=4, levels=2)
    state = PixelState.of(masks, maps, connectivity=4)
    buffer = io.BytesIO()
    np.savez(buffer, **state.to_arrays())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        again = PixelState.from_arrays(archive)
    assert _same_state(again, state) and _all_pixel_metrics(again) == _all_pixel_metrics(state)


def test_aupro_of_a_perfect_map_is_exactly_one_in_any_image_order() -> None:
    """A region's weight is (its pixels at a score) / (its size): no rounding drift from adding 1/size
    once per pixel, whatever the order of the images."""
    masks = np.zeros((3, 9, 9), dtype=bool)
    masks[0, 1:4, 1:8] = True  # 21 pixels
    masks[1, 5:, 2:5] = True  # 12 pixels
    masks[2, 0, 0] = True
    maps = masks.astype(np.float32)
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        assert PixelState.of(masks[order], maps[order]).aupro() == 1.0


# -------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("function", [image_auroc, average_precision, f1_max])
def test_image_metric_validation(function) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="shape"):
        function([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="empty"):
        function([], [])
    with pytest.raises(ValueError, match="NaN"):
        function([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="infinite"):
        function([0, 1], [0.1, np.inf])
    with pytest.raises(ValueError, match="NaN"):
        function([0.0, np.nan], [0.1, 0.2])
    with pytest.raises(ValueError, match="positive"):
        function([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="real numbers"):
        function([0, 1], ["a", "b"])


def test_auroc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="negative"):
        image_auroc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="positive"):
        pixel_auroc(np.zeros((1, 2, 2)), np.ones((1, 2, 2)))


@pytest.mark.parametrize("function", [pixel_auroc, aupro])
def test_pixel_metric_validation(function) -> None:  # noqa: ANN001
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 1, 1] = True
    with pytest.raises(ValueError, match="shape"):
        function(masks, np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match="H x W"):
        function(masks.ravel(), np.zeros(32))
    with pytest.raises(ValueError, match="empty"):
        function(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match="empty"):
        function([], [])
    with pytest.raises(ValueError, match="masks but"):
        function([masks[0]], [masks[0], masks[1]])
    bad = np.zeros((2, 4, 4))
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        function(masks, bad)
    with pytest.raises(ValueError, match="normal"):
        function(np.ones((1, 2, 2)), np.ones((1, 2, 2)))


def test_aupro_argument_validation() -> None:
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 1, 1] = True
    maps = masks.astype(float)
    for limit in (0.0, -0.1, 1.5, float("nan"), True, "0.3"):
        with pytest.raises(ValueError, match="fpr_limit"):
            aupro(masks, maps, fpr_limit=limit)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="connectivity"):
        aupro(masks, maps, connectivity=6)
    with pytest.raises(ValueError, match="region"):
        aupro(np.zeros((1, 4, 4)), maps)


# ------------------------------------------------------------------------------ memory, imports


def test_memory_is_one_float32_copy_plus_small_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    import tracemalloc

    block = 1 << 18
    monkeypatch.setattr(metrics, "_BLOCK", block)
    rng = np.random.default_rng(0)
    masks = np.zeros((48, 224, 224), dtype=bool)
    masks[::2, 50:90, 60:120] = True
    maps = rng.random(masks.shape, dtype=np.float32) + masks
    bound = 4 * masks.size + 8 * block + 128 * int(masks.sum())  # no per-pixel index arrays
    for function in (pixel_auroc, aupro):
        tracemalloc.start()
        try:
            function(masks, maps)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < bound, (function.__name__, peak, bound)


def test_metrics_module_does_not_import_sklearn() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, siad.metrics; assert 'sklearn' not in sys.modules, 'sklearn imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
