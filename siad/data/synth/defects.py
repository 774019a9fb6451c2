"""SIAD-Synth's drawn defects and their exact masks."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Callable, Mapping, Optional, Sequence

import cv2
import numpy as np
from scipy import ndimage

from siad.data.synth.common import (_blob, _edge, _erode, _fill_polygon, _grid, _noise, _pick, _polyline,
                                    _to_uint8)

DEFECT_KINDS: tuple[str, ...] = (
    "scratch", "crack", "hole", "stain", "color_shift", "missing", "warp", "contamination",
)

# A changed pixel differs from the original by more than this (max over channels, in 0..255 levels);
# smaller changes are put back, so that the mask is the visible change.
CHANGE_TOLERANCE = 8
# A defect is kept only if its changed pixels differ from the original by at least this much on average.
MIN_CONTRAST = 18.0


def _mix(image: np.ndarray, target: np.ndarray | Sequence[float], alpha: np.ndarray) -> np.ndarray:
    target = np.asarray(target, np.float32)
    return image + alpha[..., None] * (target - image)


def _scratch(image: np.ndarray, rng: np.random.Generator, allowed: np.ndarray, **_: object) -> np.ndarray:
    h = allowed.shape[0]
    cy, cx = _pick(rng, allowed)
    length = math.exp(rng.uniform(math.log(0.1), math.log(0.45))) * h
    a = rng.uniform(0, np.pi)
    bend = rng.normal(0, 0.12) * length
    p0 = np.array([cx - 0.5 * length * math.cos(a), cy - 0.5 * length * math.sin(a)])
    p2 = np.array([cx + 0.5 * length * math.cos(a), cy + 0.5 * length * math.sin(a)])
    p1 = (p0 + p2) / 2 + bend * np.array([-math.sin(a), math.cos(a)])
    t = np.linspace(0, 1, 40)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
    thickness = int(rng.choice([1, 2, 2, 3])) if h >= 192 else int(rng.choice([1, 2]))
    alpha = _polyline(allowed.shape, curve, thickness) * rng.uniform(0.75, 1.0)
    if rng.random() < 0.6:
        return _mix(image, (235, 235, 232), alpha)  # bright: bare material
    return _mix(image, image * 0.3, alpha)


def _crack(image: np.ndarray, rng: np.random.Generator, allowed: np.ndarray, **_: object) -> np.ndarray:
    h = allowed.shape[0]
    alpha = np.zeros(allowed.shape, np.float32)
    cy, cx = _pick(rng, allowed)
    total = rng.uniform(0.12, 0.5) * h
    branches = [(cy, cx, rng.uniform(0, 2 * np.pi), total, 2 if h >= 192 else 1)]
    step = max(h / 90.0, 1.5)
    while branches:
        y, x, heading, length, thickness = branches.pop()
        points = [(x, y)]
        for _ in range(int(length / step)):
            heading += rng.normal(0, 0.35)
            x, y = x + step * math.cos(heading), y + step * math.sin(heading)
            points.append((x, y))
            if rng.random() < 0.03 and len(branches) < 3 and length > 0.1 * h:
                branches.append((y, x, heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1), 0.4 * length, 1))
        alpha = np.maximum(alpha, _polyline(allowed.shape, np.array(points), thickness))
    return _mix(image, image * rng.uniform(0.1, 0.3), alpha)


def _hole(image: np.ndarray, rng: np.random.Generator, allowed: np.ndarray,
          background: Optional[np.ndarray] = None, **_: object) -> np.ndarray:
    h = allowed.shape[0]
    out = image.copy()
    for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
        cy, cx = _pick(rng, allowed)
        radius = math.exp(rng.uniform(math.log(0.015), math.log(0.07))) * h + 1.5
        inner = _blob(rng, allowed.shape, cy, cx, radius, irregularity=0.15)
        lit = np.roll(np.roll(inner, 1 + int(radius // 8), axis=0), 1 + int(radius // 8), axis=1)
        wall = np.clip(inner - lit, 0, 1)  # the far wall, catching light from the upper left
        if background is not None and rng.random() < 0.5:
            floor = background.astype(np.float32) * 0.6  # through the part: the darkened ground below
        else:
            floor = np.full_like(image, rng.uniform(10, 35))
        out = _mix(out, floor, inner)
        out = _mix(out, image * 0.5 + 70, wall * 0.7)
    return out


def _stain(image: np.ndarray, rng: np.random.Generator, allowed: np.ndarray, **_: object) -> np.ndarray:
    h = allowed.shape[0]
    cy, cx = _pick(rng, allowed)
    radius = math.exp(rng.uniform(math.log(0.04), math.log(0.16))) * h
    blob = cv2.GaussianBlur(_blob(rng, allowed.shape, cy, cx, radius, irregularity=0.45), (0, 0), 0.12 * radius + 0.5)
    texture = 0.8 + 0.2 * np.clip(_noise(rng, allowed.shape, max(int(h / radius), 2) * 3), -1, 1)
    colours = ((120, 62, 24), (36, 32, 28), (150, 140, 60), (90, 90, 110))
    target = np.asarray(colours[int(rng.integers(len(colours)))], np.float32)
    return _mix(image, target, blob * texture * rng.uniform(0.5, 0.8))


def _color_shift(image: np.ndarray, rng: np.random.Generator, allowed: np.ndarray, **_: object) -> np.ndarray:
    h = allowed.shape[0]
    cy, cx = _pick(rng, allowed)
    radius = math.exp(rng.uniform(math.log(0.07), math.log(0.22))) * h
    blob = cv2.GaussianBlur(_blob(rng, allowed.shape, cy, cx, radius, irregularity=0.35), (0, 0), 0.2 * radius + 0.5)
    weight = blob > 0.5
    level = float(image[weight].mean()) if weight.any() else 128.0
    modes = [0, 3] + ([1] if level > 60 else []) + ([2] if level < 170 else [])  # bleaching shows on dark only
    mode = modes[int(rng.integers(len(modes)))]
    if mode == 0:  # yellowing / warm tint
        shifted = image * np.array([1.15, 1.0, 0.6], np.float32) + np.array([20, 10, 0], np.float32)
    elif mode == 1:  # burn / darkening
        shifted = image * 0.55 + np.array([25, 12, 0], np.float32)
    elif mode == 2:  # bleached
        gray = image.mean(axis=-1, keepdims=True)
        shifted = gray + 0.2 * (image - gray) + 45
    else:  # a cold tint
        shifted = image * np.array([0.7, 0.9, 1.2], np.float32) + np.array([0, 10, 30], np.float32)
    return _mix(image, np.clip(shifted, 0, 255), blob)


def _missing(image: np.ndarray, rng: np.random.Generator, allowed: np.ndarray, region: np.ndarray,
             background: Optional[np.ndarray] = None, **_: object) -> np.ndarray:
    h = allowed.shape[0]
    radius = math.exp(rng.uniform(math.log(0.06), math.log(0.2))) * h
    vertices = int(rng.integers(5, 9))
    if background is not None:
        edge = _edge(region)
        cy, cx = _pick(rng, edge if edge.any() else allowed)
    else:
        cy, cx = _pick(rng, allowed)
    t = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    r = radius * rng.uniform(0.5, 1.0, vertices)
    piece = _fill_polygon(allowed.shape, np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1))
    if background is not None:
        piece = piece * region
        broken_rim = (cv2.dilate((piece > 0.5).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & region & (piece <= 0.5)
        out = _mix(image, image * 0.6, broken_rim.astype(np.float32))
        return _mix(out, background.astype(np.float32), piece)
    backing = np.full_like(image, rng.uniform(15, 45)) + rng.normal(0, 3, image.shape).astype(np.float32)
    rim = np.clip(cv2.dilate(piece, np.ones((3, 3), np.uint8)) - piece, 0, 1)
    out = _mix(image, image * 0.55, rim)
    return _mix(out, backing, piece)


def _warp(image: np.ndarray, rng: np.random.Generator, allowed: np.ndarray, region: np.ndarray,
          background: Optional[np.ndarray] = None, **_: object) -> np.ndarray:
    h = allowed.shape[0]
    if background is not None:
        edge = _edge(region)
        cy, cx = _pick(rng, edge if edge.any() else allowed)
    else:
        cy, cx = _pick(rng, allowed)
    rho = rng.uniform(0.06, 0.14) * h
    y, x = _grid(h)
    dy, dx = y - cy, x - cx
    weight = np.exp(-2.0 * (dy * dy + dx * dx) / (rho * rho))
    if rng.random() < 0.5:  # pinch or bulge
        amount = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.5)
        map_x, map_y = x - amount * dx * weight, y - amount * dy * weight
    else:  # swirl
        turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.2) * weight
        c, s = np.cos(turn), np.sin(turn)
        map_x, map_y = cx + dx * c - dy * s, cy + dx * s + dy * c
    moved = cv2.remap(image, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REFLECT)
    # the deformed surface is lit differently: a dent or bump darkens one flank and lights the other
    a = rng.uniform(0, 2 * np.pi)
    flank = -(dx * math.cos(a) + dy * math.sin(a)) / rho * weight
    shading = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.0) * flank
    if background is not None:  # only the part's surface is shaded, not the ground around it
        surface = cv2.remap(region.astype(np.float32), map_x.astype(np.float32), map_y.astype(np.float32),
                            cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        shading = 1.0 + (shading - 1.0) * surface
    return moved * shading[..., None]


def _contamination(image: np.ndarray, rng: np.random.Generator, allowed: np.ndarray, **_: object) -> np.ndarray:
    h = allowed.shape[0]
    out = image
    colours = ((30, 26, 22), (70, 50, 30), (40, 60, 140), (235, 235, 225))
    for _ in range(int(rng.choice([1, 1, 2, 3]))):
        cy, cx = _pick(rng, allowed)
        colour = np.asarray(colours[int(rng.integers(len(colours)))], np.float32)
        if rng.random() < 0.5:  # a fibre or hair
            length = rng.uniform(0.08, 0.3) * h
            heading = rng.uniform(0, 2 * np.pi)
            points = [(cx, cy)]
            for _ in range(24):
                heading += rng.normal(0, 0.15)
                points.append((points[-1][0] + length / 24 * math.cos(heading), points[-1][1] + length / 24 * math.sin(heading)))
            alpha = _polyline(allowed.shape, np.array(points), 1 if h < 192 else int(rng.choice([1, 2])))
        else:  # a speck of debris
            alpha = _blob(rng, allowed.shape, cy, cx, rng.uniform(0.012, 0.035) * h + 1.0, irregularity=0.5)
        out = _mix(out, colour, alpha * rng.uniform(0.85, 1.0))
    return out


_DEFECTS: Mapping[str, Callable[..., np.ndarray]] = MappingProxyType({
    "scratch": _scratch, "crack": _crack, "hole": _hole, "stain": _stain, "color_shift": _color_shift,
    "missing": _missing, "warp": _warp, "contamination": _contamination,
})
# Defects that may change pixels outside the part (a warp moves its outline).
_MAY_LEAVE_REGION = frozenset({"warp"})


def exact_change(original: np.ndarray, changed: np.ndarray, tolerance: int = CHANGE_TOLERANCE,
                 min_speck: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Make the defect's mask from what really changed.

    Pixels whose change is at most `tolerance` levels (in every channel), and changed specks smaller
    than `min_speck` pixels, are put back to the original. The mask is the remaining changed pixels
    with their enclosed gaps filled (a 3 x 3 closing and hole filling). So a pixel outside the mask
    is exactly the original, and the mask is a solid region made of changed pixels. Returns
    (image uint8, mask bool).
    """
    original = np.asarray(original)
    new = _to_uint8(changed) if changed.dtype != np.uint8 else changed
    difference = np.abs(new.astype(np.int16) - original.astype(np.int16))
    if difference.ndim == 3:
        difference = difference.max(axis=-1)
    moved = (difference > tolerance).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(moved, connectivity=8)
    small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_speck)
    small = small[small > 0]
    if len(small):
        moved[np.isin(labels, small)] = 0
    keep = moved.astype(bool)
    out = original.copy()
    out[keep] = new[keep]
    closed = cv2.morphologyEx(moved, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)) > 0
    mask = ndimage.binary_fill_holes(closed | keep)
    return out, mask


def _contrast(before: np.ndarray, after: np.ndarray, mask: np.ndarray) -> float:
    """The mean change (max over channels, in levels) over the changed pixels of a mask."""
    difference = np.abs(after.astype(np.int16) - before.astype(np.int16)).max(axis=-1)[mask]
    changed = difference[difference > 0]
    return float(changed.mean()) if changed.size else 0.0


def apply_defect(kind: str, image: np.ndarray, rng: np.random.Generator, *,
                 region: Optional[np.ndarray] = None, background: Optional[np.ndarray] = None,
                 max_tries: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Draw a defect of `kind` (one of `DEFECT_KINDS`) on an RGB uint8 image.

    region: where the defect may lie (the part's foreground for objects; the whole image if None).
    background: the scene without the part (`ObjectScene.background`), so that holes can go through
    and missing pieces show what lies below.
    Returns (image uint8, mask bool): the mask is non-empty and EXACT (see `exact_change()`): every
    pixel outside it equals the input. A drawing too small (under 0.04 % of the image) or too faint (a
    mean change under `MIN_CONTRAST` levels) is drawn again; RuntimeError if none is visible in
    `max_tries` tries.
    """
    if kind not in _DEFECTS:
        raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECT_KINDS}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"image must be a square H x W x 3 uint8 array, got {image.dtype} {image.shape}")
    h = image.shape[0]
    region = np.ones((h, h), bool) if region is None else np.asarray(region, bool)
    if region.shape != (h, h) or not region.any():
        raise ValueError("region must be a non-empty H x W mask of the image's size")
    margin = max(int(0.03 * h), 2)
    allowed = _erode(region, margin)
    if not allowed.any():
        allowed = region
    if background is not None:
        background = np.asarray(background)
        if background.shape != image.shape:
            raise ValueError("background must have the image's shape")
    source = image.astype(np.float32)
    min_area = max(12, int(0.0004 * h * h))
    for _ in range(max_tries):
        drawn = _DEFECTS[kind](source, rng, allowed=allowed, region=region, background=background)
        if kind not in _MAY_LEAVE_REGION:
            drawn = np.where(region[..., None], drawn, source)
        out, mask = exact_change(image, drawn)
        if int(mask.sum()) >= min_area and _contrast(image, out, mask) >= MIN_CONTRAST:
            return out, mask
    raise RuntimeError(f"could not draw a visible {kind!r} defect in {max_tries} tries")
