"""Generic pseudo-anomalies (siad.data.pseudo): exact masks for every kind, grey stays grey,
determinism, degenerate images, the size distribution, and the mixture."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from siad.answers import region_positions
from siad.data.cutpaste import PseudoAnomaly, cutpaste_poisson
from siad.data.pseudo import (CONTENTS, CUTPASTE, CUTPASTE_WEIGHT, KINDS, SHAPE_WEIGHTS, SHAPES, _required_change,
                              _Window, choose_kind, default_weights, generate, mixture, pseudo_anomaly, split_kind,
                              uses_source)

GENERIC = tuple(k for k in KINDS if k != CUTPASTE)
TOLERANCE, MIN_VISIBILITY = 4.0, 10.0


def texture(seed: int, size: int = 96, gray: bool = False) -> np.ndarray:
    """A smooth random texture with some discs, uint8."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur((rng.random((size, size, 3)) * 255).astype(np.uint8), (0, 0), 1.5)
    for _ in range(4):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        cv2.circle(image, centre, int(rng.integers(1, max(2, size // 4))), tuple(int(v) for v in rng.integers(0, 256, 3)),
                   -1)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if gray else image


def part(seed: int, size: int = 96) -> np.ndarray:
    """A part on a plain, slightly noisy background (most of the image is flat)."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), rng.integers(40, 200, 3), np.uint8)
    cv2.circle(image, (size // 2, size // 2), size // 4, tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
    noise = rng.normal(0.0, 2.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def mask_width(mask: np.ndarray) -> float:
    """Twice the largest distance of a mask pixel to the outside: about the width of the mask."""
    return 2.0 * float(cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3).max())


def check(image: np.ndarray, result: PseudoAnomaly, kind: str) -> None:
    """The invariants every result must meet."""
    assert isinstance(result, PseudoAnomaly)
    assert result.image.shape == image.shape and result.image.dtype == np.uint8
    assert result.mask.shape == image.shape[:2] and result.mask.dtype == bool
    assert result.label == 1 and result.mask.any()
    outside = ~result.mask
    assert np.array_equal(result.image[outside], image[outside]), f"{kind}: pixels outside the mask changed"
    assert np.any(result.image != image)
    assert result.positions == region_positions(result.mask)
    shape, _ = split_kind(kind)
    assert result.kind in (kind, f"{shape}:push")


def change(result: PseudoAnomaly, image: np.ndarray) -> np.ndarray:
    diff = np.abs(result.image.astype(np.int16) - image.astype(np.int16))
    return diff.mean(axis=2) if diff.ndim == 3 else diff.astype(np.float64)


@pytest.mark.parametrize("kind", GENERIC)
def test_every_kind_is_exact_and_visible(kind: str) -> None:
    images = [texture(0), part(1), texture(2), part(3)]
    fallbacks, changed_share = 0, []
    for seed in range(12):
        image, source = images[seed % 4], images[(seed + 1) % 4]
        result = generate(kind, image, source, np.random.default_rng(seed))
        check(image, result, kind)
        diff = change(result, image)
        if result.kind.endswith(":push"):
            fallbacks += 1
            assert np.all(diff[result.mask] >= 16)  # the fallback moves every pixel of its shape
            continue
        assert result.mask.sum() >= 2  # the minimum area (6 px at 224 x 224) scaled to 96 x 96, at least 1
        assert diff[result.mask].mean() >= MIN_VISIBILITY / 2  # the full amount on plain surfaces, see below
        changed_share.append(float((diff[result.mask] > TOLERANCE).mean()))
    assert fallbacks <= 6, f"{kind}: {fallbacks} of 12 draws fell back to the push"
    # the mask is where the image changed: gaps and holes closed, but not much more than that
    assert np.mean(changed_share) >= 0.6


@pytest.mark.parametrize("shape", SHAPES)
def test_full_resolution_and_single_channel_axis(shape: str) -> None:
    image, source = texture(4, 224), part(5, 224)
    for k, content in enumerate(CONTENTS):
        check(image, generate(f"{shape}:{content}", image, source, np.random.default_rng(k)), f"{shape}:{content}")
    gray = texture(6, 64, gray=True)[:, :, None]  # H x W x 1 in, H x W x 1 out
    result = generate(f"{shape}:tone", gray, source, np.random.default_rng(0))
    assert result.image.shape == gray.shape and result.mask.any()
    assert np.array_equal(result.image[~result.mask], gray[~result.mask])


@pytest.mark.parametrize("kind", GENERIC)
def test_grey_stays_grey(kind: str) -> None:
    gray = texture(7, 64, gray=True)
    colour_source = texture(8, 64)
    flat = generate(kind, gray, colour_source, np.random.default_rng(1))
    assert flat.image.ndim == 2
    check(gray, flat, kind)
    rgb_gray = np.repeat(gray[:, :, None], 3, axis=2)  # how load_rgb gives grey scans
    result = generate(kind, rgb_gray, colour_source, np.random.default_rng(1))
    check(rgb_gray, result, kind)
    assert np.array_equal(result.image[:, :, 0], result.image[:, :, 1])
    assert np.array_equal(result.image[:, :, 1], result.image[:, :, 2])
    assert np.array_equal(result.image[:, :, 0], flat.image)  # the same as the H x W grey image


def test_deterministic_and_inputs_untouched() -> None:
    image, source = texture(9), part(10)
    for kind in GENERIC[::4]:
        first = generate(kind, image, source, np.random.default_rng(3))
        second = generate(kind, image, source, np.random.default_rng(3))
        assert np.array_equal(first.image, second.image) and np.array_equal(first.mask, second.mask)
        assert first.kind == second.kind and first.positions == second.positions
        other = generate(kind, image, source, np.random.default_rng(4))
        assert not np.array_equal(first.image, other.image)
    assert np.array_equal(image, texture(9)) and np.array_equal(source, part(10))
    mixed = [pseudo_anomaly(image, source, np.random.default_rng(5)) for _ in range(2)]
    assert mixed[0].kind == mixed[1].kind and np.array_equal(mixed[0].image, mixed[1].image)


@pytest.mark.parametrize("shape_hw", [(1, 1), (3, 5), (16, 16), (40, 9)])
def test_uniform_and_tiny_images(shape_hw: tuple[int, int]) -> None:
    """A uniform image has nothing to blur, move or copy: every kind still gives a visible, exact
    pseudo-anomaly (the push fallback), even on a 1 x 1 image."""
    for value in (0, 128, 255):
        image = np.full((*shape_hw, 3), value, np.uint8)
        for k, kind in enumerate(GENERIC[::3]):
            result = generate(kind, image, image, np.random.default_rng(k))
            check(image, result, kind)
            assert change(result, image)[result.mask].mean() >= MIN_VISIBILITY


def test_visibility_is_relative_to_the_texture() -> None:
    """A plain surface needs the full `min_visibility`; blurring a strongly textured one, half of it."""
    flat = np.full((64, 64, 3), 120, np.uint8)
    strong = texture(16, 64)
    shape = np.zeros((64, 64), bool)
    shape[20:40, 20:40] = True
    windows = [_Window(image, image, 0, 0, 64, 64, shape, 1.0) for image in (flat, strong)]
    assert strong[20:40, 20:40].std() > 12.5
    assert [_required_change(w, "blur", 10.0) for w in windows] == [10.0, 5.0]
    assert [_required_change(w, "displace", 10.0) for w in windows] == [10.0, 10.0]
    # a tone change that cannot reach the (absurd) visibility asked for falls back to the push
    result = generate("blob:tone", flat, flat, np.random.default_rng(0), min_visibility=300.0)
    assert result.kind == "blob:push"


def test_uniform_image_blur_falls_back_to_push() -> None:
    image = np.full((64, 64, 3), 90, np.uint8)
    result = generate("blob:blur", image, image, np.random.default_rng(0))
    assert result.kind == "blob:push" and not result.blended
    values = np.unique(result.image[result.mask])
    assert len(values) == 1 and 90 + 16 <= values[0] <= 90 + 96  # dark on average: brighter
    bright = np.full((64, 64), 250, np.uint8)
    result = generate("spots:displace", bright, bright, np.random.default_rng(1))
    values = np.unique(result.image[result.mask])
    assert result.kind == "spots:push" and len(values) == 1 and 250 - 96 <= values[0] <= 250 - 16
    # on any image, forced by an unreachable visibility: every value in the shape moves by the same step
    image = texture(17, 64)
    result = generate("blob:noise", image, image, np.random.default_rng(2), min_visibility=300.0)
    steps = np.unique(np.abs(result.image[result.mask].astype(int) - image[result.mask]))
    assert result.kind == "blob:push" and len(steps) == 1 and 16 <= steps[0] <= 96


def test_sizes_cover_small_and_thin_anomalies() -> None:
    """At 224 x 224 the default mixture makes many small and thin anomalies, and some large ones."""
    images = [texture(k, 224) for k in range(3)] + [part(k, 224) for k in range(3)]
    rng = np.random.default_rng(0)
    areas, widths = [], []
    for k in range(240):
        result = pseudo_anomaly(images[k % 6], images[(k + 1) % 6], rng)
        areas.append(int(result.mask.sum()))
        widths.append(mask_width(result.mask))
    areas_a, widths_a = np.array(areas), np.array(widths)
    assert (areas_a < 600).mean() >= 0.4
    assert (areas_a < 196).mean() >= 0.15  # smaller than one 14 x 14 patch
    assert (widths_a < 8).mean() >= 0.3
    assert (areas_a > 3000).mean() >= 0.05
    assert areas_a.max() <= 0.2 * 224 * 224


def test_shape_sizes() -> None:
    """Scars are 2-10 px wide, spots are small discs, curves 2-6 px wide (at 224 x 224); a blended
    thin shape may reach _CLONE_DILATION (3 px) beyond its drawn edge on either side."""
    image, source = texture(11, 224), texture(12, 224)
    rng = np.random.default_rng(1)
    scar_widths = [mask_width(generate("scar:flat_far", image, source, rng).mask) for _ in range(40)]
    assert max(scar_widths) <= 11 + 2 * 3 and min(scar_widths) <= 4  # a 10-px line is drawn 11 px wide
    spot_areas = [int(generate("spots:flat_far", image, source, rng).mask.sum()) for _ in range(40)]
    assert max(spot_areas) <= 5 * np.pi * 11 ** 2 and np.median(spot_areas) < 300
    curve_widths = [mask_width(generate("curve:flat_far", image, source, rng).mask) for _ in range(40)]
    # 1-6 px lines; a sharp turn of a thick polyline is locally wider
    assert np.median(curve_widths) <= 7 and max(curve_widths) <= 16 and min(curve_widths) <= 4
    assert min(scar_widths) >= 2 and min(curve_widths) >= 2  # nothing thinner than 2 px (MIN_THIN_WIDTH)


def test_mixture_weights_and_draws() -> None:
    weights = default_weights()
    assert set(weights) == set(KINDS) and abs(sum(weights.values()) - 1.0) < 1e-9
    assert weights[CUTPASTE] == CUTPASTE_WEIGHT
    rng = np.random.default_rng(0)
    draws = [choose_kind(rng) for _ in range(4000)]
    thin = sum(d.split(":")[0] in ("scar", "curve", "spots") for d in draws) / len(draws)
    expected = (1 - CUTPASTE_WEIGHT) * sum(SHAPE_WEIGHTS[s] for s in ("scar", "curve", "spots"))
    assert expected >= 0.45 and abs(thin - expected) < 0.03
    assert abs(draws.count(CUTPASTE) / len(draws) - CUTPASTE_WEIGHT) < 0.015
    # restricted mixtures
    chosen, probabilities = mixture(kinds=["scar:blur", "spots:noise"])
    assert chosen == ("scar:blur", "spots:noise") and abs(probabilities.sum() - 1) < 1e-12
    assert mixture({"scar:blur": 0.0, "blob:tone": 2.0})[0] == ("blob:tone",)
    # a single kind draws nothing from the generator: the mixture {"cutpaste": 1} is cutpaste_poisson
    rng = np.random.default_rng(7)
    assert choose_kind(rng, {"scar:tone": 1.0}) == "scar:tone"
    assert rng.bit_generator.state == np.random.default_rng(7).bit_generator.state
    image, source = texture(13), texture(14)
    single = pseudo_anomaly(image, source, np.random.default_rng(2), weights={CUTPASTE: 1.0})
    reference = cutpaste_poisson(image, source, np.random.default_rng(2))
    assert np.array_equal(single.image, reference.image) and single.kind == CUTPASTE
    assert uses_source(CUTPASTE) and uses_source("blob:foreign") and not uses_source("blob:self")


def test_errors() -> None:
    image = texture(15)
    with pytest.raises(ValueError, match="unknown pseudo-anomaly kind"):
        generate("scar:glitter", image, image, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown pseudo-anomaly kind"):
        mixture({"hexagon:tone": 1.0})
    with pytest.raises(ValueError, match="weight"):
        mixture({"scar:tone": -1.0})
    with pytest.raises(ValueError, match="positive weight"):
        mixture({"scar:tone": 0.0})
    with pytest.raises(ValueError, match="no weight"):
        mixture({"scar:tone": 1.0}, kinds=["blob:tone"])
    with pytest.raises(ValueError, match="Generator"):
        generate("scar:tone", image, image, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        generate("scar:tone", image.astype(np.float32), image, np.random.default_rng(0))
