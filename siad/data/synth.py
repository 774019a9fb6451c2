"""SIAD-Synth: MVTec-format anomaly-detection data made here, with no download.

`python -m siad.data.synth --out DIR [--seed N]` writes, under DIR:

- `train/<class>/...`: the TRAINING classes (textures and objects), MVTec layout: `train/good` normals,
  plus a few `test/good`, `test/<defect>` and `ground_truth/<defect>/NNN_mask.png` for sanity checks;
- `test/<class>/...`: the unseen TEST classes (other textures, other part shapes), same layout, with
  every defect kind of `DEFECT_KINDS` in `test/<defect>`; the test defects are drawn here (scratches,
  cracks, holes, stains, colour shifts, missing pieces, warps, contamination), never by CutPaste;
- `medical/{yes,no}/NNN.png` and `medical_train/{yes,no}/NNN.png`: grayscale brain-like scans made from
  scikit-image's Shepp-Logan phantom, with lesion-like anomalies, image labels only (BrainMRI layout);
- `train/meta.json`, `test/meta.json` (the zero-shot repositories' index, DESIGN 4), `synth.json` (the
  summary: classes, split, seed, counts) and `README.md`.

Everything is a function of the seed: each image has its own random generator, seeded from the seed and
the image's path, so the same seed gives byte-identical files. The only inputs are scikit-image's
bundled photographs (brick, grass, gravel, phantom), read from the installed package: nothing is
downloaded.

The generators are public so that tests and other code can call them: `make_texture()`,
`make_object()` (an `ObjectScene`: image, foreground, background), `apply_defect()` (image and EXACT
mask: a pixel outside the mask is unchanged, and the mask is the changed pixels with at most their
enclosed gaps filled), `make_scan()`; `generate()` writes a whole set.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.resources
import json
import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Optional, Sequence

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from siad.prompts import describe

FORMAT_VERSION = 1

PHOTO_TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
PROCEDURAL_TEXTURES: tuple[str, ...] = ("woven", "marbled", "grid", "leather", "fibrous", "wood", "perforated")
TEXTURE_KINDS: tuple[str, ...] = PHOTO_TEXTURES + PROCEDURAL_TEXTURES
OBJECT_KINDS: tuple[str, ...] = (
    "hex_nut", "washer", "screw", "pill_round", "button",
    "connector", "capsule", "gear", "bracket",
)
# The zero-shot split: no class (and no kind of part or texture) of TEST_CLASSES is in TRAIN_CLASSES.
TRAIN_CLASSES: tuple[str, ...] = (
    "brick", "grass", "woven", "marbled", "grid", "leather",
    "hex_nut", "washer", "screw", "pill_round", "button",
)
TEST_CLASSES: tuple[str, ...] = (
    "gravel", "fibrous", "wood", "perforated",
    "connector", "capsule", "gear", "bracket",
)
DEFECT_KINDS: tuple[str, ...] = (
    "scratch", "crack", "hole", "stain", "color_shift", "missing", "warp", "contamination",
)
MEDICAL_CLASS = "brain"

# Counts of the default set ("some hundreds of images") and of a reduced set for tests: `generate(out,
# seed, **SMALL)`.
DEFAULTS: Mapping[str, int] = MappingProxyType(
    {"n_train": 20, "n_test_good": 12, "n_test_defect": 16, "n_medical": 60, "size": 256}
)
SMALL: Mapping[str, int] = MappingProxyType(
    {"n_train": 2, "n_test_good": 1, "n_test_defect": 8, "n_medical": 4, "size": 128}
)

# A changed pixel differs from the original by more than this (max over channels, in 0..255 levels);
# smaller changes are put back, so that the mask is the visible change.
CHANGE_TOLERANCE = 8
# A defect is kept only if its changed pixels differ from the original by at least this much on average.
MIN_CONTRAST = 18.0
MIN_SIZE = 64
MAX_SIZE = 1024

_OWN_OUTPUTS: tuple[str, ...] = ("train", "test", "medical", "medical_train", "synth.json", "README.md")


class SynthError(RuntimeError):
    """The output folder cannot be used (not writable, or holds something else)."""


@dataclass(frozen=True)
class ObjectScene:
    """A drawn part on its background.

    image: H x W x 3 uint8; foreground: H x W bool (the part's pixels); background: H x W x 3 uint8,
    the same scene (lighting, shadow, sensor noise) without the part: what a missing piece reveals.
    """

    image: np.ndarray
    foreground: np.ndarray
    background: np.ndarray


# --------------------------------------------------------------------------------------------------
# Random numbers, noise, colour


def rng_for(seed: int, key: str) -> np.random.Generator:
    """The generator of one item: seeded from `seed` and a stable hash of `key` (e.g. its path)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    words = np.frombuffer(hashlib.sha256(key.encode("utf-8")).digest()[:16], dtype="<u4")
    return np.random.default_rng(np.random.SeedSequence([int(seed), *(int(w) for w in words)]))


def _check_size(size: int) -> int:
    if not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}")
    return int(size)


def _noise(rng: np.random.Generator, shape: tuple[int, int], cells: int | tuple[int, int]) -> np.ndarray:
    """A smooth random field (float32, zero mean, unit std) with about `cells` features across
    (per axis when a pair (rows, cols) is given)."""
    cy, cx = (cells, cells) if isinstance(cells, (int, np.integer)) else cells
    grid = rng.standard_normal((max(int(cy), 1) + 1, max(int(cx), 1) + 1)).astype(np.float32)
    field = cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def _fbm(rng: np.random.Generator, shape: tuple[int, int], cells: int, octaves: int,
         persistence: float = 0.5) -> np.ndarray:
    """Fractal noise: `octaves` fields of doubling detail, zero mean, unit std."""
    total = np.zeros(shape, np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        total += amplitude * _noise(rng, shape, min(cells * 2 ** octave, max(shape) // 2))
        amplitude *= persistence
    total -= total.mean()
    return total / max(float(total.std()), 1e-6)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (y, x), float32."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return y, x


def _tint(gray: np.ndarray, dark: Sequence[float], light: Sequence[float]) -> np.ndarray:
    """Map gray values (about 0..1) to colours between `dark` and `light` (H x W x 3 float32)."""
    d = np.asarray(dark, np.float32)
    l_ = np.asarray(light, np.float32)
    return d + gray[..., None].astype(np.float32) * (l_ - d)


def _jitter(rng: np.random.Generator, colour: Sequence[float], amount: float) -> np.ndarray:
    """A colour with a common brightness change and a small per-channel change."""
    c = np.asarray(colour, np.float32)
    return c * rng.uniform(1 - amount, 1 + amount) + rng.normal(0, 2.0, 3).astype(np.float32)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _aa(points: np.ndarray) -> np.ndarray:
    """Float pixel coordinates to OpenCV's fixed point with 4 fractional bits (shift=4)."""
    return np.rint(np.asarray(points, np.float64) * 16).astype(np.int32)


def _fill_polygon(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """An anti-aliased filled polygon as float32 coverage 0..1."""
    canvas = np.zeros(shape, np.uint8)
    cv2.fillPoly(canvas, [_aa(points).reshape(-1, 1, 2)], 255, cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def _fill_ellipse(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float,
                  angle_deg: float = 0.0) -> np.ndarray:
    """An anti-aliased filled ellipse as float32 coverage 0..1."""
    canvas = np.zeros(shape, np.uint8)
    centre = (int(round(cx * 16)), int(round(cy * 16)))
    axes = (max(int(round(rx * 16)), 1), max(int(round(ry * 16)), 1))
    cv2.ellipse(canvas, centre, axes, float(angle_deg), 0, 360, 255, -1, cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def _polyline(shape: tuple[int, int], points: np.ndarray, thickness: int) -> np.ndarray:
    """An anti-aliased open polyline as float32 coverage 0..1."""
    canvas = np.zeros(shape, np.uint8)
    cv2.polylines(canvas, [_aa(points).reshape(-1, 1, 2)], False, 255, max(int(thickness), 1),
                  cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def _text(shape: tuple[int, int], text: str, cy: float, cx: float, height: float, angle_deg: float,
          thickness: float) -> np.ndarray:
    """Printed text centred at (cy, cx), `height` pixels tall, rotated, as float32 coverage 0..1."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (_, h1), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = 4.0 * height / max(h1, 1)  # drawn 4x larger, then scaled down (smoother strokes)
    thick = max(int(round(4.0 * thickness)), 1)
    (w, h), base = cv2.getTextSize(text, font, scale, thick)
    pad = thick + 4
    local = np.zeros((h + base + 2 * pad, w + 2 * pad), np.uint8)
    cv2.putText(local, text, (pad, pad + h), font, scale, 255, thick, cv2.LINE_AA)
    small = cv2.resize(local, (max(local.shape[1] // 4, 1), max(local.shape[0] // 4, 1)), interpolation=cv2.INTER_AREA)
    lc = ((small.shape[1] - 1) / 2.0, (pad + h / 2.0) / 4.0)
    matrix = cv2.getRotationMatrix2D(lc, float(angle_deg), 1.0)
    matrix[0, 2] += cx - lc[0]
    matrix[1, 2] += cy - lc[1]
    out = cv2.warpAffine(small, matrix, (shape[1], shape[0]), flags=cv2.INTER_LINEAR)
    return out.astype(np.float32) / 255.0


# --------------------------------------------------------------------------------------------------
# Textures


def _bundled_gray(filename: str) -> np.ndarray:
    """A photograph shipped inside the scikit-image package, as float32 gray 0..1 (never downloaded)."""
    path = importlib.resources.files("skimage").joinpath("data", filename)
    if not path.is_file():
        raise FileNotFoundError(
            f"scikit-image's bundled image {filename!r} is not in this installation; SIAD-Synth reads only "
            "the images that ship inside the scikit-image package and never downloads"
        )
    with path.open("rb") as handle, Image.open(handle) as image:
        return np.asarray(image.convert("L"), np.float32) / 255.0


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


# --------------------------------------------------------------------------------------------------
# Objects


@dataclass(frozen=True)
class _Pose:
    """Where a part lies: centre (pixels), rotation (radians) and unit length (pixels per model unit)."""

    cy: float
    cx: float
    angle: float
    unit: float

    def place(self, points: np.ndarray) -> np.ndarray:
        """Model coordinates (N x 2, x then y, in units) to image pixels (x, y)."""
        p = np.asarray(points, np.float64) * self.unit
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.stack([self.cx + p[:, 0] * c - p[:, 1] * s, self.cy + p[:, 0] * s + p[:, 1] * c], axis=1)

    def point(self, x: float, y: float) -> tuple[float, float]:
        """One model point to image (y, x)."""
        q = self.place(np.array([[x, y]]))[0]
        return float(q[1]), float(q[0])


def _pose(rng: np.random.Generator, size: int, extent: float, *, max_angle: float = 180.0) -> _Pose:
    """A random pose for a part whose model radius is `extent` units (1 unit = size/256 pixels)."""
    unit = size / 256.0 * rng.uniform(0.95, 1.05)
    room = max(size / 2.0 - extent * unit - 0.04 * size, 0.0)
    shift = min(room, 0.08 * size)
    return _Pose(cy=size / 2.0 + rng.uniform(-shift, shift), cx=size / 2.0 + rng.uniform(-shift, shift),
                 angle=math.radians(rng.uniform(-max_angle, max_angle)), unit=unit)


def _circle(shape: tuple[int, int], pose: _Pose, x: float, y: float, r: float, ry: Optional[float] = None) -> np.ndarray:
    cy, cx = pose.point(x, y)
    return _fill_ellipse(shape, cy, cx, (ry if ry is not None else r) * pose.unit, r * pose.unit,
                         math.degrees(pose.angle))


def _rect(shape: tuple[int, int], pose: _Pose, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return _fill_polygon(shape, pose.place(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])))


def _bevel_height(alpha: np.ndarray, width: float, *, dome: bool = False) -> np.ndarray:
    """A height map (0..1) rising over `width` pixels from the part's edge (a dome profile if asked)."""
    inside = (alpha > 0.5).astype(np.uint8)
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    t = np.clip(distance / max(width, 1e-3), 0, 1)
    height = np.sqrt(1 - (1 - t) ** 2) if dome else t * t * (3 - 2 * t)
    return cv2.GaussianBlur(height.astype(np.float32), (0, 0), 0.8)


def _shade(height: np.ndarray, relief: float, light: np.ndarray, shininess: float) -> tuple[np.ndarray, np.ndarray]:
    """Lambert shading (1 on a flat face) and a specular term for a height map scaled by `relief` px."""
    hy, hx = np.gradient(height * relief)
    nz = 1.0 / np.sqrt(hx * hx + hy * hy + 1.0)
    nx, ny = -hx * nz, -hy * nz
    diffuse = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, None) / light[2]
    half = light + np.array([0.0, 0.0, 1.0])
    half = half / np.linalg.norm(half)
    specular = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0, None) ** shininess if shininess > 0 else 0 * nz
    return diffuse.astype(np.float32), specular.astype(np.float32)


def _light(rng: np.random.Generator) -> np.ndarray:
    """A light direction from the upper left, varied."""
    azimuth = math.radians(rng.uniform(200.0, 250.0))
    elevation = math.radians(rng.uniform(50.0, 65.0))
    return np.array([math.cos(azimuth) * math.cos(elevation), math.sin(azimuth) * math.cos(elevation),
                     math.sin(elevation)])


def _background(rng: np.random.Generator, size: int, colour: Sequence[float], texture: float = 0.01) -> np.ndarray:
    """A plain surface: colour, a lighting gradient, faint mottling."""
    y, x = _grid(size)
    a = rng.uniform(0, 2 * math.pi)
    gradient = 1.0 + rng.uniform(0.02, 0.07) * ((x * math.cos(a) + y * math.sin(a)) / size - 0.5)
    mottle = 1.0 + texture * _noise(rng, (size, size), 5)
    return _jitter(rng, colour, 0.05)[None, None, :] * (gradient * mottle)[..., None]


def _compose(rng: np.random.Generator, background: np.ndarray, colour: np.ndarray, alpha: np.ndarray,
             light: np.ndarray, shadow: float = 0.35) -> ObjectScene:
    """Cast the part's soft shadow on the background, lay the part over it, add sensor noise."""
    size = alpha.shape[0]
    offset = 0.02 * size
    matrix = np.float32([[1, 0, -light[0] * offset], [0, 1, -light[1] * offset]])
    cast = cv2.warpAffine(alpha, matrix, (size, size))
    cast = cv2.GaussianBlur(cast, (0, 0), 0.015 * size + 1.0)
    ground = background * (1.0 - shadow * cast)[..., None]
    image = ground * (1.0 - alpha[..., None]) + colour * alpha[..., None]
    noise = rng.normal(0.0, 2.0, image.shape).astype(np.float32)
    return ObjectScene(image=_to_uint8(image + noise), foreground=alpha > 0.5,
                       background=_to_uint8(ground + noise))


def _surface(colour: np.ndarray, diffuse: np.ndarray, specular: np.ndarray, *, ambient: float,
             gloss: float) -> np.ndarray:
    """Per-pixel colour (H x W x 3 or 3) lit by the shading terms."""
    light = ambient + (1.0 - ambient) * diffuse
    return colour * light[..., None] + 255.0 * gloss * specular[..., None]


def _hex_nut(rng: np.random.Generator, size: int) -> ObjectScene:
    shape = (size, size)
    pose = _pose(rng, size, 80)
    corners = np.array([[78 * math.cos(k * math.pi / 3), 78 * math.sin(k * math.pi / 3)] for k in range(6)])
    alpha = _fill_polygon(shape, pose.place(corners)) * _circle(shape, pose, 0, 0, 75)
    alpha = alpha * (1.0 - _circle(shape, pose, 0, 0, 31))
    light = _light(rng)
    height = _bevel_height(alpha, 6 * pose.unit)
    diffuse, specular = _shade(height, 6 * pose.unit, light, 30.0)
    steel = _jitter(rng, (150, 152, 158), 0.06)
    ring = _circle(shape, pose, 0, 0, 68) - _circle(shape, pose, 0, 0, 66)
    thread = _circle(shape, pose, 0, 0, 36) - _circle(shape, pose, 0, 0, 31)
    brushed = 1.0 + 0.03 * _noise(rng, shape, (size // 3, size // 3))
    base = steel[None, None, :] * (brushed * (1 - 0.25 * ring - 0.35 * thread))[..., None]
    colour = _surface(base, diffuse, specular, ambient=0.45, gloss=0.25)
    return _compose(rng, _background(rng, size, (46, 48, 53)), colour, alpha, light)


def _washer(rng: np.random.Generator, size: int) -> ObjectScene:
    shape = (size, size)
    pose = _pose(rng, size, 80)
    tilt = rng.uniform(0.92, 1.0)
    alpha = _circle(shape, pose, 0, 0, 78, 78 * tilt) * (1 - _circle(shape, pose, 0, 0, 32, 32 * tilt))
    light = _light(rng)
    height = _bevel_height(alpha, 3 * pose.unit)
    diffuse, specular = _shade(height, 3 * pose.unit, light, 20.0)
    y, x = _grid(size)
    r = np.sqrt((y - pose.cy) ** 2 + (x - pose.cx) ** 2) / pose.unit
    machining = 1.0 + 0.035 * np.sin(2 * np.pi * r / 2.6) + 0.02 * _noise(rng, shape, 8)
    brass = _jitter(rng, (200, 165, 92), 0.05)
    colour = _surface(brass[None, None, :] * machining[..., None], diffuse, specular, ambient=0.5, gloss=0.3)
    return _compose(rng, _background(rng, size, (188, 188, 182)), colour, alpha, light)


def _screw(rng: np.random.Generator, size: int) -> ObjectScene:
    shape = (size, size)
    pose = _pose(rng, size, 78)
    head = _rect(shape, pose, -76, -20, -58, 20) + _circle(shape, pose, -70, 0, 8, 22)
    shank = _rect(shape, pose, -60, -10, 56, 10)
    tip = _fill_polygon(shape, pose.place(np.array([[55, -10], [77, -1], [77, 1], [55, 10]])))
    alpha = np.clip(head + shank + tip, 0, 1)
    light = _light(rng)
    height = _bevel_height(alpha, 10 * pose.unit, dome=True)
    diffuse, specular = _shade(height, 8 * pose.unit, light, 25.0)
    threads = np.zeros(shape, np.float32)
    for k in range(19):
        x0 = -54 + 6.0 * k
        line = pose.place(np.array([[x0, -10.5], [x0 + 3.5, 10.5]]))
        threads = np.maximum(threads, _polyline(shape, line, max(int(round(1.4 * pose.unit)), 1)))
    threads *= np.clip(shank + tip, 0, 1)
    steel = _jitter(rng, (118, 118, 124), 0.06)
    base = steel[None, None, :] * (1 - 0.45 * threads)[..., None]
    colour = _surface(base, diffuse, specular, ambient=0.4, gloss=0.3)
    return _compose(rng, _background(rng, size, (226, 226, 220)), colour, alpha, light)


def _pill_round(rng: np.random.Generator, size: int) -> ObjectScene:
    shape = (size, size)
    pose = _pose(rng, size, 80)
    alpha = _circle(shape, pose, 0, 0, 78, 78 * rng.uniform(0.96, 1.0))
    light = _light(rng)
    height = _bevel_height(alpha, 30 * pose.unit, dome=True)
    diffuse, specular = _shade(height, 10 * pose.unit, light, 12.0)
    specks = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(25, 45))):
        r = 66 * math.sqrt(rng.random())
        t = rng.uniform(0, 2 * math.pi)
        specks = np.maximum(specks, _circle(shape, pose, r * math.cos(t), r * math.sin(t), rng.uniform(0.8, 1.7)))
    cy, cx = pose.point(0, 0)
    printed = _text(shape, "SD", cy, cx, 30 * pose.unit, -math.degrees(pose.angle), 2.2 * pose.unit)
    white = _jitter(rng, (236, 233, 226), 0.03)
    base = np.broadcast_to(white, (size, size, 3)).astype(np.float32)
    base = base + (np.array([172, 52, 44], np.float32) - base) * (0.75 * specks)[..., None]
    base = base + (np.array([120, 44, 40], np.float32) - base) * (0.85 * printed)[..., None]
    colour = _surface(base, diffuse, specular, ambient=0.55, gloss=0.12)
    return _compose(rng, _background(rng, size, (40, 45, 56)), colour, alpha, light)


def _button(rng: np.random.Generator, size: int) -> ObjectScene:
    shape = (size, size)
    pose = _pose(rng, size, 80)
    alpha = _circle(shape, pose, 0, 0, 78)
    for hx, hy in ((-16, -16), (16, -16), (-16, 16), (16, 16)):
        alpha = alpha * (1 - _circle(shape, pose, hx, hy, 7.5))
    rim = _circle(shape, pose, 0, 0, 78) - _circle(shape, pose, 0, 0, 60)
    light = _light(rng)
    height = _bevel_height(alpha, 5 * pose.unit) * (0.55 + 0.45 * cv2.GaussianBlur(rim, (0, 0), 2.0 * pose.unit))
    diffuse, specular = _shade(height, 10 * pose.unit, light, 40.0)
    plastic = _jitter(rng, (168, 62, 52), 0.05)
    base = plastic[None, None, :] * (1 + 0.02 * _noise(rng, shape, 10))[..., None]
    colour = _surface(base, diffuse, specular, ambient=0.45, gloss=0.35)
    return _compose(rng, _background(rng, size, (204, 190, 164), texture=0.025), colour, alpha, light)


def _connector(rng: np.random.Generator, size: int) -> ObjectScene:
    shape = (size, size)
    pose = _pose(rng, size, 88, max_angle=12.0)
    body = _rect(shape, pose, -75, -38, 75, 30)
    latch = _rect(shape, pose, -18, -48, 18, -36)
    pins = np.zeros(shape, np.float32)
    for k in range(6):
        x0 = -55 + 22 * k
        pins = np.maximum(pins, _rect(shape, pose, x0 - 4, 28, x0 + 4, 56))
    alpha = np.clip(body + latch + pins, 0, 1)
    light = _light(rng)
    plastic = np.clip(body + latch, 0, 1)
    height = np.maximum(_bevel_height(plastic, 5 * pose.unit), 0.6 * _bevel_height(pins * (1 - plastic), 4 * pose.unit, dome=True))
    diffuse, specular = _shade(height, 6 * pose.unit, light, 30.0)
    cy, cx = pose.point(0, -4)
    printed = _text(shape, "J12", cy, cx, 24 * pose.unit, -math.degrees(pose.angle), 2.0 * pose.unit)
    black = _jitter(rng, (38, 38, 42), 0.08)
    gold = _jitter(rng, (208, 172, 84), 0.05)
    metal = (pins * (1 - plastic))[..., None]
    base = black[None, None, :] * (1 - metal) + gold[None, None, :] * metal
    base = base + (np.array([225, 225, 222], np.float32) - base) * (0.9 * printed * plastic)[..., None]
    colour = _surface(base, diffuse, specular, ambient=0.5, gloss=0.25)
    return _compose(rng, _background(rng, size, (176, 186, 198)), colour, alpha, light)


def _capsule(rng: np.random.Generator, size: int) -> ObjectScene:
    shape = (size, size)
    pose = _pose(rng, size, 82)
    left = _rect(shape, pose, -52, -28, 0.5, 28) + _circle(shape, pose, -52, 0, 28)
    right = _rect(shape, pose, -0.5, -28, 52, 28) + _circle(shape, pose, 52, 0, 28)
    left, right = np.clip(left, 0, 1), np.clip(right, 0, 1)
    alpha = np.clip(left + right, 0, 1)
    light = _light(rng)
    height = _bevel_height(alpha, 28 * pose.unit, dome=True)
    diffuse, specular = _shade(height, 14 * pose.unit, light, 40.0)
    seam = _polyline(shape, pose.place(np.array([[0, -28], [0, 28]])), max(int(round(1.5 * pose.unit)), 1))
    cy, cx = pose.point(26, 0)
    printed = _text(shape, "500", cy, cx, 20 * pose.unit, -math.degrees(pose.angle), 1.8 * pose.unit)
    black = _jitter(rng, (34, 32, 34), 0.08)
    orange = _jitter(rng, (228, 122, 34), 0.05)
    w = (right / np.maximum(left + right, 1e-6))[..., None]
    base = black[None, None, :] * (1 - w) + orange[None, None, :] * w
    base = base * (1 - 0.4 * seam)[..., None]
    base = base + (np.array([40, 28, 24], np.float32) - base) * (0.9 * printed * right)[..., None]
    colour = _surface(base, diffuse, specular, ambient=0.5, gloss=0.35)
    return _compose(rng, _background(rng, size, (230, 230, 228)), colour, alpha, light)


def _gear(rng: np.random.Generator, size: int) -> ObjectScene:
    shape = (size, size)
    pose = _pose(rng, size, 82)
    teeth, root, tip = 14, 66.0, 80.0
    outline = []
    for k in range(teeth):
        t = 2 * math.pi * k / teeth
        step = 2 * math.pi / teeth
        for frac, r in ((0.0, root), (0.18, root), (0.30, tip), (0.62, tip), (0.74, root)):
            a = t + frac * step
            outline.append([r * math.cos(a), r * math.sin(a)])
    alpha = _fill_polygon(shape, pose.place(np.array(outline)))
    alpha = alpha * (1 - _circle(shape, pose, 0, 0, 14))
    for k in range(5):
        a = 2 * math.pi * k / 5
        alpha = alpha * (1 - _circle(shape, pose, 40 * math.cos(a), 40 * math.sin(a), 10))
    light = _light(rng)
    height = _bevel_height(alpha, 4 * pose.unit)
    diffuse, specular = _shade(height, 5 * pose.unit, light, 30.0)
    hub = _circle(shape, pose, 0, 0, 24) - _circle(shape, pose, 0, 0, 22)
    steel = _jitter(rng, (168, 168, 174), 0.05)
    base = steel[None, None, :] * ((1 - 0.3 * hub) * (1 + 0.025 * _noise(rng, shape, size // 4)))[..., None]
    colour = _surface(base, diffuse, specular, ambient=0.45, gloss=0.3)
    return _compose(rng, _background(rng, size, (50, 56, 66)), colour, alpha, light)


def _bracket(rng: np.random.Generator, size: int) -> ObjectScene:
    shape = (size, size)
    pose = _pose(rng, size, 82)
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    outline = np.array([[-60, -75], [-16, -75], [-16, 32], [70, 32], [70, 75], [-60, 75]], np.float64)
    outline[:, 0] *= mirror
    alpha = _fill_polygon(shape, pose.place(outline))
    for hx, hy in ((-38, -45), (20, 54), (48, 54)):
        alpha = alpha * (1 - _circle(shape, pose, mirror * hx, hy, 8))
    light = _light(rng)
    height = _bevel_height(alpha, 4 * pose.unit)
    diffuse, specular = _shade(height, 4 * pose.unit, light, 8.0)
    brown = _jitter(rng, (122, 76, 46), 0.06)
    base = brown[None, None, :] * (1 + 0.04 * _noise(rng, shape, size // 5))[..., None]
    colour = _surface(base, diffuse, specular, ambient=0.5, gloss=0.08)
    return _compose(rng, _background(rng, size, (206, 206, 200)), colour, alpha, light)


_OBJECTS: Mapping[str, Callable[[np.random.Generator, int], ObjectScene]] = MappingProxyType({
    "hex_nut": _hex_nut, "washer": _washer, "screw": _screw, "pill_round": _pill_round, "button": _button,
    "connector": _connector, "capsule": _capsule, "gear": _gear, "bracket": _bracket,
})


def make_object(kind: str, rng: np.random.Generator, size: int = 256) -> ObjectScene:
    """A normal part of `kind` (one of `OBJECT_KINDS`) on a plain background, with shading, shadow and
    print, at a random position, rotation, scale and lighting: an `ObjectScene`."""
    size = _check_size(size)
    if kind not in _OBJECTS:
        raise ValueError(f"unknown object kind {kind!r}; expected one of {OBJECT_KINDS}")
    return _OBJECTS[kind](rng, size)


# --------------------------------------------------------------------------------------------------
# Defects


def _pick(rng: np.random.Generator, allowed: np.ndarray) -> tuple[float, float]:
    """A random point (y, x) among the set pixels of `allowed`."""
    ys, xs = np.nonzero(allowed)
    i = int(rng.integers(len(ys)))
    return float(ys[i]) + rng.uniform(-0.5, 0.5), float(xs[i]) + rng.uniform(-0.5, 0.5)


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


def _edge(mask: np.ndarray) -> np.ndarray:
    """The inner boundary pixels of a mask."""
    return mask & ~_erode(mask, 1)


def _blob(rng: np.random.Generator, shape: tuple[int, int], cy: float, cx: float, radius: float,
          irregularity: float = 0.3, vertices: int = 32) -> np.ndarray:
    """An irregular, roughly elliptic filled shape (float coverage 0..1)."""
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    wobble = np.zeros_like(t)
    for harmonic in range(2, 6):
        wobble += rng.uniform(0, 1) / harmonic * np.cos(harmonic * t + rng.uniform(0, 2 * np.pi))
    r = radius * (1 + irregularity * wobble)
    aspect = rng.uniform(0.55, 1.0)
    a = rng.uniform(0, np.pi)
    px, py = r * np.cos(t), r * np.sin(t) * aspect
    points = np.stack([cx + px * math.cos(a) - py * math.sin(a), cy + px * math.sin(a) + py * math.cos(a)], 1)
    return _fill_polygon(shape, points)


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


# --------------------------------------------------------------------------------------------------
# Medical-like scans


def _phantom() -> np.ndarray:
    return _bundled_gray("phantom.png")


def make_scan(rng: np.random.Generator, size: int = 256, *, lesion: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A grayscale brain-like scan (size x size uint8) made from scikit-image's Shepp-Logan phantom:
    random pose and elastic deformation, MRI-like tissue contrasts, folds, bias field and noise.

    With `lesion`, a lesion-like anomaly (a bright mass with a halo, sometimes a dark core, or a dark
    infarct-like area) lies inside the brain. Returns (scan, lesion mask bool; empty without lesion).
    The files hold labels only; the mask is for tests.
    """
    size = _check_size(size)
    base = _phantom()
    levels = np.rint(base * 10).astype(np.int8)  # 0, 1, 2, 3, 4, 10 (tenths of the phantom's levels)
    head = ndimage.binary_fill_holes(levels > 0)
    tissue = {0: rng.uniform(0.10, 0.2), 1: rng.uniform(0.30, 0.4), 2: rng.uniform(0.45, 0.55),
              3: rng.uniform(0.58, 0.68), 4: rng.uniform(0.7, 0.8), 10: rng.uniform(0.75, 0.95)}
    mri = np.zeros(base.shape, np.float32)
    for level, value in tissue.items():
        mri[levels == level] = value
    mri[~head] = 0.0
    brain = head & (levels != 10)
    matter = levels == 2  # the main brain tissue, where lesions go
    # pose, aspect and elastic deformation, onto the output grid
    n = base.shape[0]
    angle = rng.uniform(-12, 12)
    scale = size / n * rng.uniform(0.88, 1.0)
    matrix = cv2.getRotationMatrix2D((n / 2, n / 2), angle, scale)
    matrix[0, 0] *= rng.uniform(0.92, 1.05)
    matrix[0, 2] += size / 2 - n / 2 + rng.uniform(-0.03, 0.03) * size
    matrix[1, 2] += size / 2 - n / 2 + rng.uniform(-0.03, 0.03) * size
    inverse = cv2.invertAffineTransform(matrix)
    y, x = _grid(size)
    amplitude = 0.012 * size
    ex = x + amplitude * _noise(rng, (size, size), 4)
    ey = y + amplitude * _noise(rng, (size, size), 4)
    map_x = (inverse[0, 0] * ex + inverse[0, 1] * ey + inverse[0, 2]).astype(np.float32)
    map_y = (inverse[1, 0] * ex + inverse[1, 1] * ey + inverse[1, 2]).astype(np.float32)
    image = cv2.remap(mri, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    brain_mask = cv2.remap(brain.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR) > 0.5
    parenchyma = brain_mask & (image > 0.4)
    matter_mask = cv2.remap(matter.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR) > 0.5
    # cortical folds: dark sulci along the zero lines of a fractal field, inside the brain
    folds = np.exp(-((_fbm(rng, (size, size), 9, 3) / 0.16) ** 2))
    image = image - 0.16 * folds * parenchyma + 0.025 * _noise(rng, (size, size), size // 6) * brain_mask
    mask = np.zeros((size, size), bool)
    if lesion:
        core = _erode(matter_mask, max(int(0.06 * size), 2))
        cy, cx = _pick(rng, core if core.any() else brain_mask)
        radius = rng.uniform(0.045, 0.11) * size
        shape_ = _blob(rng, (size, size), cy, cx, radius, irregularity=0.35)
        soft = cv2.GaussianBlur(shape_, (0, 0), 0.12 * radius + 0.5)
        texture = 1 + 0.15 * _noise(rng, (size, size), max(int(size / radius), 2) * 2)
        if rng.random() < 0.7:  # a bright mass with a faint halo, sometimes a dark necrotic core
            halo = cv2.GaussianBlur(shape_, (0, 0), 0.6 * radius) * 1.6
            image = image + 0.08 * np.clip(halo, 0, 1) + rng.uniform(0.25, 0.4) * soft * texture
            if rng.random() < 0.4:
                necrosis = _blob(rng, (size, size), cy, cx, 0.45 * radius, irregularity=0.3)
                image = image - 0.45 * cv2.GaussianBlur(necrosis, (0, 0), 1.0)
        else:  # a dark infarct-like area
            image = image - rng.uniform(0.22, 0.32) * soft * texture
        mask = shape_ > 0.5
    bias = 1 + 0.12 * _noise(rng, (size, size), 2)
    sigma = rng.uniform(0.015, 0.035)
    real = image * bias + rng.normal(0, sigma, image.shape)
    imaginary = rng.normal(0, sigma, image.shape)
    image = np.sqrt(real * real + imaginary * imaginary)  # Rician noise, as in magnitude MR images
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.6)
    return _to_uint8(image * 255 * rng.uniform(0.9, 1.05)), mask


# --------------------------------------------------------------------------------------------------
# Writing a set


def class_type(name: str) -> str:
    """'texture' or 'object'."""
    if name in TEXTURE_KINDS:
        return "texture"
    if name in OBJECT_KINDS:
        return "object"
    raise ValueError(f"unknown class {name!r}")


def make_normal(name: str, rng: np.random.Generator, size: int = 256) -> ObjectScene:
    """A normal image of any class of `TEXTURE_KINDS` or `OBJECT_KINDS`, as an `ObjectScene` (for a
    texture, the foreground is the whole image and the background is the image itself)."""
    if class_type(name) == "object":
        return make_object(name, rng, size)
    image = make_texture(name, rng, size)
    return ObjectScene(image=image, foreground=np.ones(image.shape[:2], bool), background=image)


def make_anomalous(name: str, defect: str, rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """An image of class `name` with one defect of kind `defect`: (image uint8, exact mask bool)."""
    scene = make_normal(name, rng, size)
    is_object = class_type(name) == "object"
    return apply_defect(defect, scene.image, rng, region=scene.foreground,
                        background=scene.background if is_object else None)


@dataclass(frozen=True)
class _Job:
    """One image to write: its path (relative to the output), its mask's path, how to make it."""

    image: str
    mask: Optional[str]
    make: Callable[[np.random.Generator], tuple[np.ndarray, Optional[np.ndarray]]]


def _normal_job(name: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, None]:
    return make_normal(name, rng, size).image, None


def _defect_job(name: str, defect: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return make_anomalous(name, defect, rng, size)


def _scan_job(size: int, lesion: bool, rng: np.random.Generator) -> tuple[np.ndarray, None]:
    return make_scan(rng, size, lesion=lesion)[0], None


def _class_jobs(split: str, name: str, index: int, size: int, n_train: int, n_good: int,
                n_defect: int) -> list[_Job]:
    jobs = [_Job(f"{split}/{name}/train/good/{i:03d}.png", None, partial(_normal_job, name, size))
            for i in range(n_train)]
    jobs += [_Job(f"{split}/{name}/test/good/{i:03d}.png", None, partial(_normal_job, name, size))
             for i in range(n_good)]
    counters: dict[str, int] = {}
    for i in range(n_defect):
        defect = DEFECT_KINDS[(i + index) % len(DEFECT_KINDS)]
        k = counters.get(defect, 0)
        counters[defect] = k + 1
        jobs.append(_Job(f"{split}/{name}/test/{defect}/{k:03d}.png",
                         f"{split}/{name}/ground_truth/{defect}/{k:03d}_mask.png",
                         partial(_defect_job, name, defect, size)))
    return jobs


def plan(*, n_train: int, n_test_good: int, n_test_defect: int, n_medical: int, size: int) -> list[_Job]:
    """Every image of a set, in a fixed order.

    Training classes: n_train normals, ceil(n_test_good / 4) test normals and ceil(n_test_defect / 4)
    defects. Test classes: ceil(n_train / 2) normals in train/good, n_test_good test normals and
    n_test_defect defects, the kinds taken in turn from DEFECT_KINDS (all of them once n_test_defect >= 8).
    Medical: n_medical scans (half with a lesion) and a training set of ceil(n_medical / 2) normal and
    ceil(n_medical / 4) lesion scans.
    """
    for label, value in (("n_train", n_train), ("n_test_good", n_test_good), ("n_test_defect", n_test_defect),
                         ("n_medical", n_medical)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{label} must be a non-negative integer, got {value!r}")
    size = _check_size(size)
    jobs: list[_Job] = []
    for index, name in enumerate(TRAIN_CLASSES):
        jobs += _class_jobs("train", name, index, size, n_train, -(-n_test_good // 4), -(-n_test_defect // 4))
    for index, name in enumerate(TEST_CLASSES):
        jobs += _class_jobs("test", name, index, size, -(-n_train // 2), n_test_good, n_test_defect)
    medical = (("medical", n_medical // 2, n_medical - n_medical // 2),
               ("medical_train", -(-n_medical // 4), -(-n_medical // 2)))
    for folder, n_yes, n_no in medical:
        jobs += [_Job(f"{folder}/yes/{i:03d}.png", None, partial(_scan_job, size, True)) for i in range(n_yes)]
        jobs += [_Job(f"{folder}/no/{i:03d}.png", None, partial(_scan_job, size, False)) for i in range(n_no)]
    return jobs


def _save_png(path: Path, array: np.ndarray) -> None:
    """Write a PNG with fixed options (no timestamps), so that the bytes depend only on the pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def prepare_output(out: Path, *, overwrite: bool = False) -> Path:
    """Check that `out` can take a set: create it, test that it is writable, and refuse a non-empty folder
    unless `overwrite` (then only a former SIAD-Synth output, recognised by its synth.json, is replaced:
    its own subfolders and files are removed first). Raises SynthError with a clear message."""
    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise SynthError(f"cannot write to output folder '{out}': {error.strerror or error}") from error
    if any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"output folder '{out}' is not empty; choose an empty folder or pass overwrite "
                             "(--overwrite) to replace a former SIAD-Synth set")
        if not (out / "synth.json").is_file():
            raise SynthError(f"output folder '{out}' is not empty and holds no synth.json: refusing to "
                             "overwrite something that is not a SIAD-Synth set")
        for name in _OWN_OUTPUTS:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    return out


def _meta(jobs: list[_Job], split: str) -> dict:
    """The zero-shot repositories' meta.json (DESIGN 4) of DIR/<split>, paths relative to it."""
    meta: dict[str, dict[str, list[dict]]] = {"train": {}, "test": {}}
    for job in jobs:
        parts = job.image.split("/")
        if parts[0] != split:
            continue
        name, phase, specie = parts[1], parts[2], parts[3]
        meta[phase].setdefault(name, []).append({
            "img_path": "/".join(parts[1:]),
            "mask_path": "/".join(job.mask.split("/")[1:]) if job.mask else "",
            "cls_name": name,
            "specie_name": specie,
            "anomaly": 0 if specie == "good" else 1,
        })
    return meta


def _summary(jobs: list[_Job], seed: int, size: int, settings: Mapping[str, int]) -> dict:
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for job in jobs:
        parts = job.image.split("/")
        folder = "/".join(parts[2:-1]) if parts[0] in ("train", "test") else parts[1]
        group = counts.setdefault(parts[0], {})
        key = parts[1] if parts[0] in ("train", "test") else MEDICAL_CLASS
        group.setdefault(key, {})
        group[key][folder] = group[key].get(folder, 0) + 1
    classes = {
        name: {"split": split, "type": class_type(name), "description": describe(name),
               "source": ("scikit-image bundled photograph" if name in PHOTO_TEXTURES else "procedural (numpy)")}
        for split, names in (("train", TRAIN_CLASSES), ("test", TEST_CLASSES)) for name in names
    }
    return {
        "generator": "siad.data.synth",
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "image_size": [size, size],
        "settings": dict(settings),
        "split": {"train": list(TRAIN_CLASSES), "test": list(TEST_CLASSES), "medical": [MEDICAL_CLASS]},
        "classes": classes,
        "defect_kinds": list(DEFECT_KINDS),
        "medical": {"class": MEDICAL_CLASS, "description": describe(MEDICAL_CLASS, "brainmri"),
                    "source": "scikit-image Shepp-Logan phantom, deformed; lesion-like anomalies; labels only"},
        "counts": counts,
        "total_images": len(jobs),
        "total_masks": sum(1 for job in jobs if job.mask),
    }


def _readme(summary: Mapping) -> str:
    lines = [
        "# SIAD-Synth",
        "",
        f"Made by `python -m siad.data.synth` (format {summary['format_version']}), seed {summary['seed']}, "
        f"{summary['image_size'][0]} x {summary['image_size'][1]} px: {summary['total_images']} images, "
        f"{summary['total_masks']} masks. Nothing was downloaded.",
        "",
        "- `train/<class>/`: training classes (MVTec layout): " + ", ".join(summary["split"]["train"]) + ".",
        "- `test/<class>/`: unseen test classes (MVTec layout, drawn defects, exact masks in "
        "`ground_truth/<defect>/NNN_mask.png`): " + ", ".join(summary["split"]["test"]) + ".",
        "- `medical/{yes,no}/`, `medical_train/{yes,no}/`: grayscale brain-like scans, image labels only.",
        "- Defect kinds: " + ", ".join(summary["defect_kinds"]) + ".",
        "- `train/meta.json`, `test/meta.json`: the zero-shot index; `synth.json`: classes, split, counts.",
        "",
    ]
    return "\n".join(lines)


def generate(out: Path | str, seed: int = 0, *, n_train: int = DEFAULTS["n_train"],
             n_test_good: int = DEFAULTS["n_test_good"], n_test_defect: int = DEFAULTS["n_test_defect"],
             n_medical: int = DEFAULTS["n_medical"], size: int = DEFAULTS["size"], overwrite: bool = False,
             progress: bool = True) -> dict:
    """Write a SIAD-Synth set under `out` (see the module docstring and `plan()` for what and how many)
    and return its summary, the content of `out/synth.json`. Same seed and settings: same bytes.

    `generate(out, seed, **SMALL)` writes a reduced set for tests.
    """
    settings = {"n_train": n_train, "n_test_good": n_test_good, "n_test_defect": n_test_defect,
                "n_medical": n_medical, "size": size}
    jobs = plan(**settings)
    rng_for(seed, "check")  # validates the seed before anything is written
    root = prepare_output(Path(out), overwrite=overwrite)
    for job in tqdm(jobs, desc="SIAD-Synth", unit="img", disable=not progress, file=sys.stderr):
        image, mask = job.make(rng_for(seed, job.image))
        _save_png(root / job.image, image)
        if job.mask is not None:
            if mask is None or not mask.any():
                raise RuntimeError(f"empty mask for {job.image}")
            _save_png(root / job.mask, mask.astype(np.uint8) * 255)
    summary = _summary(jobs, seed, int(size), settings)
    for split in ("train", "test"):
        meta = _meta(jobs, split)
        if meta["train"] or meta["test"]:
            (root / split / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (root / "synth.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (root / "README.md").write_text(_readme(summary), encoding="utf-8")
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line: `python -m siad.data.synth --out DIR [--seed N] [--small] [--size S] [--overwrite]`."""
    parser = argparse.ArgumentParser(prog="python -m siad.data.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; must be empty)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default 256)")
    parser.add_argument("--small", action="store_true", help="a reduced set (the tests' SMALL counts)")
    parser.add_argument("--overwrite", action="store_true", help="replace a former SIAD-Synth set in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    settings = dict(SMALL if args.small else DEFAULTS)
    if args.size is not None:
        settings["size"] = args.size
    start = time.perf_counter()
    try:
        summary = generate(args.out, args.seed, overwrite=args.overwrite, progress=not args.quiet, **settings)
    except (SynthError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    elapsed = time.perf_counter() - start
    print(f"wrote {summary['total_images']} images and {summary['total_masks']} masks to {args.out} "
          f"in {elapsed:.1f} s (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
