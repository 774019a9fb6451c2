"""Drawing a part for the part families (`family_parts`, `family_objects`) and the held-out ones
(`heldout`): placing it (`pose`), its outlines (polygons, circles, rings, rounded rectangles, stadiums,
wires, printed text), shading it under a light with a surface texture (`shade`, `surface`), and staging
it with a soft shadow on a random backdrop, then photographed (`stage`).
"""

from __future__ import annotations

import math
import string
from typing import Optional, Sequence

import cv2
import numpy as np

from siad.data.synth.appearance import METALS, backdrop, fibre_noise, finish, material
from siad.data.synth.common import ObjectScene, _fill_ellipse, _fill_polygon, _noise, _polyline, _text
from siad.data.synth.parts import _bevel_height, _Pose, _shade

Shape = tuple[int, int]


def pose(rng: np.random.Generator, size: int, extent: float, *, scale: tuple[float, float] = (0.7, 1.1),
         max_angle: float = 180.0) -> _Pose:
    """A random pose for a part of model radius `extent` (1 unit = size/256 px at scale 1): random scale,
    rotation, and a position that keeps the part inside the image."""
    unit = size / 256.0 * rng.uniform(*scale)
    unit = min(unit, 0.47 * size / extent)
    room = max(size / 2.0 - extent * unit - 0.03 * size, 0.0)
    return _Pose(cy=size / 2.0 + rng.uniform(-room, room), cx=size / 2.0 + rng.uniform(-room, room),
                 angle=math.radians(rng.uniform(-max_angle, max_angle)), unit=unit)


def poly(shape: Shape, p: _Pose, points: Sequence[Sequence[float]]) -> np.ndarray:
    return _fill_polygon(shape, p.place(np.asarray(points, np.float64)))


def circle(shape: Shape, p: _Pose, x: float, y: float, r: float) -> np.ndarray:
    cy, cx = p.point(x, y)
    return _fill_ellipse(shape, cy, cx, r * p.unit, r * p.unit)


def ring(shape: Shape, p: _Pose, x: float, y: float, outer: float, inner: float) -> np.ndarray:
    return np.clip(circle(shape, p, x, y, outer) - circle(shape, p, x, y, inner), 0, 1)


def rounded_rect(w: float, h: float, r: float, x: float = 0.0, y: float = 0.0) -> np.ndarray:
    """Outline points of a w x h rectangle centred at (x, y) with corner radius r."""
    r = max(min(r, w / 2, h / 2), 0.0)
    points = []
    for cx, cy, start in ((w / 2 - r, h / 2 - r, 0), (-w / 2 + r, h / 2 - r, 90), (-w / 2 + r, -h / 2 + r, 180),
                          (w / 2 - r, -h / 2 + r, 270)):
        for a in np.radians(np.linspace(start, start + 90, 7)):
            points.append([x + cx + r * math.cos(a), y + cy + r * math.sin(a)])
    return np.array(points)


def stadium(shape: Shape, p: _Pose, x0: float, y0: float, x1: float, y1: float, r: float) -> np.ndarray:
    """A slot: the segment (x0, y0)-(x1, y1) thickened to radius r."""
    t = np.linspace(0, 1, 24)[:, None]
    line = np.array([x0, y0]) * (1 - t) + np.array([x1, y1]) * t
    return wire(shape, p, line, 2 * r)


def wire(shape: Shape, p: _Pose, points: np.ndarray, thickness: float) -> np.ndarray:
    """An open polyline (model units) drawn `thickness` units wide, round caps."""
    px = max(int(round(thickness * p.unit)), 1)
    return _polyline(shape, p.place(np.asarray(points, np.float64)), px)


def shade(alpha: np.ndarray, base: np.ndarray, light: np.ndarray, *, bevel: float, relief: float,
          dome: bool = False, ambient: float = 0.5, gloss: float = 0.2, shininess: float = 20.0,
          height: Optional[np.ndarray] = None) -> np.ndarray:
    """The part's lit colour: a height map (a bevel of `bevel` px from its edge, or `height`) shaded
    under `light` (Lambert plus a specular highlight)."""
    if height is None:
        height = _bevel_height(alpha, bevel, dome=dome)
    diffuse, specular = _shade(height, relief, light, shininess)
    lit = ambient + (1.0 - ambient) * diffuse
    base = np.asarray(base, np.float32)
    if base.ndim == 1:
        base = base[None, None, :]
    return base * lit[..., None] + 255.0 * gloss * specular[..., None]


def surface(rng: np.random.Generator, colour: np.ndarray, size: int, *, grain: float = 0.03,
            brushed: bool = False) -> np.ndarray:
    """A colour with a faint surface texture (mottled, or brushed in one direction), H x W x 3."""
    if brushed:
        field = fibre_noise(rng, size, 3, size // 2, rng.uniform(-90, 90))
    else:
        field = _noise(rng, (size, size), size // 5)
    return colour[None, None, :] * (1 + grain * field)[..., None]


def stage(rng: np.random.Generator, alpha: np.ndarray, colour: np.ndarray, light: np.ndarray, *,
          ground: Optional[np.ndarray] = None, shadow: Optional[float] = None) -> ObjectScene:
    """Lay a part (coverage `alpha`, lit `colour`) on a backdrop with its soft shadow, photograph it."""
    size = alpha.shape[0]
    if ground is None:
        ground = backdrop(rng, size)
    offset = rng.uniform(0.01, 0.035) * size / max(math.tan(math.asin(min(light[2], 0.999))), 0.3)
    matrix = np.float32([[1, 0, -light[0] * offset], [0, 1, -light[1] * offset]])
    cast = cv2.warpAffine(alpha.astype(np.float32), matrix, (size, size))
    cast = cv2.GaussianBlur(cast, (0, 0), rng.uniform(0.008, 0.025) * size + 1.0)
    strength = rng.uniform(0.2, 0.5) if shadow is None else shadow
    ground = ground * (1.0 - strength * cast)[..., None]
    image = ground * (1.0 - alpha[..., None]) + np.asarray(colour, np.float32) * alpha[..., None]
    image, background = finish(rng, image, ground)
    assert background is not None
    return ObjectScene(image=image, foreground=alpha > 0.5, background=background)


def metal(rng: np.random.Generator, names: Sequence[str] = METALS) -> tuple[np.ndarray, float, float, float]:
    return material(rng, names[int(rng.integers(len(names)))])


def code(rng: np.random.Generator, pattern: Optional[str] = None) -> str:
    """A short printed code such as 'M8', 'AX-204', '6205', 'LOT 31'."""
    patterns = ("A0", "A00", "AA-000", "000", "0000", "A0-00", "AA00", "LOT 00", "0.0A", "A000")
    pattern = pattern or patterns[int(rng.integers(len(patterns)))]
    out = []
    for ch in pattern:
        if ch == "A":
            out.append(string.ascii_uppercase[int(rng.integers(26))])
        elif ch == "0":
            out.append(str(int(rng.integers(10))))
        else:
            out.append(ch)
    return "".join(out)


def print_text(shape: Shape, p: _Pose, text: str, x: float, y: float, height: float, weight: float = 0.09) -> np.ndarray:
    cy, cx = p.point(x, y)
    return _text(shape, text, cy, cx, height * p.unit, -math.degrees(p.angle), max(weight * height * p.unit, 0.6))
