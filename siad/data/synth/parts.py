"""SIAD-Synth's parts (objects): shaded, lit parts with print and a soft shadow on a plain background."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping, Optional, Sequence

import cv2
import numpy as np

from siad.data.synth.common import (ObjectScene, _check_size, _fill_ellipse, _fill_polygon, _grid, _jitter,
                                    _noise, _polyline, _text, _to_uint8)

OBJECT_KINDS: tuple[str, ...] = (
    "hex_nut", "washer", "screw", "pill_round", "button",
    "connector", "capsule", "gear", "bracket",
)


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
