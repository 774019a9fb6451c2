"""CutPaste + Poisson pseudo-anomalies: the invariants over many seeds, determinism, edge cases."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from siad.answers import answer_from_mask, region_positions
from siad.data import cutpaste_poisson
from siad.data.cutpaste import PseudoAnomaly
from siad.prompts import answer_text


def texture(seed: int, size: int = 96, gray: bool = False) -> np.ndarray:
    """A smooth random texture with some structure (blobs and lines), uint8."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur((rng.random((size, size, 3)) * 255).astype(np.uint8), (7, 7), 2)
    for _ in range(4):
        centre = tuple(int(v) for v in rng.integers(0, size, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.circle(image, centre, int(rng.integers(1, max(2, size // 4))), colour, -1)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if gray else image


def check_invariants(image: np.ndarray, result: PseudoAnomaly) -> None:
    assert result.image.shape == image.shape and result.image.dtype == np.uint8
    assert result.mask.shape == image.shape[:2] and result.mask.dtype == bool
    assert result.label == int(result.mask.any())
    outside = ~result.mask
    assert np.array_equal(result.image[outside], image[outside]), "pixels outside the mask changed"
    if result.label:
        assert np.any(result.image != image), "labelled anomalous but identical to the input"
    else:
        assert np.array_equal(result.image, image)
    assert result.positions == region_positions(result.mask)
    assert answer_text(result.positions) == answer_from_mask(result.mask)


@pytest.mark.parametrize("gray", [False, True])
def test_invariants_over_many_seeds(gray: bool) -> None:
    images = [texture(k, gray=gray) for k in range(4)]
    blended = 0
    for seed in range(200):
        image, source = images[seed % 4], images[(seed + 1) % 4]
        result = cutpaste_poisson(image, source, np.random.default_rng(seed))
        check_invariants(image, result)
        assert result.label == 1
        blended += result.blended
        if result.blended:  # at least the minimum area, at most the patch and its border
            area = int(result.mask.sum())
            # the blend crop is the patch (<= 15 % of the image, plus rounding) and a 2-pixel border
            assert 0.005 * 96 * 96 <= area <= 0.15 * 96 * 96 * 1.1 + 4 * (96 + 96) + 16
    assert blended >= 190  # textured images: the Poisson blend almost always succeeds


def test_full_resolution_rgb() -> None:
    image, source = texture(1, 224), texture(2, 224)
    for seed in range(20):
        check_invariants(image, cutpaste_poisson(image, source, np.random.default_rng(seed)))


def test_deterministic() -> None:
    image, source = texture(3), texture(4)
    first = cutpaste_poisson(image, source, np.random.default_rng(7))
    second = cutpaste_poisson(image, source, np.random.default_rng(7))
    assert np.array_equal(first.image, second.image) and np.array_equal(first.mask, second.mask)
    assert first.positions == second.positions and first.blended == second.blended
    other = cutpaste_poisson(image, source, np.random.default_rng(8))
    assert not np.array_equal(first.mask, other.mask)
    assert np.array_equal(image, texture(3)) and np.array_equal(source, texture(4))  # inputs untouched


def test_unpacking() -> None:
    image = texture(5)
    result = cutpaste_poisson(image, texture(6), np.random.default_rng(0))
    out, mask, label, positions = result
    assert out is result.image and mask is result.mask and label == result.label and positions == result.positions


@pytest.mark.parametrize("shape", [(1, 1), (1, 1, 3), (2, 5), (3, 3), (3, 3, 3), (8, 8), (8, 8, 3),
                                   (16, 16, 3), (17, 40), (224, 224), (224, 224, 3), (5, 300, 3)])
@pytest.mark.parametrize("value", [0, 127, 255])
def test_tiny_and_uniform_images_do_not_raise(shape: tuple[int, ...], value: int) -> None:
    image = np.full(shape, value, np.uint8)
    for seed in range(5):
        result = cutpaste_poisson(image, image.copy(), np.random.default_rng(seed))
        check_invariants(image, result)
        assert result.label == 1 and not result.blended  # nothing to blend: the visible fallback


def test_uniform_source_on_texture_and_tiny_texture() -> None:
    image = texture(9)
    result = cutpaste_poisson(image, np.full_like(image, 200), np.random.default_rng(0))
    check_invariants(image, result)
    tiny = texture(10, size=8)
    for seed in range(20):
        check_invariants(tiny, cutpaste_poisson(tiny, texture(11, size=8), np.random.default_rng(seed)))


def test_mixed_channels_and_sizes() -> None:
    gray, rgb = texture(12, 64, gray=True), texture(13, 80)
    check_invariants(gray, cutpaste_poisson(gray, rgb, np.random.default_rng(0)))
    check_invariants(rgb, cutpaste_poisson(rgb, gray, np.random.default_rng(0)))
    single = gray[:, :, None]
    result = cutpaste_poisson(single, gray, np.random.default_rng(1))
    assert result.image.shape == single.shape
    assert np.array_equal(result.image[:, :, 0][~result.mask], gray[~result.mask])


def test_bad_input() -> None:
    image = texture(14)
    with pytest.raises(ValueError, match="Generator"):
        cutpaste_poisson(image, image, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        cutpaste_poisson(image.astype(np.float32), image, np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        cutpaste_poisson(np.zeros((4, 4, 2), np.uint8), image, np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty"):
        cutpaste_poisson(np.zeros((0, 4), np.uint8), image, np.random.default_rng(0))


def test_grey_stored_as_rgb_stays_grey() -> None:
    grey = np.repeat(texture(15, gray=True)[:, :, None], 3, axis=2)
    colour = texture(16)
    for seed in range(30):
        result = cutpaste_poisson(grey, colour, np.random.default_rng(seed), jitter_probability=1.0)
        check_invariants(grey, result)
        assert np.array_equal(result.image[:, :, 0], result.image[:, :, 1])
        assert np.array_equal(result.image[:, :, 1], result.image[:, :, 2])
