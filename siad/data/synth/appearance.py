"""What the generator families share: colours and materials, rotated and scaled pattern coordinates,
cellular (Voronoi) fields, relief shading, backdrops for parts, and the camera finish (lighting, colour
cast, exposure, defocus, sensor noise) that every family image goes through.

Everything here draws from the `np.random.Generator` it is given, so an image is a function of its
generator only.
"""

from __future__ import annotations

import colorsys
import math
from typing import Optional, Sequence

import cv2
import numpy as np

from siad.data.synth.common import _fbm, _grid, _jitter, _noise, _to_uint8

# --------------------------------------------------------------------------------------------------
# Colour


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """An RGB colour (float32, 0..255) from hue (turns, wraps), saturation and value (0..1)."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return np.array([r, g, b], np.float32) * 255.0


def any_colour(rng: np.random.Generator, s: tuple[float, float] = (0.2, 0.8),
               v: tuple[float, float] = (0.3, 0.9), hue: Optional[float] = None) -> np.ndarray:
    """A random colour; `hue` (turns) fixes the hue up to a small jitter."""
    h = rng.random() if hue is None else hue + rng.normal(0, 0.02)
    return hsv(h, rng.uniform(*s), rng.uniform(*v))


def palette(rng: np.random.Generator, n: int, *, s: tuple[float, float] = (0.15, 0.75),
            v: tuple[float, float] = (0.25, 0.95)) -> list[np.ndarray]:
    """`n` colours that belong together: analogous, complementary or triadic hues, varied values."""
    base = rng.random()
    scheme = int(rng.integers(3))
    step = (0.06, 0.5, 1 / 3)[scheme]
    values = v[0] + (v[1] - v[0]) * (np.arange(n) + rng.uniform(0.2, 0.8, n)) / n  # spread: distinct values
    colours = []
    for k in range(n):
        h = base + step * (k % 3 if scheme == 2 else k % 2 if scheme == 1 else k) + rng.normal(0, 0.02)
        colours.append(hsv(h, rng.uniform(*s), values[k]))
    order = rng.permutation(n)
    return [colours[i] for i in order]


def two_tone(rng: np.random.Generator, *, contrast: tuple[float, float] = (0.3, 0.7),
             s: tuple[float, float] = (0.05, 0.7)) -> tuple[np.ndarray, np.ndarray]:
    """A dark and a light colour of about one hue: the two ends of a tinted gray texture."""
    h = rng.random()
    sat = rng.uniform(*s)
    light_v = rng.uniform(0.55, 0.97)
    dark_v = max(light_v - rng.uniform(*contrast), 0.04)
    return hsv(h + rng.normal(0, 0.03), sat * rng.uniform(0.8, 1.2), dark_v), hsv(h, sat, light_v)


# name: (colour, ambient, gloss, shininess) of a part's surface
MATERIALS: dict[str, tuple[tuple[float, float, float], float, float, float]] = {
    "steel": ((150, 152, 158), 0.45, 0.30, 30.0),
    "aluminium": ((192, 194, 198), 0.50, 0.25, 20.0),
    "dark_steel": ((72, 74, 80), 0.45, 0.30, 30.0),
    "brass": ((200, 165, 92), 0.50, 0.30, 20.0),
    "copper": ((190, 112, 74), 0.50, 0.30, 20.0),
    "zinc": ((176, 182, 170), 0.50, 0.20, 15.0),
    "rubber": ((38, 38, 40), 0.55, 0.06, 6.0),
    "ceramic": ((232, 230, 222), 0.55, 0.20, 25.0),
    "paper": ((236, 232, 220), 0.70, 0.00, 0.0),
}
METALS: tuple[str, ...] = ("steel", "aluminium", "dark_steel", "brass", "copper", "zinc")


def material(rng: np.random.Generator, name: str) -> tuple[np.ndarray, float, float, float]:
    """A jittered material: (colour, ambient, gloss, shininess). 'plastic' has a random colour."""
    if name == "plastic":
        return any_colour(rng, (0.3, 0.85), (0.25, 0.9)), 0.5, rng.uniform(0.1, 0.35), rng.uniform(15, 45)
    colour, ambient, gloss, shininess = MATERIALS[name]
    return _jitter(rng, colour, 0.07), ambient, gloss * rng.uniform(0.7, 1.3), shininess


# --------------------------------------------------------------------------------------------------
# Coordinates and fields


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def coords(rng: np.random.Generator, size: int, period: float, *, angle: Optional[float] = None,
           max_angle: float = 180.0, warp: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Pattern coordinates (u, v), in periods: the pixel grid rotated (by `angle` degrees, or a random
    angle within +-max_angle), scaled by 1/period, shifted by a random phase, optionally warped by a
    smooth field (`warp` in periods)."""
    y, x = _grid(size)
    a = math.radians(rng.uniform(-max_angle, max_angle) if angle is None else angle)
    u = (x * math.cos(a) + y * math.sin(a)) / period + rng.uniform(0, 8)
    v = (-x * math.sin(a) + y * math.cos(a)) / period + rng.uniform(0, 8)
    if warp > 0:
        u = u + warp * _noise(rng, (size, size), 3)
        v = v + warp * _noise(rng, (size, size), 3)
    return u, v


def voronoi(points: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells of seed points (N x 2, x then y, pixels): (labels 0..N-1 per pixel, distance to the cell's
    seed, distance to the nearest cell border), the distances float32 in pixels."""
    canvas = np.ones((size, size), np.uint8)
    xs = np.clip(np.rint(points[:, 0]).astype(int), 0, size - 1)
    ys = np.clip(np.rint(points[:, 1]).astype(int), 0, size - 1)
    canvas[ys, xs] = 0
    to_seed, labels = cv2.distanceTransformWithLabels(canvas, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    labels = labels.astype(np.int32)
    border = np.zeros((size, size), bool)
    border[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    border[1:, :] |= labels[1:, :] != labels[:-1, :]
    to_border = cv2.distanceTransform((~border).astype(np.uint8), cv2.DIST_L2, 5)
    _, labels = np.unique(labels, return_inverse=True)
    return labels.reshape(size, size), to_seed.astype(np.float32), to_border.astype(np.float32)


def jittered_points(rng: np.random.Generator, size: int, spacing: float, jitter: float = 0.8) -> np.ndarray:
    """Seed points on a jittered square lattice covering the image (x, y), about `spacing` px apart."""
    n = int(math.ceil(size / spacing)) + 1
    gy, gx = np.mgrid[0:n, 0:n].astype(np.float32)
    offset = rng.uniform(-0.5, 0.5, (2, n, n)) * jitter
    pts = np.stack([(gx + 0.5 * (gy % 2) * rng.uniform(0, 1) + offset[0]) * spacing - 0.5 * spacing,
                    (gy + offset[1]) * spacing - 0.5 * spacing], -1).reshape(-1, 2)
    return pts[(pts[:, 0] > -spacing) & (pts[:, 0] < size + spacing) & (pts[:, 1] > -spacing) & (pts[:, 1] < size + spacing)]


def light_direction(rng: np.random.Generator) -> np.ndarray:
    """A light from any side, 35-70 degrees above the surface (unit vector x, y, z)."""
    azimuth = rng.uniform(0, 2 * math.pi)
    elevation = math.radians(rng.uniform(35.0, 70.0))
    return np.array([math.cos(azimuth) * math.cos(elevation), math.sin(azimuth) * math.cos(elevation),
                     math.sin(elevation)])


def relief(height: np.ndarray, light: np.ndarray, strength: float) -> np.ndarray:
    """Lambert shading of a height map (strength: pixels of height per unit), 1 on a flat face."""
    hy, hx = np.gradient(height.astype(np.float32) * strength)
    nz = 1.0 / np.sqrt(hx * hx + hy * hy + 1.0)
    lit = (-hx * light[0] - hy * light[1] + light[2]) * nz
    return np.clip(lit, 0, None) / light[2]


def fibre_noise(rng: np.random.Generator, size: int, along: int, across: int, angle: float) -> np.ndarray:
    """Streaky noise (unit std) with `along` features along a direction (degrees) and `across` across it."""
    field = _noise(rng, (size, size), (across, along))  # rows: across; columns: along (direction 0)
    if abs(angle) > 1e-3:
        matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.42)
        field = cv2.warpAffine(field, matrix, (size, size), borderMode=cv2.BORDER_REFLECT)
    return field


# --------------------------------------------------------------------------------------------------
# Backdrops (what a part lies on)


def backdrop(rng: np.random.Generator, size: int) -> np.ndarray:
    """A surface for parts to lie on, H x W x 3 float: plain, mottled, brushed, paper, felt, a cutting
    mat with a grid, or a fine textile, in a random colour and lighting."""
    kind = int(rng.integers(7))
    shape = (size, size)
    if kind == 0:  # plain matte surface
        colour = any_colour(rng, (0.0, 0.5), (0.15, 0.9))
        gray = 1.0 + 0.01 * _noise(rng, shape, 5)
    elif kind == 1:  # mottled stone-like or concrete-like
        colour = any_colour(rng, (0.0, 0.25), (0.3, 0.8))
        gray = 1.0 + 0.05 * _fbm(rng, shape, 4, 4) + 0.03 * _noise(rng, shape, size // 3)
    elif kind == 2:  # brushed metal sheet
        colour = any_colour(rng, (0.0, 0.08), (0.45, 0.8))
        gray = 1.0 + 0.04 * fibre_noise(rng, size, 3, size // 2, rng.uniform(-90, 90)) + 0.02 * _noise(rng, shape, 2)
    elif kind == 3:  # paper or cardboard
        colour = any_colour(rng, (0.0, 0.35), (0.6, 0.95), hue=rng.uniform(0.07, 0.14))
        gray = 1.0 + 0.025 * _fbm(rng, shape, 8, 3) + 0.02 * _noise(rng, shape, size // 2)
    elif kind == 4:  # felt or foam mat
        colour = any_colour(rng, (0.1, 0.7), (0.1, 0.6))
        gray = 1.0 + 0.06 * _noise(rng, shape, size // 2) + 0.04 * _noise(rng, shape, size // 4)
    elif kind == 5:  # cutting mat with a grid
        colour = any_colour(rng, (0.3, 0.7), (0.2, 0.55))
        u, v = coords(rng, size, size / rng.uniform(5, 12), max_angle=8.0)
        du, dv = np.abs(u - np.round(u)), np.abs(v - np.round(v))
        width = rng.uniform(0.015, 0.03)
        lines = np.maximum(smoothstep(width * 1.6, width, du), smoothstep(width * 1.6, width, dv))
        gray = 1.0 + 0.5 * lines + 0.015 * _noise(rng, shape, 6)
    else:  # a fine textile
        colour = any_colour(rng, (0.05, 0.6), (0.2, 0.8))
        u, v = coords(rng, size, rng.uniform(2.5, 4.5) * size / 256)
        gray = 1.0 + 0.06 * np.sin(2 * np.pi * u) * np.sin(2 * np.pi * v) + 0.03 * _noise(rng, shape, 4)
    y, x = _grid(size)
    a = rng.uniform(0, 2 * math.pi)
    gradient = 1.0 + rng.uniform(0.0, 0.15) * ((x * math.cos(a) + y * math.sin(a)) / size - 0.5)
    return colour[None, None, :] * (gray * gradient)[..., None]


# --------------------------------------------------------------------------------------------------
# The camera


def finish(rng: np.random.Generator, image: np.ndarray,
           background: Optional[np.ndarray] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Light and photograph a drawn scene (H x W x 3 float, about 0..255): uneven illumination
    (gradient, vignette, a soft spot), colour cast, exposure and gamma, sometimes a slight defocus,
    sensor noise. `background` (the scene without the part) gets exactly the same treatment. Returns
    uint8 images."""
    size = image.shape[0]
    y, x = _grid(size)
    a = rng.uniform(0, 2 * math.pi)
    field = 1.0 + rng.uniform(0.0, 0.25) * ((x * math.cos(a) + y * math.sin(a)) / size - 0.5)
    if rng.random() < 0.5:
        r2 = ((x - size / 2) ** 2 + (y - size / 2) ** 2) / (0.5 * size * size)
        field = field * (1.0 - rng.uniform(0.05, 0.3) * r2)
    if rng.random() < 0.3:
        cy, cx = rng.uniform(0, size, 2)
        spot = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * (rng.uniform(0.2, 0.5) * size) ** 2))
        field = field + rng.uniform(0.05, 0.2) * spot
    gain = rng.uniform(0.8, 1.15) * (1.0 + rng.normal(0, 0.04, 3)).astype(np.float32)
    gamma = rng.uniform(0.85, 1.15)
    sigma = rng.uniform(0.3, 1.1) * size / 256 if rng.random() < 0.4 else 0.0
    noise_level = rng.uniform(0.8, 4.5)
    noise = rng.normal(0.0, noise_level, (size, size, 1 if rng.random() < 0.5 else 3)).astype(np.float32)

    def develop(scene: np.ndarray) -> np.ndarray:
        lit = scene * field[..., None].astype(np.float32) * gain
        lit = 255.0 * (np.clip(lit, 0, 255) / 255.0) ** gamma
        if sigma > 0:
            lit = cv2.GaussianBlur(lit.astype(np.float32), (0, 0), sigma)
        return _to_uint8(lit + noise)

    return develop(image), (develop(background) if background is not None else None)


def mix(image: np.ndarray, colour: np.ndarray | Sequence[float], alpha: np.ndarray) -> np.ndarray:
    """`image` with `colour` (a colour or an image) laid over where `alpha` (0..1) is set."""
    colour = np.asarray(colour, np.float32)
    return image + alpha[..., None] * (colour - image)
