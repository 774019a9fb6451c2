"""Texture families for training, stochastic surfaces: noise, cells, grains, spatter, relief. The
regular patterns are `family_patterns`; the helpers both use, `texture_drawing`.

Each generator is `draw(rng, size) -> H x W x 3 float` (about 0..255), before the camera finish of
`appearance.finish`. Every family draws its scale, orientation, colours and relief at random, so that
the normal variation within a family is wide. None of them is one of SIAD-Synth's test classes (gravel,
fibrous, wood, perforated) or uses their generators.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from siad.data.synth.appearance import (any_colour, coords, fibre_noise, hsv, jittered_points, light_direction, mix,
                                        palette, relief, smoothstep, voronoi)
from siad.data.synth.common import _fbm, _grid, _noise, _tint
from siad.data.synth.texture_drawing import Shape, displace, gray_tint, lookup


def concrete_wall(rng: np.random.Generator, size: int) -> np.ndarray:
    shape: Shape = (size, size)
    base = _fbm(rng, shape, int(rng.integers(3, 8)), 5, persistence=rng.uniform(0.45, 0.65))
    fine = _noise(rng, shape, size // 2)
    pits = smoothstep(2.0, 2.6, _noise(rng, shape, max(size // int(rng.integers(5, 9)), 4)))
    height = 0.4 * base + 0.3 * fine - 1.5 * pits
    shade = relief(height, light_direction(rng), rng.uniform(1.0, 3.0))
    gray = 0.6 + rng.uniform(0.04, 0.1) * base + 0.035 * fine - 0.2 * pits
    return gray_tint(rng, gray, contrast=(0.35, 0.6), s=(0.0, 0.12)) * shade[..., None]


def granite_slab(rng: np.random.Generator, size: int) -> np.ndarray:
    shape: Shape = (size, size)
    colours = palette(rng, 4, s=(0.0, 0.45), v=(0.1, 0.95))
    image = np.broadcast_to(colours[0], (size, size, 3)).astype(np.float32).copy()
    grain = int(size / (rng.uniform(2.0, 6.0) * size / 256))  # grains of 2-6 px (at 256 px)
    for colour in colours[1:]:
        field = _noise(rng, shape, grain) + 0.25 * _noise(rng, shape, max(grain // 4, 2))
        t = rng.uniform(0.4, 1.3)
        image = mix(image, colour, smoothstep(t, t + 0.15, field))
    image = cv2.GaussianBlur(image, (0, 0), 0.5 * size / 256)
    return image * (1 + 0.06 * _fbm(rng, shape, 3, 3))[..., None]


def terrazzo_floor(rng: np.random.Generator, size: int) -> np.ndarray:
    matrix = any_colour(rng, (0.0, 0.3), (0.55, 0.95))
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = matrix
    canvas *= (1 + 0.03 * _noise(rng, (size, size), 6))[..., None]
    chips = palette(rng, int(rng.integers(2, 5)), s=(0.0, 0.7), v=(0.1, 0.9))
    mean_r = rng.uniform(2.5, 8.0) * size / 256
    count = int(rng.uniform(0.25, 0.55) * size * size / (math.pi * mean_r ** 2))
    for _ in range(count):
        r = mean_r * math.exp(rng.normal(0, 0.45))
        n = int(rng.integers(4, 8))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        rr = r * rng.uniform(0.6, 1.0, n)
        cx, cy = rng.uniform(-r, size + r, 2)
        pts = np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], 1)
        colour = chips[int(rng.integers(len(chips)))] * rng.uniform(0.85, 1.15)
        cv2.fillPoly(canvas, [np.rint(pts * 16).astype(np.int32).reshape(-1, 1, 2)], colour.tolist(),
                     cv2.LINE_AA, shift=4)
    return canvas


def cork_board(rng: np.random.Generator, size: int) -> np.ndarray:
    spacing = rng.uniform(2.5, 6.0) * size / 256
    labels, to_seed, to_border = voronoi(jittered_points(rng, size, spacing, 1.0), size)
    cell = lookup(rng, labels)
    gray = 0.55 + 0.12 * cell + 0.06 * smoothstep(0, spacing * 0.5, to_border) + 0.05 * _noise(rng, (size, size), 4)
    pores = smoothstep(2.3, 2.8, _noise(rng, (size, size), size // 5))
    gray = gray - 0.35 * pores
    dark, light = hsv(rng.uniform(0.05, 0.1), rng.uniform(0.5, 0.75), rng.uniform(0.2, 0.35)), \
        hsv(rng.uniform(0.07, 0.12), rng.uniform(0.35, 0.6), rng.uniform(0.75, 0.95))
    return _tint(np.clip(gray, 0, 1), dark, light)


def rusted_metal(rng: np.random.Generator, size: int) -> np.ndarray:
    shape: Shape = (size, size)
    steel = 0.6 + 0.05 * fibre_noise(rng, size, 3, size // 2, rng.uniform(-90, 90))
    image = _tint(steel, hsv(rng.random(), 0.05, 0.2), hsv(rng.random(), rng.uniform(0, 0.15), rng.uniform(0.6, 0.9)))
    field = _fbm(rng, shape, int(rng.integers(2, 6)), 5)
    t = rng.uniform(-0.6, 0.8)
    cover = smoothstep(t - 0.1, t + 0.25, field)
    tone = np.clip(0.5 + 0.35 * _fbm(rng, shape, 8, 3), 0, 1)
    rust = _tint(tone, hsv(0.04, 0.8, rng.uniform(0.2, 0.32)), hsv(rng.uniform(0.05, 0.09), 0.75, rng.uniform(0.6, 0.8)))
    image = mix(image, rust, cover)
    pits = smoothstep(1.8, 2.4, _noise(rng, shape, size // 4)) * cover
    return image * (1 - 0.4 * pits)[..., None]


def camouflage_fabric(rng: np.random.Generator, size: int) -> np.ndarray:
    shape: Shape = (size, size)
    n = int(rng.integers(3, 5))
    schemes = [[(0.25, 0.45, 0.35), (0.17, 0.5, 0.25), (0.08, 0.55, 0.2), (0.12, 0.3, 0.55)],  # woodland
               [(0.1, 0.3, 0.8), (0.09, 0.4, 0.6), (0.08, 0.5, 0.4), (0.12, 0.2, 0.9)],  # desert
               [(0.6, 0.05, 0.3), (0.6, 0.05, 0.55), (0.6, 0.03, 0.8), (0.6, 0.05, 0.15)]]  # urban
    pick = int(rng.integers(4))
    if pick < 3:
        colours = [hsv(h + rng.normal(0, 0.02), s, v * rng.uniform(0.9, 1.1)) for h, s, v in schemes[pick][:n]]
    else:
        colours = palette(rng, n)
    cells = int(rng.integers(2, 6))
    field = displace(rng, _fbm(rng, shape, cells, 4), rng.uniform(2, 8) * size / 256, 8)
    levels = np.quantile(field, np.linspace(0, 1, n + 1)[1:-1])
    index = np.digitize(field, levels)
    image = np.stack(colours)[index]
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.7)
    u, v = coords(rng, size, rng.uniform(2.0, 3.5) * size / 256, max_angle=5)
    weave = 1 + 0.05 * np.sin(2 * np.pi * u) * np.sin(2 * np.pi * v)
    return image * weave[..., None]


def foam_sponge(rng: np.random.Generator, size: int) -> np.ndarray:
    spacing = rng.uniform(6.0, 16.0) * size / 256
    labels, to_seed, to_border = voronoi(jittered_points(rng, size, spacing, 1.0), size)
    radius = spacing * (0.25 + 0.2 * np.clip(lookup(rng, labels), -1.5, 1.5) * 0.3 + rng.uniform(0.0, 0.15))
    pore = smoothstep(radius + 1.0, radius - 0.5, to_seed)
    height = np.minimum(to_border, to_seed) / spacing
    shade = relief(cv2.GaussianBlur(height - pore, (0, 0), 0.8), light_direction(rng), 3.0)
    colour = any_colour(rng, (0.1, 0.7), (0.5, 0.95))
    image = colour[None, None, :] * (shade * (1 - 0.75 * pore))[..., None]
    return image * (1 + 0.05 * _noise(rng, (size, size), size // 3))[..., None]


def crackle_glaze(rng: np.random.Generator, size: int) -> np.ndarray:
    colour = any_colour(rng, (0.05, 0.5), (0.6, 0.95))
    image = np.empty((size, size, 3), np.float32)
    image[:] = colour
    image *= (1 + 0.03 * _fbm(rng, (size, size), 3, 3))[..., None]
    crack_colour = colour * rng.uniform(0.3, 0.6)
    for spacing, width in ((rng.uniform(20, 45), rng.uniform(0.6, 1.0)), (rng.uniform(8, 16), rng.uniform(0.35, 0.6))):
        spacing *= size / 256
        _, _, to_border = voronoi(jittered_points(rng, size, spacing, 1.0), size)
        cracks = smoothstep(width + 0.8, width, to_border)
        cracks = displace(rng, cracks, 2.0 * size / 256, 10)
        image = mix(image, crack_colour, np.clip(cracks, 0, 1) * rng.uniform(0.5, 0.9))
    return image


def dried_mud(rng: np.random.Generator, size: int) -> np.ndarray:
    spacing = rng.uniform(25, 60) * size / 256
    labels, _, to_border = voronoi(jittered_points(rng, size, spacing, 1.0), size)
    to_border = displace(rng, to_border, 2.5 * size / 256, 8)
    width = rng.uniform(1.0, 3.5) * size / 256
    crack = smoothstep(width + 1.0, width, to_border)
    height = smoothstep(width, width + spacing * 0.25, to_border) * (1 + 0.05 * lookup(rng, labels)) \
        + 0.08 * _fbm(rng, (size, size), 6, 4)
    shade = relief(height, light_direction(rng), rng.uniform(2, 5) * size / 256)
    gray = 0.6 + 0.06 * lookup(rng, labels) + 0.05 * _noise(rng, (size, size), size // 4)
    image = _tint(np.clip(gray, 0, 1), hsv(rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.6), 0.25),
                  hsv(rng.uniform(0.06, 0.13), rng.uniform(0.2, 0.5), rng.uniform(0.65, 0.9)))
    return image * ((0.4 + 0.6 * shade) * (1 - 0.8 * crack))[..., None]


def speckled_paint(rng: np.random.Generator, size: int) -> np.ndarray:
    colours = palette(rng, int(rng.integers(2, 5)))
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = colours[0]
    canvas *= (1 + 0.02 * _noise(rng, (size, size), 4))[..., None]
    mean_r = rng.uniform(0.6, 2.5) * size / 256
    count = int(rng.uniform(0.05, 0.25) * size * size / (math.pi * mean_r ** 2 + 1))
    for _ in range(min(count, 3000)):
        r = max(mean_r * math.exp(rng.normal(0, 0.5)), 0.4)
        cx, cy = rng.uniform(0, size, 2)
        colour = colours[1 + int(rng.integers(len(colours) - 1))]
        cv2.circle(canvas, (int(cx * 16), int(cy * 16)), max(int(r * 16), 6), colour.tolist(), -1, cv2.LINE_AA, shift=4)
    return canvas


def sandpaper(rng: np.random.Generator, size: int) -> np.ndarray:
    shape: Shape = (size, size)
    grains = np.clip(_noise(rng, shape, int(size / rng.uniform(1.2, 3.0))), -2, 3)
    shade = relief(grains, light_direction(rng), rng.uniform(1.0, 2.5))
    base = [hsv(0.02, 0.6, 0.45), hsv(0.0, 0.0, 0.15), hsv(0.1, 0.45, 0.55), hsv(0.6, 0.4, 0.3),
            any_colour(rng)][int(rng.integers(5))]
    sparkle = (grains > 2.2).astype(np.float32) * rng.uniform(0.1, 0.5)
    image = base[None, None, :] * (shade * (0.85 + 0.08 * grains))[..., None]
    return image + 255 * sparkle[..., None] * 0.4


def brushed_metal(rng: np.random.Generator, size: int) -> np.ndarray:
    angle = rng.uniform(-90, 90)
    streaks = fibre_noise(rng, size, int(rng.integers(2, 5)), size // 2, angle)
    streaks2 = fibre_noise(rng, size, int(rng.integers(1, 3)), size // 8, angle)
    sheen = 0.5 + 0.5 * np.sin(2 * np.pi * coords(rng, size, size * rng.uniform(0.6, 2.0), angle=angle + 90)[0])
    gray = 0.55 + 0.05 * streaks + 0.04 * streaks2 + rng.uniform(0.05, 0.2) * sheen
    return gray_tint(rng, gray, contrast=(0.4, 0.6), s=(0.0, 0.15))


def lichen_rock(rng: np.random.Generator, size: int) -> np.ndarray:
    shape: Shape = (size, size)
    rock = 0.55 + 0.12 * _fbm(rng, shape, 4, 5) + 0.05 * _noise(rng, shape, size // 3)
    image = gray_tint(rng, rock, contrast=(0.3, 0.5), s=(0.0, 0.12))
    for _ in range(int(rng.integers(1, 3))):
        field = _fbm(rng, shape, int(rng.integers(3, 8)), 4)
        t = rng.uniform(0.2, 1.2)
        patch = smoothstep(t, t + 0.08, field)
        rim = smoothstep(t, t + 0.05, field) - smoothstep(t + 0.1, t + 0.2, field)
        colour = hsv(rng.uniform(0.08, 0.3), rng.uniform(0.3, 0.7), rng.uniform(0.45, 0.85))
        spots = 1 + 0.15 * _noise(rng, shape, size // 6)
        image = mix(image, colour * spots[..., None], patch * 0.9)
        image = image * (1 - 0.2 * rim)[..., None]
    return image


def water_ripples(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = _grid(size)
    height = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(2, 6))):
        cy, cx = rng.uniform(-0.5, 1.5, 2) * size
        r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        wavelength = rng.uniform(15, 45) * size / 256
        height += np.sin(2 * np.pi * r / wavelength + rng.uniform(0, 6.3)) * wavelength * np.exp(-r / (rng.uniform(0.5, 2) * size))
    height = height / max(float(np.abs(height).max()), 1e-6) + 0.2 * _fbm(rng, (size, size), 3, 3)
    shade = relief(height, light_direction(rng), rng.uniform(3, 8) * size / 256)
    colour = [hsv(0.55, 0.5, 0.7), hsv(0.48, 0.55, 0.6), hsv(0.12, 0.4, 0.5), any_colour(rng, v=(0.5, 0.9))][int(rng.integers(4))]
    glint = np.clip(shade - 1.05, 0, None)
    return colour[None, None, :] * (0.5 + 0.5 * shade)[..., None] + 120.0 * glint[..., None]


def sand_ripples(rng: np.random.Generator, size: int) -> np.ndarray:
    u, _ = coords(rng, size, rng.uniform(12, 32) * size / 256, warp=rng.uniform(0.2, 0.6))
    p = u - np.floor(u)
    crest = rng.uniform(0.55, 0.8)
    height = np.where(p < crest, p / crest, (1 - p) / (1 - crest))
    height = height + 0.15 * _noise(rng, (size, size), size // 3)
    shade = relief(cv2.GaussianBlur(height.astype(np.float32), (0, 0), 0.8), light_direction(rng), rng.uniform(4, 9))
    colour = hsv(rng.uniform(0.07, 0.13), rng.uniform(0.2, 0.5), rng.uniform(0.6, 0.9))
    grains = 1 + 0.05 * _noise(rng, (size, size), size // 2)
    return colour[None, None, :] * (shade * grains)[..., None]


def stucco_plaster(rng: np.random.Generator, size: int) -> np.ndarray:
    shape: Shape = (size, size)
    ridged = (1 - np.abs(_fbm(rng, shape, int(rng.integers(4, 12)), 4))) ** 2
    height = ridged + 0.2 * _noise(rng, shape, size // 4)
    shade = relief(height, light_direction(rng), rng.uniform(3, 8))
    colour = any_colour(rng, (0.0, 0.3), (0.65, 0.95))
    return colour[None, None, :] * (0.3 + 0.7 * shade)[..., None]


def recycled_paper(rng: np.random.Generator, size: int) -> np.ndarray:
    shape: Shape = (size, size)
    gray = 0.8 + 0.04 * _fbm(rng, shape, 6, 4) + 0.02 * _noise(rng, shape, size // 2)
    image = _tint(np.clip(gray, 0, 1), any_colour(rng, (0.0, 0.4), (0.35, 0.55)), any_colour(rng, (0.0, 0.2), (0.85, 1.0)))
    flecks = palette(rng, 3, s=(0.0, 0.6), v=(0.1, 0.7))
    for _ in range(int(rng.uniform(40, 200) * (size / 256) ** 2)):
        cx, cy = rng.uniform(0, size, 2)
        axes = (max(int(16 * rng.uniform(0.5, 2.5) * size / 256), 6), max(int(16 * rng.uniform(0.3, 1.0)), 5))
        colour = flecks[int(rng.integers(3))]
        cv2.ellipse(image, (int(cx * 16), int(cy * 16)), axes, rng.uniform(0, 180), 0, 360, colour.tolist(), -1,
                    cv2.LINE_AA, shift=4)
    return image
