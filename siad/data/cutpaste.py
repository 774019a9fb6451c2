"""Pseudo-anomalies: CutPaste with Poisson blending (the paper's augmentation phi, DESIGN section 4).

`cutpaste_poisson(image, source, rng)` cuts a patch from `source` (area 2-15 % of the image, aspect
ratio log-uniform in [0.3, 3.3], optional colour jitter) and blends it into `image` at a random
place with `cv2.seamlessClone(..., cv2.NORMAL_CLONE)`, on a crop around the patch (the patch sits
strictly inside the crop, with a 2-pixel border).

The mask is where the image really changed: the mean absolute change over the channels above a
tolerance, then cleaned (gaps closed, holes filled, specks removed); every pixel outside the final
mask is then set back to the input, so that

    pixels outside `mask` are bit-identical to `image`, and at least one pixel inside differs.

A mask smaller than `min_area_ratio` of the image is drawn again. When blending cannot change the
image (uniform images, images too small for the solver, or `max_attempts` draws in vain), a plain
paste of an intensity-shifted patch is used instead: its mask is the pasted rectangle and
`blended` is False. So the result always has label 1 and a non-empty mask, even for a 1 x 1 image.

A grey image stays grey: an H x W x 3 image whose channels are identical (how `load_rgb` gives
grey scans) is processed as a grey one, so the pseudo-anomaly has no colour cast.

The result is a `PseudoAnomaly` (a frozen dataclass: image, mask, label, positions, blended); it
also unpacks as `image, mask, label, positions = cutpaste_poisson(...)`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from siad.answers import region_positions

# The patch sits strictly inside the blended crop with this border (seamlessClone needs one).
_BORDER = 2
# Below this side, seamlessClone cannot change anything (it erodes its mask by 3 pixels) or fails.
_MIN_BLEND_SIDE = 16
# Fallback: the intensity shift of the pasted patch, and the per-pixel push when that is not enough.
_SHIFT = 64
_PUSH = 96


@dataclass(frozen=True, eq=False)
class PseudoAnomaly:
    """A pseudo-anomalous image.

    image: the result, same shape and dtype (uint8) as the input. mask: H x W bool, where the image
    changed. label: 1 if the mask is non-empty, else 0. positions: one position word per region of
    the mask (`siad.answers.region_positions(mask)`). blended: True for a Poisson blend, False for
    the plain-paste fallback. kind: what made it ("cutpaste" here; `siad.data.pseudo` names its
    kinds "shape:content"). Unpacks as (image, mask, label, positions).
    """

    image: np.ndarray
    mask: np.ndarray
    label: int
    positions: list[str]
    blended: bool
    kind: str = "cutpaste"

    def __iter__(self) -> Iterator[object]:
        return iter((self.image, self.mask, self.label, self.positions))


def _check_image(array: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"{name} must be H x W or H x W x 3, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    return np.ascontiguousarray(array)


def _channels_equal(image: np.ndarray) -> bool:
    """Whether an H x W x 3 image is grey (its three channels are identical)."""
    return bool(np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 1], image[:, :, 2]))


def _as_three_channels(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(array[:, :, None], 3, axis=2)) if array.ndim == 2 else array


def _match_source(source: np.ndarray, height: int, width: int, gray: bool) -> np.ndarray:
    """`source` as three channels (grey ones if the image is grey) at the image's size."""
    if gray and source.ndim == 3:
        source = cv2.cvtColor(np.ascontiguousarray(source), cv2.COLOR_RGB2GRAY)
    if source.shape[:2] != (height, width):
        source = cv2.resize(np.ascontiguousarray(source), (width, height), interpolation=cv2.INTER_LINEAR)
    return _as_three_channels(source)


def _draw_rectangle(rng: np.random.Generator, height: int, width: int, max_h: int, max_w: int,
                    area_ratio: tuple[float, float], aspect_ratio: tuple[float, float]) -> tuple[int, int]:
    """Patch height and width: area a fraction of the image, aspect (h / w) log-uniform."""
    area = rng.uniform(*area_ratio) * height * width
    aspect = math.exp(rng.uniform(math.log(aspect_ratio[0]), math.log(aspect_ratio[1])))
    patch_h = int(round(math.sqrt(area * aspect)))
    patch_w = int(round(math.sqrt(area / aspect)))
    return min(max(patch_h, 1), max_h), min(max(patch_w, 1), max_w)


def _is_5_smooth(number: int) -> bool:
    if number <= 0:
        return False
    for prime in (2, 3, 5):
        while number % prime == 0:
            number //= prime
    return number == 1


def _fast_side(side: int, limit: int) -> int:
    """A patch side within 3 pixels of `side` that OpenCV's Poisson solver handles quickly.

    seamlessClone solves on the patch less 2 pixels a side with discrete sine transforms of length
    2 * side - 6; lengths that factor into 2, 3 and 5 are up to twice as fast. Moving a side by at
    most 3 pixels leaves the area and aspect distributions practically unchanged.
    """
    for step in (0, -1, 1, -2, 2, -3, 3):
        candidate = side + step
        if 1 <= candidate <= limit and _is_5_smooth(2 * candidate - 6):
            return candidate
    return side


def _jitter(patch: np.ndarray, rng: np.random.Generator, gray: bool) -> np.ndarray:
    """Colour jitter: contrast about the patch mean, brightness, and (colour images) channel gains."""
    contrast = rng.uniform(0.8, 1.25)
    brightness = rng.uniform(-20.0, 20.0)
    gains = np.ones(3, np.float32) if gray else rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    values = patch.astype(np.float32)
    mean = values.mean()
    values = ((values - mean) * contrast + mean + brightness) * gains
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Set the pixels of `mask` (uint8 0/1) that no path of unset pixels joins to the border."""
    padded = np.pad(mask, 1).astype(np.uint8)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)  # pixels reachable from outside become 1
    holes = flood[1:-1, 1:-1] == 0
    return mask | holes.astype(np.uint8)


def _clean(changed: np.ndarray, speck_area: int) -> np.ndarray:
    """Close one-pixel gaps, fill holes, drop regions smaller than `speck_area` (bool in, bool out)."""
    mask = changed.astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    mask = _fill_holes(mask)
    if speck_area > 1:
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        keep = np.zeros(count, dtype=bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= speck_area
        return keep[labels]
    return mask.astype(bool)


def _changed(after: np.ndarray, before: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels whose mean absolute change over the channels is above `tolerance`."""
    diff = cv2.absdiff(after, before)
    if diff.ndim == 3:
        return diff.astype(np.float32).mean(axis=2) > tolerance
    return diff > tolerance


def _blend_once(image: np.ndarray, work: np.ndarray, source3: np.ndarray, rng: np.random.Generator, *,
                gray: bool, area_ratio: tuple[float, float], aspect_ratio: tuple[float, float],
                jitter_probability: float, tolerance: float, min_area: int,
                speck_area: int) -> tuple[np.ndarray, np.ndarray] | None:
    """One Poisson-blend draw: (result, mask), or None if it changed too little or failed."""
    height, width = image.shape[:2]
    max_h, max_w = height - 2 * _BORDER, width - 2 * _BORDER
    patch_h, patch_w = _draw_rectangle(rng, height, width, max_h, max_w, area_ratio, aspect_ratio)
    patch_h, patch_w = _fast_side(patch_h, max_h), _fast_side(patch_w, max_w)
    sy = int(rng.integers(0, height - patch_h + 1))
    sx = int(rng.integers(0, width - patch_w + 1))
    dy = int(rng.integers(_BORDER, height - patch_h - _BORDER + 1))
    dx = int(rng.integers(_BORDER, width - patch_w - _BORDER + 1))
    patch = source3[sy:sy + patch_h, sx:sx + patch_w]
    if rng.random() < jitter_probability:
        patch = _jitter(patch, rng, gray)
    top, left = dy - _BORDER, dx - _BORDER
    bottom, right = dy + patch_h + _BORDER, dx + patch_w + _BORDER
    crop = np.ascontiguousarray(work[top:bottom, left:right])
    # seamlessClone places the patch's top-left corner at centre - (w // 2, h // 2): here (BORDER, BORDER).
    centre = (_BORDER + patch_w // 2, _BORDER + patch_h // 2)
    try:
        blended = cv2.seamlessClone(np.ascontiguousarray(patch), crop,
                                    np.full((patch_h, patch_w), 255, np.uint8), centre, cv2.NORMAL_CLONE)
    except cv2.error:
        return None
    if blended is None or blended.shape != crop.shape:
        return None
    if gray:
        blended = np.rint(blended.astype(np.float32).mean(axis=2)).astype(np.uint8)
    before = image[top:bottom, left:right]
    crop_mask = _clean(_changed(blended, before, tolerance), speck_area)
    if int(crop_mask.sum()) < min_area:
        return None
    region = np.where(crop_mask[:, :, None] if image.ndim == 3 else crop_mask, blended, before)
    if not np.any(region != before):
        return None
    result = image.copy()
    result[top:bottom, left:right] = region
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = crop_mask
    return result, mask


def _plain_paste(image: np.ndarray, source3: np.ndarray, rng: np.random.Generator, *, gray: bool,
                 area_ratio: tuple[float, float], aspect_ratio: tuple[float, float],
                 tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """The fallback: paste an intensity-shifted patch; every pasted pixel changes by > tolerance."""
    height, width = image.shape[:2]
    patch_h, patch_w = _draw_rectangle(rng, height, width, height, width, area_ratio, aspect_ratio)
    sy = int(rng.integers(0, height - patch_h + 1))
    sx = int(rng.integers(0, width - patch_w + 1))
    dy = int(rng.integers(0, height - patch_h + 1))
    dx = int(rng.integers(0, width - patch_w + 1))
    patch = source3[sy:sy + patch_h, sx:sx + patch_w].astype(np.int16)
    if gray:
        patch = patch[:, :, 0]
    before = image[dy:dy + patch_h, dx:dx + patch_w].astype(np.int16)
    shift = _SHIFT if before.mean() < 128 else -_SHIFT
    pasted = np.clip(patch + shift, 0, 255)
    diff = np.abs(pasted - before)
    too_close = (diff.mean(axis=2) if diff.ndim == 3 else diff) <= tolerance
    pushed = np.where(before < 128, before + _PUSH, before - _PUSH)
    if pasted.ndim == 3:
        too_close = too_close[:, :, None]
    pasted = np.where(too_close, pushed, pasted).astype(np.uint8)
    result = image.copy()
    result[dy:dy + patch_h, dx:dx + patch_w] = pasted
    mask = np.zeros((height, width), dtype=bool)
    mask[dy:dy + patch_h, dx:dx + patch_w] = True
    return result, mask


def cutpaste_poisson(image: np.ndarray, source: np.ndarray, rng: np.random.Generator, *,
                     area_ratio: tuple[float, float] = (0.02, 0.15),
                     aspect_ratio: tuple[float, float] = (0.3, 3.3),
                     jitter_probability: float = 0.5, tolerance: float = 4.0,
                     min_area_ratio: float = 0.005, speck_ratio: float = 0.002,
                     max_attempts: int = 6) -> PseudoAnomaly:
    """A pseudo-anomalous copy of `image` with a patch of `source` Poisson-blended into it.

    image, source: uint8, H x W (grey) or H x W x 3; `source` is converted to the image's channels
    and resized to its size if it differs. rng: a `numpy.random.Generator`, the only randomness
    (same generator state, same result). tolerance: the mean absolute change (0-255 scale) above
    which a pixel counts as changed. min_area_ratio: a blend changing fewer pixels (as a fraction of
    the image) is drawn again. speck_ratio: changed regions smaller than this are dropped.
    max_attempts: blend draws before the plain-paste fallback. The result has `image`'s shape.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    original_shape = image.shape if isinstance(image, np.ndarray) else None
    image = _check_image(image, "image")
    source = _check_image(source, "source")
    if image.ndim == 3 and _channels_equal(image):
        # a grey picture stored as RGB (as `load_rgb` gives grey scans): keep the result grey,
        # without a colour cast from a colour source or the per-channel jitter
        result = cutpaste_poisson(image[:, :, 0], source, rng, area_ratio=area_ratio, aspect_ratio=aspect_ratio,
                                  jitter_probability=jitter_probability, tolerance=tolerance,
                                  min_area_ratio=min_area_ratio, speck_ratio=speck_ratio,
                                  max_attempts=max_attempts)
        return PseudoAnomaly(image=np.repeat(result.image[:, :, None], 3, axis=2), mask=result.mask,
                             label=result.label, positions=result.positions, blended=result.blended)
    if not (0.0 < area_ratio[0] <= area_ratio[1] <= 1.0):
        raise ValueError(f"area_ratio must satisfy 0 < low <= high <= 1, got {area_ratio}")
    if not (0.0 < aspect_ratio[0] <= aspect_ratio[1]):
        raise ValueError(f"aspect_ratio must satisfy 0 < low <= high, got {aspect_ratio}")
    height, width = image.shape[:2]
    gray = image.ndim == 2
    source3 = _match_source(source, height, width, gray)
    work = _as_three_channels(image)
    pixels = height * width
    min_area = max(1, math.ceil(min_area_ratio * pixels))
    speck_area = max(1, round(speck_ratio * pixels))
    outcome: tuple[np.ndarray, np.ndarray] | None = None
    if min(height, width) >= _MIN_BLEND_SIDE:
        for _ in range(max_attempts):
            outcome = _blend_once(image, work, source3, rng, gray=gray, area_ratio=area_ratio,
                                  aspect_ratio=aspect_ratio, jitter_probability=jitter_probability,
                                  tolerance=tolerance, min_area=min_area, speck_area=speck_area)
            if outcome is not None:
                break
    blended = outcome is not None
    if outcome is None:
        outcome = _plain_paste(image, source3, rng, gray=gray, area_ratio=area_ratio,
                               aspect_ratio=aspect_ratio, tolerance=tolerance)
    result, mask = outcome
    if original_shape is not None and result.shape != original_shape:
        result = result.reshape(original_shape)  # H x W x 1 in, H x W x 1 out
    return PseudoAnomaly(image=result, mask=mask, label=int(mask.any()), positions=region_positions(mask),
                         blended=blended)
