"""Generic pseudo-anomalies: a local break of the image's own regularity, with an exact mask.

A kind is a shape x a content, named "shape:content" (plus "cutpaste", `cutpaste_poisson` as it is):

shapes (sizes at 224 x 224, scaled by sqrt(H * W) / 224; sizes log-uniform so that small and
thin anomalies are frequent):
- "rectangle": a rectangle, area 0.2-15 % of the image, aspect log-uniform in [0.3, 3.3], axis-aligned
  or rotated;
- "scar": a thin rotated strip, 1-10 px wide, 10-120 px long;
- "blob": an irregular region from thresholded smooth noise, 16 px to 15 % of the image;
- "spots": one to five small discs or ellipses (radius 1-8 px) in a cluster;
- "curve": a thin open polyline or smooth curve, 1-6 px thick, 15-160 px long.

contents (what the shape is filled with):
- "self": a patch of the same image from elsewhere (possibly flipped), usually Poisson blended;
- "foreign": a patch of `source` (another image, possibly of another class: a foreign texture),
  possibly rescaled, Poisson blended or pasted;
- "tone": brightness, contrast and (colour images) colour shift of the image itself;
- "blur", "sharpen", "noise": a local blur, unsharp masking, or added (possibly grainy) noise;
- "displace": a smooth local geometric displacement of the image's own pixels;
- "flat_near": a flat colour close to the local mean (subtle), "flat_far": a flat colour far from it.

Every kind is `(image, source, rng) -> PseudoAnomaly` through `generate(kind, image, source, rng)`;
`pseudo_anomaly(image, source, rng, weights)` draws the kind from a mixture (`choose_kind`) and
generates it. Default weights (`default_weights()`): 5 % "cutpaste", the rest the product of
`SHAPE_WEIGHTS` and `CONTENT_WEIGHTS`.

The mask is where the image really changed: the mean absolute change over the channels above
`tolerance`, cleaned as in `cutpaste_poisson` (gaps closed, here up to 4 px at 224 x 224, holes filled,
specks dropped) but kept within the drawn shape's support (so a closed curve does not claim its
inside). Since the closed gaps count in the visibility below, a draw that changes only scattered
pixels (moving a fine random texture about) is redrawn rather than given a lace-like mask. Every pixel outside
the mask is set back to the input. A draw is redrawn (same kind, up to `max_attempts`) when its mask
is below `min_area_ratio` of the image or the mean absolute change inside the mask is below
`min_visibility` (a blur of a strongly textured surface needs down to half of it). When every draw
fails (for instance on a uniform image, which has nothing to blur, move or copy), the last shape is
made brighter or darker by 16 to 96 grey levels (log-uniform; kind "shape:push"). So every result
has label 1, a non-empty mask, and

    pixels outside `mask` are bit-identical to `image`, and at least one pixel inside differs.

A grey image (H x W, or H x W x 3 with identical channels) stays grey. The generator `rng` is the only
randomness: the same generator state gives the same result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np

from siad.answers import region_positions
from siad.data.cutpaste import (PseudoAnomaly, _channels_equal, _check_image, _fill_holes, _match_source,
                                cutpaste_poisson)

SHAPES: tuple[str, ...] = ("rectangle", "scar", "blob", "spots", "curve")
CONTENTS: tuple[str, ...] = ("self", "foreign", "tone", "blur", "sharpen", "noise", "displace",
                             "flat_near", "flat_far")
CUTPASTE = "cutpaste"
KINDS: tuple[str, ...] = (CUTPASTE,) + tuple(f"{s}:{c}" for s in SHAPES for c in CONTENTS)

# Default mixture: thin shapes (scar, spots, curve) make up half of the shapes; blobs and rectangles
# span small to large. At 224 x 224 on SIAD-Synth family images (1500 draws) this gives masks of
# median area ~400 px (10 % / 90 %: ~105 / ~3500 px), 25 % under 196 px (one 14 x 14 patch), 62 %
# under 600 px, median width ~12 px, 31 % under 8 px wide.
SHAPE_WEIGHTS: Mapping[str, float] = MappingProxyType({
    "rectangle": 0.20, "scar": 0.20, "blob": 0.30, "spots": 0.12, "curve": 0.18,
})
CONTENT_WEIGHTS: Mapping[str, float] = MappingProxyType({
    "self": 0.15, "foreign": 0.15, "tone": 0.15, "blur": 0.08, "sharpen": 0.05, "noise": 0.08,
    "displace": 0.09, "flat_near": 0.12, "flat_far": 0.13,
})
CUTPASTE_WEIGHT = 0.05

# The reference side: shape sizes are given at 224 x 224 and scaled with sqrt(H * W) / 224.
_REFERENCE_SIDE = 224.0
# The smallest shapes (at 224 x 224): lines at least 2 px wide, spots of radius 3 px, blobs of 64 px.
# Smaller ones (1 px lines, 1 px spots, 16 px blobs, as the first version drew) cannot be localised
# by a model with 14-px patches: fitting one batch of the mini, its 23- and 30-px pseudo-anomalies
# were never found while a 1517-px one was; real defects are larger (SIAD-Synth's median ~500 px).
MIN_THIN_WIDTH = 2.0
MIN_SPOT_RADIUS = 3.0
MIN_BLOB_AREA = 64.0
# Pixels of context around a shape's bounding box (blur, sharpen, displacement read from there).
_MARGIN = 12
# Poisson blending erodes its mask: thin shapes are blended through their dilation by this much.
_CLONE_DILATION = 3
# Fallback: the shape becomes brighter or darker by this much (grey levels, log-uniform).
_PUSH = (16.0, 96.0)


@dataclass(frozen=True)
class _Window:
    """A shape's neighbourhood: rows top:bottom, columns left:right of the H x W x C image."""

    image: np.ndarray  # H x W x C uint8, C = 1 (grey) or 3
    source: np.ndarray  # the source, at the image's size and channels
    top: int
    left: int
    bottom: int
    right: int
    shape: np.ndarray  # h x w bool: the drawn shape in the window
    scale: float

    @property
    def before(self) -> np.ndarray:
        return self.image[self.top:self.bottom, self.left:self.right]

    @property
    def size(self) -> tuple[int, int]:
        return self.bottom - self.top, self.right - self.left


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _point(rng: np.random.Generator, height: int, width: int) -> tuple[float, float]:
    """A uniform point (x, y) of the image."""
    return float(rng.uniform(0, width)), float(rng.uniform(0, height))


# ---------------------------------------------------------------------------------------------
# Shapes: (rng, height, width, scale) -> H x W uint8 canvas, 1 inside the shape


def _rectangle(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    pixels = height * width
    area = _log_uniform(rng, 0.002 * pixels, 0.15 * pixels)
    aspect = _log_uniform(rng, 0.3, 3.3)
    side_h, side_w = math.sqrt(area * aspect), math.sqrt(area / aspect)
    angle = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.0, 180.0))
    centre = _point(rng, height, width)
    corners = cv2.boxPoints((centre, (max(side_w, 1.0), max(side_h, 1.0)), angle))
    canvas = np.zeros((height, width), np.uint8)
    cv2.fillPoly(canvas, [np.rint(corners).astype(np.int32)], 1)
    return canvas


def _scar(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    thickness = max(1, round(_log_uniform(rng, MIN_THIN_WIDTH, 10.5) * scale))
    length = _log_uniform(rng, 20.0, 120.0) * scale
    angle = rng.uniform(0.0, math.pi)
    cx, cy = _point(rng, height, width)
    dx, dy = 0.5 * length * math.cos(angle), 0.5 * length * math.sin(angle)
    canvas = np.zeros((height, width), np.uint8)
    cv2.line(canvas, (round(cx - dx), round(cy - dy)), (round(cx + dx), round(cy + dy)), 1, thickness)
    return canvas


def _blob(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """Smooth noise on a small grid, upsampled over a box, times a radial falloff, thresholded at the
    quantile that leaves the target area; the largest region is kept."""
    area = _log_uniform(rng, MIN_BLOB_AREA * scale * scale, 0.15 * height * width)
    fill = rng.uniform(0.3, 0.5)  # fraction of the box the blob covers
    aspect = _log_uniform(rng, 0.5, 2.0)
    box_h = min(height, max(2, round(math.sqrt(area / fill * aspect))))
    box_w = min(width, max(2, round(math.sqrt(area / fill / aspect))))
    cells = int(rng.integers(3, 7))
    noise = cv2.resize(rng.random((cells, cells)).astype(np.float32), (box_w, box_h), interpolation=cv2.INTER_CUBIC)
    ys = np.linspace(-1.0, 1.0, box_h, dtype=np.float32)[:, None]
    xs = np.linspace(-1.0, 1.0, box_w, dtype=np.float32)[None, :]
    field = noise + 1.2 * (1.0 - np.minimum(ys * ys + xs * xs, 1.0))
    keep = min(1.0, area / (box_h * box_w))
    blob = (field >= np.quantile(field, 1.0 - keep)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(blob, connectivity=8)
    if count > 2:
        blob = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    top = int(rng.integers(0, height - box_h + 1))
    left = int(rng.integers(0, width - box_w + 1))
    canvas = np.zeros((height, width), np.uint8)
    canvas[top:top + box_h, left:left + box_w] = blob
    return canvas


_SPOT_COUNTS = (1, 2, 3, 4, 5)
_SPOT_COUNT_WEIGHTS = (0.4, 0.2, 0.15, 0.15, 0.1)


def _spots(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    count = int(rng.choice(_SPOT_COUNTS, p=_SPOT_COUNT_WEIGHTS))
    spread = _log_uniform(rng, 8.0, 40.0) * scale
    cx, cy = _point(rng, height, width)
    canvas = np.zeros((height, width), np.uint8)
    for k in range(count):
        radius = _log_uniform(rng, MIN_SPOT_RADIUS, 10.0) * scale
        axes = (max(1, round(radius * rng.uniform(0.7, 1.3))), max(1, round(radius * rng.uniform(0.7, 1.3))))
        ox, oy = (0.0, 0.0) if k == 0 else (rng.uniform(-spread, spread), rng.uniform(-spread, spread))
        centre = (round(cx + ox), round(cy + oy))
        cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return canvas


def _curve(rng: np.random.Generator, height: int, width: int, scale: float) -> np.ndarray:
    """An open path from a random walk of the heading: a few long segments with sharp turns
    (a polyline) or many short ones with small turns (a smooth curve)."""
    thickness = max(1, round(_log_uniform(rng, MIN_THIN_WIDTH, 6.5) * scale))
    length = _log_uniform(rng, 20.0, 160.0) * scale
    if rng.random() < 0.5:
        steps, turn = int(rng.integers(2, 6)), 1.2
    else:
        steps, turn = max(4, round(length / (4.0 * max(scale, 0.25)))), 0.25
    step = length / steps
    heading = rng.uniform(0.0, 2.0 * math.pi)
    x, y = _point(rng, height, width)
    points = [(x, y)]
    for _ in range(steps):
        heading += rng.normal(0.0, turn)
        x, y = x + step * math.cos(heading), y + step * math.sin(heading)
        points.append((x, y))
    canvas = np.zeros((height, width), np.uint8)
    cv2.polylines(canvas, [np.rint(np.array(points)).astype(np.int32)], False, 1, thickness)
    return canvas


_SHAPE_DRAWERS: Mapping[str, Callable[[np.random.Generator, int, int, float], np.ndarray]] = MappingProxyType({
    "rectangle": _rectangle, "scar": _scar, "blob": _blob, "spots": _spots, "curve": _curve,
})


# ---------------------------------------------------------------------------------------------
# Contents: (window, rng) -> h x w x C float32 candidate values, or None if the draw cannot work


def _three(array: np.ndarray) -> np.ndarray:
    """An h x w x C uint8 array as three contiguous channels (seamlessClone needs them)."""
    return np.ascontiguousarray(np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array)


def _poisson(patch: np.ndarray, window: _Window) -> np.ndarray | None:
    """`patch` (h x w x C uint8) Poisson-blended (NORMAL_CLONE) into the window around the shape."""
    before = window.before
    clone = cv2.dilate(window.shape.astype(np.uint8) * 255, np.ones((3, 3), np.uint8),
                       iterations=_CLONE_DILATION)
    clone[[0, -1], :] = 0
    clone[:, [0, -1]] = 0
    x, y, w, h = cv2.boundingRect(clone)
    if w < 3 or h < 3:
        return None
    try:
        blended = cv2.seamlessClone(_three(patch), _three(before), clone, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    except cv2.error:
        return None
    blended = blended.astype(np.float32)
    return blended.mean(axis=2, keepdims=True) if before.shape[2] == 1 else blended


def _patch_from(picture: np.ndarray, window: _Window, rng: np.random.Generator, *, angle: float, zoom: float,
                flip: bool) -> np.ndarray:
    """A window-sized patch of `picture` around a random point, rotated by `angle` degrees, magnified by
    `zoom` (above 1: the picture's structures look larger) and mirrored if `flip`: one affine warp."""
    height, width = picture.shape[:2]
    h, w = window.size
    cx, cy = _point(rng, height, width)
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, zoom)
    if flip:
        matrix[0, :] = -matrix[0, :]  # mirror the window's x axis about the point
        matrix[0, 2] += 2.0 * cx
    matrix[:, 2] += (w / 2.0 - cx, h / 2.0 - cy)
    patch = cv2.warpAffine(picture, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return patch.reshape(h, w, picture.shape[2])


def _self(window: _Window, rng: np.random.Generator) -> np.ndarray | None:
    """A patch of the image itself that breaks its regularity: rotated (30-150 degrees) and/or
    rescaled (x 0.5-0.75 or x 1.35-2), or else mirrored, so that a copy of a stationary texture does not
    vanish into it; usually Poisson blended."""
    rotate, rescale = rng.random() < 0.6, rng.random() < 0.6
    angle = float(rng.uniform(30.0, 150.0)) if rotate else 0.0
    zoom = (_log_uniform(rng, 0.5, 0.75) if rng.random() < 0.5 else _log_uniform(rng, 1.35, 2.0)) if rescale else 1.0
    patch = _patch_from(window.image, window, rng, angle=angle, zoom=zoom, flip=not (rotate or rescale))
    return _poisson(patch, window) if rng.random() < 0.7 else patch.astype(np.float32)


def _foreign(window: _Window, rng: np.random.Generator) -> np.ndarray | None:
    """A patch of the source (any angle, x 0.5-2), Poisson blended or pasted as it is."""
    angle = float(rng.uniform(0.0, 360.0)) if rng.random() < 0.5 else 0.0
    zoom = _log_uniform(rng, 0.5, 2.0) if rng.random() < 0.5 else 1.0
    patch = _patch_from(window.source, window, rng, angle=angle, zoom=zoom, flip=rng.random() < 0.5)
    return _poisson(patch, window) if rng.random() < 0.5 else patch.astype(np.float32)


def _shape_mean(window: _Window) -> np.ndarray:
    """The mean value (per channel) of the image under the shape."""
    return window.before[window.shape].astype(np.float32).mean(axis=0)


def _random_direction(rng: np.random.Generator, channels: int) -> np.ndarray:
    if channels == 1:
        return np.array([1.0 if rng.random() < 0.5 else -1.0], np.float32)
    direction = rng.normal(size=channels)
    return (direction / max(float(np.linalg.norm(direction)), 1e-6) * math.sqrt(channels)).astype(np.float32)


def _tone(window: _Window, rng: np.random.Generator) -> np.ndarray:
    before = window.before.astype(np.float32)
    mean = _shape_mean(window)
    contrast = math.exp(rng.uniform(-0.8, 0.8))
    brightness = (1.0 if rng.random() < 0.5 else -1.0) * _log_uniform(rng, 8.0, 70.0)
    result = (before - mean) * contrast + mean + brightness
    if before.shape[2] == 3 and rng.random() < 0.5:
        result = result + _random_direction(rng, 3) * rng.uniform(10.0, 45.0)
    return result


def _blur(window: _Window, rng: np.random.Generator) -> np.ndarray:
    sigma = _log_uniform(rng, 1.0, 5.0) * window.scale
    return cv2.GaussianBlur(window.before, (0, 0), sigma).astype(np.float32).reshape(window.before.shape)


def _sharpen(window: _Window, rng: np.random.Generator) -> np.ndarray:
    before = window.before.astype(np.float32)
    sigma = _log_uniform(rng, 1.0, 3.0) * window.scale
    amount = _log_uniform(rng, 1.5, 5.0)
    smooth = cv2.GaussianBlur(before, (0, 0), sigma).reshape(before.shape)
    return before + amount * (before - smooth)


def _noise(window: _Window, rng: np.random.Generator) -> np.ndarray:
    before = window.before.astype(np.float32)
    h, w, channels = before.shape
    per_channel = channels == 3 and rng.random() < 0.3
    noise = rng.normal(size=(h, w, channels if per_channel else 1)).astype(np.float32)
    if rng.random() < 0.5:  # grainy: spatially correlated, brought back to unit spread
        noise = cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.7, 1.5) * window.scale).reshape(noise.shape)
        noise /= max(float(noise.std()), 1e-6)
    return before + noise * rng.uniform(10.0, 40.0)


def _displace(window: _Window, rng: np.random.Generator) -> np.ndarray:
    """Resample the window along a smooth displacement field (a constant shift plus a smooth random
    part), tapered towards the shape's edge or not (a clean break)."""
    before = window.before
    h, w = window.size
    amplitude = _log_uniform(rng, 1.5, 8.0) * window.scale
    flows = []
    for _ in range(2):
        cells = rng.uniform(-1.0, 1.0, size=(3, 3)).astype(np.float32) + rng.uniform(-1.0, 1.0)
        flows.append(cv2.resize(cells, (w, h), interpolation=cv2.INTER_CUBIC) * (0.5 * amplitude))
    if rng.random() < 0.5:
        taper = cv2.GaussianBlur(window.shape.astype(np.float32), (0, 0), 2.0 * max(window.scale, 0.25))
        taper = taper.reshape(h, w) / max(float(taper.max()), 1e-6)
        flows = [flow * taper for flow in flows]
    grid_y, grid_x = np.mgrid[0:h, 0:w].astype(np.float32)
    moved = cv2.remap(before, grid_x + flows[0], grid_y + flows[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return moved.astype(np.float32).reshape(before.shape)


def _flat_near(window: _Window, rng: np.random.Generator) -> np.ndarray:
    colour = _shape_mean(window) + _random_direction(rng, window.before.shape[2]) * rng.uniform(10.0, 30.0)
    return np.broadcast_to(colour, window.before.shape).astype(np.float32)


def _flat_far(window: _Window, rng: np.random.Generator) -> np.ndarray:
    mean = _shape_mean(window)
    channels = window.before.shape[2]
    colour = rng.uniform(0.0, 255.0, size=channels).astype(np.float32)
    for _ in range(8):
        if float(np.abs(colour - mean).mean()) >= 70.0:
            break
        colour = rng.uniform(0.0, 255.0, size=channels).astype(np.float32)
    else:
        colour = np.where(mean < 128.0, mean + 100.0, mean - 100.0).astype(np.float32)
    return np.broadcast_to(colour, window.before.shape).astype(np.float32)


_CONTENT_FILLERS: Mapping[str, Callable[[_Window, np.random.Generator], np.ndarray | None]] = MappingProxyType({
    "self": _self, "foreign": _foreign, "tone": _tone, "blur": _blur, "sharpen": _sharpen, "noise": _noise,
    "displace": _displace, "flat_near": _flat_near, "flat_far": _flat_far,
})


# ---------------------------------------------------------------------------------------------
# Putting a shape and a content together


def _drop_specks(mask: np.ndarray, speck_area: int) -> np.ndarray:
    if speck_area <= 1 or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= speck_area
    return keep[labels]


def _window_of(canvas: np.ndarray, image: np.ndarray, source: np.ndarray, scale: float) -> _Window | None:
    x, y, w, h = cv2.boundingRect(canvas)
    if w == 0 or h == 0:
        return None
    height, width = canvas.shape
    top, left = max(0, y - _MARGIN), max(0, x - _MARGIN)
    bottom, right = min(height, y + h + _MARGIN), min(width, x + w + _MARGIN)
    return _Window(image=image, source=source, top=top, left=left, bottom=bottom, right=right,
                   shape=canvas[top:bottom, left:right].astype(bool), scale=scale)


def _change(after: np.ndarray, before: np.ndarray) -> np.ndarray:
    """h x w: the mean absolute change over the channels (0-255 scale)."""
    return np.abs(after.astype(np.int16) - before.astype(np.int16)).mean(axis=2)


def _compose(window: _Window, candidate: np.ndarray, rng: np.random.Generator, tolerance: float,
             speck_area: int) -> tuple[np.ndarray, np.ndarray]:
    """The window's new values and its mask: the candidate inside the (possibly feathered) shape,
    the mask where the values changed, cleaned within the shape's support."""
    before = window.before
    alpha = window.shape.astype(np.float32)
    support = window.shape
    if rng.random() < 0.3:  # soft edges, at most 2 px wide
        sigma = rng.uniform(0.4, 0.8) * max(window.scale, 0.25)
        alpha = np.maximum(alpha, cv2.GaussianBlur(alpha, (0, 0), sigma))
        support = cv2.dilate(window.shape.astype(np.uint8), np.ones((3, 3), np.uint8),
                             iterations=math.ceil(2.5 * sigma)).astype(bool)
    alpha = np.where(support, alpha, 0.0)[:, :, None]
    values = before.astype(np.float32) + alpha * (candidate - before.astype(np.float32))
    after = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    side = max(3, 2 * round(2 * window.scale) + 1)  # 5 x 5 at 224 x 224
    closed = cv2.morphologyEx((_change(after, before) > tolerance).astype(np.uint8), cv2.MORPH_CLOSE,
                              np.ones((side, side), np.uint8))
    mask = _drop_specks(_fill_holes(closed).astype(bool) & support, speck_area)
    return np.where(mask[:, :, None], after, before), mask


def _push(window: _Window, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The fallback: the shape becomes brighter (if it is dark on average) or darker by 16-96 grey
    levels (one draw); a value that would leave 0..255 moves the other way, so every value in the
    shape changes by exactly that step whatever the image."""
    step = round(_log_uniform(rng, *_PUSH))
    before = window.before.astype(np.int16)
    up = float(before[window.shape].mean()) < 128.0
    brighter, darker = before + step, before - step
    pushed = (np.where(brighter <= 255, brighter, darker) if up else np.where(darker >= 0, darker, brighter))
    return np.where(window.shape[:, :, None], pushed.astype(np.uint8), window.before), window.shape


def _required_change(window: _Window, content: str, min_visibility: float) -> float:
    """The least mean absolute change inside the mask for a draw to count as visible:
    `min_visibility`, except for a blur of a strongly textured surface (grey-level standard deviation
    under the shape 12.5 or more), down to half of it: removing a texture is a visible break even
    when the values change less. (Moving a fine random texture about is not, so no such allowance
    for the other contents.)"""
    if content != "blur":
        return min_visibility
    spread = float(window.before[window.shape].std())
    return min_visibility * min(1.0, max(0.5, 1.0 - spread / 25.0))


def split_kind(kind: str) -> tuple[str, str]:
    """("shape", "content") of a "shape:content" kind; ValueError for an unknown kind."""
    shape, _, content = kind.partition(":")
    if shape not in SHAPES or content not in CONTENTS:
        raise ValueError(f"unknown pseudo-anomaly kind {kind!r}; expected 'cutpaste' or 'shape:content' with shape "
                         f"in {SHAPES} and content in {CONTENTS}")
    return shape, content


def uses_source(kind: str) -> bool:
    """Whether a kind reads its `source` image (otherwise it uses the image alone)."""
    return kind == CUTPASTE or split_kind(kind)[1] == "foreign"


def _as_hwc(array: np.ndarray) -> np.ndarray:
    return array[:, :, None] if array.ndim == 2 else array


def generate(kind: str, image: np.ndarray, source: np.ndarray, rng: np.random.Generator, *,
             tolerance: float = 4.0, min_visibility: float = 10.0, min_area_ratio: float = 1.2e-4,
             speck_ratio: float = 6e-5, max_attempts: int = 8) -> PseudoAnomaly:
    """A pseudo-anomaly of the given kind ("cutpaste" or "shape:content", see `KINDS`).

    image, source: uint8, H x W (grey) or H x W x 3 (`source` is converted to the image's channels and
    size). tolerance: the mean absolute change over the channels (0-255 scale) above which a pixel
    counts as changed. min_visibility: the least mean absolute change inside the mask (a blur of a strongly
    textured surface needs down to half of it, see `_required_change`). min_area_ratio:
    the least mask area, as a fraction of the image (6 px at 224 x 224). speck_ratio: changed regions
    smaller than this are dropped (3 px at 224 x 224). max_attempts: draws before the push fallback.
    "cutpaste" is `cutpaste_poisson(image, source, rng)` with its own settings.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if kind == CUTPASTE:
        return cutpaste_poisson(image, source, rng)
    shape_name, content_name = split_kind(kind)
    original_shape = image.shape if isinstance(image, np.ndarray) else None
    image = _check_image(image, "image")
    source = _check_image(source, "source")
    if image.ndim == 3 and _channels_equal(image):  # a grey picture stored as RGB stays grey
        result = generate(kind, image[:, :, 0], source, rng, tolerance=tolerance, min_visibility=min_visibility,
                          min_area_ratio=min_area_ratio, speck_ratio=speck_ratio, max_attempts=max_attempts)
        return PseudoAnomaly(image=np.repeat(result.image[:, :, None], 3, axis=2), mask=result.mask,
                             label=result.label, positions=result.positions, blended=result.blended,
                             kind=result.kind)
    height, width = image.shape[:2]
    gray = image.ndim == 2
    work = _as_hwc(image)
    source_work = _match_source(source, height, width, gray)  # three channels, grey ones if the image is grey
    source_work = np.ascontiguousarray(source_work[:, :, :1]) if gray else source_work
    scale = math.sqrt(height * width) / _REFERENCE_SIDE
    min_area = max(1, math.ceil(min_area_ratio * height * width))
    speck_area = max(1, round(speck_ratio * height * width))
    draw_shape, fill = _SHAPE_DRAWERS[shape_name], _CONTENT_FILLERS[content_name]
    outcome: tuple[_Window, np.ndarray, np.ndarray] | None = None
    window: _Window | None = None
    for _ in range(max_attempts):
        candidate_window = _window_of(draw_shape(rng, height, width, scale), work, source_work, scale)
        if candidate_window is None:
            continue
        window = candidate_window
        candidate = fill(window, rng)
        if candidate is None:
            continue
        after, mask = _compose(window, candidate, rng, tolerance, speck_area)
        area = int(mask.sum())
        if area < min_area:
            continue
        if float(_change(after, window.before)[mask].mean()) >= _required_change(window, content_name, min_visibility):
            outcome = (window, after, mask)
            break
    used_kind = kind
    if outcome is None:
        if window is None:  # no shape drawn at all (degenerate sizes): the centre pixel
            canvas = np.zeros((height, width), np.uint8)
            canvas[height // 2, width // 2] = 1
            window = _window_of(canvas, work, source_work, scale)
            assert window is not None
        after, mask = _push(window, rng)
        outcome = (window, after, mask)
        used_kind = f"{shape_name}:push"
    window, after, mask = outcome
    result = work.copy()
    result[window.top:window.bottom, window.left:window.right] = after
    full_mask = np.zeros((height, width), dtype=bool)
    full_mask[window.top:window.bottom, window.left:window.right] = mask
    result = result[:, :, 0] if gray else result
    if original_shape is not None and result.shape != original_shape:
        result = result.reshape(original_shape)  # H x W x 1 in, H x W x 1 out
    blended = content_name in ("self", "foreign") and used_kind == kind
    return PseudoAnomaly(image=result, mask=full_mask, label=int(full_mask.any()),
                         positions=region_positions(full_mask), blended=blended, kind=used_kind)


def default_weights() -> dict[str, float]:
    """The default mixture: `CUTPASTE_WEIGHT` for "cutpaste", the rest shape weight x content weight."""
    weights = {CUTPASTE: CUTPASTE_WEIGHT}
    for shape in SHAPES:
        for content in CONTENTS:
            weights[f"{shape}:{content}"] = (1.0 - CUTPASTE_WEIGHT) * SHAPE_WEIGHTS[shape] * CONTENT_WEIGHTS[content]
    return weights


def mixture(weights: Mapping[str, float] | None = None,
            kinds: Sequence[str] | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """(kinds, probabilities) of a mixture: `weights` (kind -> weight; default `default_weights()`),
    restricted to `kinds` if given. Kinds of weight 0 are left out."""
    table = default_weights() if weights is None else dict(weights)
    if kinds is not None:
        missing = [k for k in kinds if k not in table]
        if weights is None and missing:
            raise ValueError(f"unknown pseudo-anomaly kind(s) {missing}; known: {KINDS}")
        if missing:
            raise ValueError(f"kind(s) {missing} have no weight in {sorted(table)}")
        table = {k: table[k] for k in kinds}
    for kind, weight in table.items():
        if kind != CUTPASTE:
            split_kind(kind)
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"the weight of {kind!r} must be a finite number >= 0, got {weight!r}")
    chosen = tuple(k for k, w in table.items() if w > 0)
    if not chosen:
        raise ValueError("the pseudo-anomaly mixture has no kind with a positive weight")
    probabilities = np.array([table[k] for k in chosen], dtype=np.float64)
    return chosen, probabilities / probabilities.sum()


def choose_kind(rng: np.random.Generator, weights: Mapping[str, float] | None = None,
                kinds: Sequence[str] | None = None) -> str:
    """A kind drawn from the mixture (`mixture(weights, kinds)`); a mixture of one kind draws nothing
    from `rng`."""
    chosen, probabilities = mixture(weights, kinds)
    if len(chosen) == 1:
        return chosen[0]
    return chosen[int(rng.choice(len(chosen), p=probabilities))]


def pseudo_anomaly(image: np.ndarray, source: np.ndarray, rng: np.random.Generator,
                   weights: Mapping[str, float] | None = None, **settings: Any) -> PseudoAnomaly:
    """A pseudo-anomaly of a kind drawn from the mixture `weights` (kind -> weight, default
    `default_weights()`), then `generate(kind, image, source, rng, **settings)`."""
    return generate(choose_kind(rng, weights), image, source, rng, **settings)
