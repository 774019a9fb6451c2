"""What every SIAD-Synth generator shares: per-item random generators, smooth noise, colour,
anti-aliased drawing, the bundled scikit-image pictures, small shape helpers, and the scene type."""

from __future__ import annotations

import hashlib
import importlib.resources
import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

MIN_SIZE = 64
MAX_SIZE = 1024


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


# --------------------------------------------------------------------------------------------------
# Shapes and masks


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
