"""SIAD-Synth's textures: scikit-image photographs (brick, grass, gravel) and procedural surfaces."""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Callable, Mapping

import cv2
import numpy as np

from siad.data.synth.common import (_bundled_gray, _check_size, _fbm, _grid, _jitter, _noise, _tint,
                                    _to_uint8)

PHOTO_TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
PROCEDURAL_TEXTURES: tuple[str, ...] = ("woven", "marbled", "grid", "leather", "fibrous", "wood", "perforated")
TEXTURE_KINDS: tuple[str, ...] = PHOTO_TEXTURES + PROCEDURAL_TEXTURES


_PHOTO_SOURCES: Mapping[str, tuple[str, tuple[float, ...], tuple[float, ...]]] = MappingProxyType({
    "brick": ("brick.png", (70, 32, 26), (238, 165, 130)),
    "grass": ("grass.png", (22, 44, 14), (178, 226, 112)),
    "gravel": ("gravel.png", (48, 42, 36), (232, 222, 202)),
})


def _photo_texture(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    filename, dark, light = _PHOTO_SOURCES[kind]
    source = _bundled_gray(filename)
    window = rng.uniform(0.40, 0.62) * min(source.shape)  # the source side seen by the output
    factor = size / window
    if factor < 1.0:
        source = cv2.resize(source, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        scale = 1.0
    else:
        scale = factor
    angle = rng.uniform(-6, 6)
    half = 0.5 * size / scale * math.sqrt(2.0)
    hs, ws = source.shape
    cy = rng.uniform(min(half, hs / 2), max(hs - half, hs / 2))
    cx = rng.uniform(min(half, ws / 2), max(ws - half, ws / 2))
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    matrix[0, 2] += size / 2.0 - cx
    matrix[1, 2] += size / 2.0 - cy
    gray = cv2.warpAffine(source, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        gray = gray[:, ::-1]
    if rng.random() < 0.5:
        gray = gray[::-1, :]
    mean = float(gray.mean())
    gray = (gray - mean) * rng.uniform(0.85, 1.15) + mean + rng.uniform(-0.05, 0.05)
    gray = np.clip(gray, 0, 1) ** rng.uniform(0.85, 1.15)
    return _tint(np.ascontiguousarray(gray), _jitter(rng, dark, 0.05), _jitter(rng, light, 0.05))


def _rotated_coords(rng: np.random.Generator, size: int, max_angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (u, v) of the pixel grid rotated by a random angle in [-max_angle, max_angle]."""
    y, x = _grid(size)
    a = math.radians(rng.uniform(-max_angle, max_angle))
    u = x * math.cos(a) + y * math.sin(a)
    v = -x * math.sin(a) + y * math.cos(a)
    return u, v


def _woven(rng: np.random.Generator, size: int) -> np.ndarray:
    u, v = _rotated_coords(rng, size, 4.0)
    period = size / rng.uniform(15.0, 17.0)
    u = u / period + rng.uniform(0, 2) + 0.06 * _noise(rng, (size, size), 6)
    v = v / period + rng.uniform(0, 2) + 0.06 * _noise(rng, (size, size), 6)
    iu, fu = np.floor(u), u - np.floor(u)
    iv, fv = np.floor(v), v - np.floor(v)
    warp_on_top = ((iu + iv) % 2) == 0
    warp = np.sin(np.pi * fu) ** 0.6 * (0.72 + 0.28 * np.sin(np.pi * fv))
    weft = np.sin(np.pi * fv) ** 0.6 * (0.72 + 0.28 * np.sin(np.pi * fu))
    fibres_warp = _noise(rng, (size, size), (max(size // 32, 2), size // 3))
    fibres_weft = _noise(rng, (size, size), (size // 3, max(size // 32, 2)))
    gray = np.where(warp_on_top, warp * (1 + 0.07 * fibres_warp), weft * (1 + 0.07 * fibres_weft))
    gray = 0.12 + 0.85 * gray + 0.03 * _noise(rng, (size, size), 3)
    return _tint(gray, _jitter(rng, (28, 34, 62), 0.06), _jitter(rng, (150, 165, 210), 0.06))


def _marbled(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = _grid(size)
    turbulence = _fbm(rng, (size, size), 3, 5)
    a = math.radians(30.0 + rng.uniform(-20, 20))
    frequency = 2 * math.pi * rng.uniform(2.2, 3.4) / size
    vein = np.sin(frequency * (x * math.cos(a) + y * math.sin(a)) + 2.2 * turbulence + rng.uniform(0, 2 * math.pi))
    gray = 1.0 - 0.6 * (1.0 - np.abs(vein)) ** 8 - 0.05 * _fbm(rng, (size, size), 4, 4) ** 2
    return _tint(np.clip(gray, 0, 1), _jitter(rng, (60, 78, 72), 0.05), _jitter(rng, (242, 239, 232), 0.03))


def _grid_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    u, v = _rotated_coords(rng, size, 3.0)
    period = size / rng.uniform(9.0, 10.5)
    half_width = 0.13 * period
    u = u / period + rng.uniform(0, 1) + 0.02 * _noise(rng, (size, size), 4)
    v = v / period + rng.uniform(0, 1) + 0.02 * _noise(rng, (size, size), 4)
    du = np.abs(u - np.round(u)) * period
    dv = np.abs(v - np.round(v)) * period
    pv = np.sqrt(np.clip(1 - (du / half_width) ** 2, 0, 1))  # vertical wires (constant u)
    ph = np.sqrt(np.clip(1 - (dv / half_width) ** 2, 0, 1))
    vertical_on_top = ((np.round(u) + np.floor(v)) % 2) == 0
    crossing = (pv > 0) & (ph > 0)
    wire = np.where(crossing, np.where(vertical_on_top, pv, ph), np.maximum(pv, ph))
    lit = np.where(pv >= ph, (u - np.round(u)), (v - np.round(v))) * period / half_width  # -1..1 across a wire
    shade = 0.75 + 0.25 * np.clip(-lit, -1, 1)
    gray = 0.10 + 0.04 * _noise(rng, (size, size), 8) + 0.78 * wire ** 0.7 * shade
    return _tint(np.clip(gray, 0, 1), _jitter(rng, (22, 22, 25), 0.05), _jitter(rng, (205, 205, 212), 0.05))


def _leather(rng: np.random.Generator, size: int) -> np.ndarray:
    grain = 0.6 * _noise(rng, (size, size), size // 5) + 0.4 * _noise(rng, (size, size), size // 3)
    crease_field = _fbm(rng, (size, size), 6, 3)
    creases = np.exp(-((crease_field / 0.10) ** 2))
    gray = 0.55 + 0.06 * grain - 0.22 * creases + 0.06 * _noise(rng, (size, size), 3)
    return _tint(np.clip(gray, 0, 1), _jitter(rng, (48, 26, 14), 0.05), _jitter(rng, (196, 124, 72), 0.05))


def _fibrous(rng: np.random.Generator, size: int) -> np.ndarray:
    canvas = np.full((size, size), 70, np.uint8)
    count = int(0.02 * size * size)
    centres = rng.uniform(-0.1 * size, 1.1 * size, (count, 2))
    lengths = rng.uniform(0.04, 0.22, count) * size
    angles = np.radians(rng.normal(0.0, 22.0, count))
    values = rng.integers(90, 236, count)
    for (cx, cy), length, angle, value in zip(centres, lengths, angles, values):
        dx, dy = 0.5 * length * math.cos(angle), 0.5 * length * math.sin(angle)
        p1 = (int(round((cx - dx) * 16)), int(round((cy - dy) * 16)))
        p2 = (int(round((cx + dx) * 16)), int(round((cy + dy) * 16)))
        cv2.line(canvas, p1, p2, int(value), 1, cv2.LINE_AA, shift=4)
    gray = cv2.GaussianBlur(canvas, (0, 0), 0.6).astype(np.float32) / 255.0
    return _tint(gray, _jitter(rng, (80, 70, 52), 0.05), _jitter(rng, (250, 240, 214), 0.03))


def _wood(rng: np.random.Generator, size: int) -> np.ndarray:
    u, v = _rotated_coords(rng, size, 5.0)
    cy = -rng.uniform(1.2, 2.5) * size
    cx = rng.uniform(0.2, 0.8) * size
    radius = np.sqrt(((u - cx) * 0.22) ** 2 + (v - cy) ** 2) + 0.03 * size * _fbm(rng, (size, size), 3, 3)
    period = size / rng.uniform(11.0, 15.0)
    ring = 0.5 + 0.5 * np.sin(2 * np.pi * radius / period)
    grain = _noise(rng, (size, size), (size // 4, 3))
    gray = 0.42 + 0.35 * ring ** 2.5 + 0.05 * grain + 0.04 * _noise(rng, (size, size), 4)
    image = _tint(np.clip(gray, 0, 1), _jitter(rng, (92, 50, 24), 0.05), _jitter(rng, (228, 172, 112), 0.05))
    return image[:, ::-1].copy() if rng.random() < 0.5 else image


def _perforated(rng: np.random.Generator, size: int) -> np.ndarray:
    brushed = _noise(rng, (size, size), (size // 2, 3))
    gray = 0.62 + 0.035 * brushed + 0.05 * _noise(rng, (size, size), 2)
    pitch = size / rng.uniform(8.5, 9.5)
    radius = 0.28 * pitch
    a = math.radians(rng.uniform(-2.5, 2.5))
    oy, ox = rng.uniform(0, pitch, 2)
    ca, sa = math.cos(a), math.sin(a)
    holes = np.zeros((size, size), np.uint8)
    walls = np.zeros((size, size), np.uint8)
    row_step = pitch * math.sqrt(3) / 2
    for row in range(-2, int(size / row_step) + 3):
        for col in range(-2, int(size / pitch) + 3):
            lx = col * pitch + (pitch / 2 if row % 2 else 0.0) + ox
            ly = row * row_step + oy
            px = size / 2 + (lx - size / 2) * ca - (ly - size / 2) * sa
            py = size / 2 + (lx - size / 2) * sa + (ly - size / 2) * ca
            centre = (int(round(px * 16)), int(round(py * 16)))
            cv2.circle(holes, centre, int(round(radius * 16)), 255, -1, cv2.LINE_AA, shift=4)
            lit = (int(round((px + 0.18 * radius) * 16)), int(round((py + 0.18 * radius) * 16)))
            cv2.circle(walls, lit, int(round(radius * 16)), 255, -1, cv2.LINE_AA, shift=4)
    hole = holes.astype(np.float32) / 255.0
    wall = hole * (1.0 - walls.astype(np.float32) / 255.0)  # the inner wall facing the light
    gray = gray * (1 - hole) + hole * 0.07 + wall * 0.4
    return _tint(np.clip(gray, 0, 1), _jitter(rng, (36, 38, 42), 0.04), _jitter(rng, (214, 217, 222), 0.04))


_PROCEDURAL: Mapping[str, Callable[[np.random.Generator, int], np.ndarray]] = MappingProxyType({
    "woven": _woven, "marbled": _marbled, "grid": _grid_texture, "leather": _leather,
    "fibrous": _fibrous, "wood": _wood, "perforated": _perforated,
})


def make_texture(kind: str, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A normal (defect-free) texture image of `kind` (one of `TEXTURE_KINDS`): size x size x 3 uint8.

    Photographs (brick, grass, gravel) are random crops of scikit-image's bundled pictures (position,
    scale, a small rotation, flips, contrast, tint); the others are drawn in numpy with random phase,
    orientation, colour and noise.
    """
    size = _check_size(size)
    if kind in _PHOTO_SOURCES:
        image = _photo_texture(kind, rng, size)
    elif kind in _PROCEDURAL:
        image = _PROCEDURAL[kind](rng, size)
    else:
        raise ValueError(f"unknown texture kind {kind!r}; expected one of {TEXTURE_KINDS}")
    image = image * rng.uniform(0.93, 1.07) + rng.normal(0.0, 2.0, image.shape).astype(np.float32)
    return _to_uint8(image)
