"""Texture families for training, regular patterns: stripes, checks, dots, tilings, weaves, knits,
waves, rings (the stochastic surfaces are `family_textures`).

Each generator is `draw(rng, size) -> H x W x 3 float` (about 0..255), before the camera finish of
`appearance.finish`. Every family draws its scale, orientation, colours and relief at random, so that
the normal variation within a family is wide. None of them is one of SIAD-Synth's test classes (gravel,
fibrous, wood, perforated) or uses their generators.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from siad.data.synth.appearance import (any_colour, coords, fibre_noise, hsv, light_direction, mix, palette, relief,
                                        smoothstep)
from siad.data.synth.common import _fbm, _grid, _noise
from siad.data.synth.texture_drawing import borders, gray_tint, hash_ids, lookup


def _stripe_sequence(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    widths = rng.dirichlet(np.ones(n) * rng.uniform(0.7, 3.0))
    edges = np.cumsum(widths)[:-1]
    colours = palette(rng, min(n, int(rng.integers(2, 5))))
    return edges, [colours[k % len(colours)] for k in range(n)]


def _stripes(u: np.ndarray, edges: np.ndarray, colours: list[np.ndarray]) -> np.ndarray:
    index = np.searchsorted(edges, u - np.floor(u))
    return np.stack(colours).astype(np.float32)[index]


def striped_fabric(rng: np.random.Generator, size: int) -> np.ndarray:
    period = rng.uniform(16, 90) * size / 256
    u, v = coords(rng, size, period, max_angle=90 if rng.random() < 0.5 else 10, warp=rng.uniform(0, 0.03))
    edges, colours = _stripe_sequence(rng, int(rng.integers(2, 7)))
    image = cv2.GaussianBlur(_stripes(u, edges, colours), (0, 0), 0.6)
    threads = period / (rng.uniform(2.0, 3.5) * size / 256)
    weave = 1 + 0.06 * np.sin(2 * np.pi * u * threads) * np.sin(2 * np.pi * v * threads)
    return image * weave[..., None]


def tartan_plaid(rng: np.random.Generator, size: int) -> np.ndarray:
    period = rng.uniform(40, 140) * size / 256
    u, v = coords(rng, size, period, max_angle=90 if rng.random() < 0.4 else 6)
    edges, colours = _stripe_sequence(rng, int(rng.integers(3, 8)))
    warp, weft = _stripes(u, edges, colours), _stripes(v, edges, colours)
    threads = period / (rng.uniform(1.6, 3.0) * size / 256)
    twill = (np.floor(u * threads) + np.floor(v * threads)) % 4 < 2
    image = np.where(twill[..., None], warp, weft)
    image = cv2.GaussianBlur(image, (0, 0), 0.7)
    return image * (1 + 0.05 * _noise(rng, (size, size), size // 3))[..., None]


def _tiles(rng: np.random.Generator, size: int, u: np.ndarray, v: np.ndarray, ids: np.ndarray,
           colours: np.ndarray, grout_px: float, bevel_px: float) -> np.ndarray:
    """Tiles: per-pixel tile colours (H x W x 3), the tile id image, grout and a bevelled relief."""
    to_edge = borders(ids)
    grout_colour = any_colour(rng, (0.0, 0.2), (0.15, 0.85))
    height = smoothstep(grout_px, grout_px + bevel_px, to_edge)
    shade = relief(height, light_direction(rng), rng.uniform(1.5, 3.0))
    tone = 1 + rng.uniform(0.02, 0.1) * lookup(rng, ids)
    surface = colours * (tone * shade)[..., None] * (1 + 0.02 * _noise(rng, (size, size), size // 4))[..., None]
    return mix(surface, grout_colour * (1 + 0.08 * _noise(rng, (size, size), size // 2))[..., None],
               smoothstep(grout_px + 0.5, grout_px - 0.5, to_edge))


def ceramic_tiles(rng: np.random.Generator, size: int) -> np.ndarray:
    period = rng.uniform(12, 70) * size / 256
    u, v = coords(rng, size, period, max_angle=45 if rng.random() < 0.5 else 4)
    iu, iv = np.floor(u), np.floor(v)
    ids = hash_ids(iu, iv)
    mode = int(rng.integers(3))
    colours = palette(rng, int(rng.integers(2, 6)))
    if mode == 0:  # checkerboard
        index = ((iu + iv) % 2).astype(int)
    elif mode == 1:  # random mosaic
        index = np.mod(ids * 2654435761 >> 7, len(colours)).astype(int)
    else:  # one colour
        index = np.zeros(ids.shape, int)
    grout = rng.uniform(0.5, max(0.08 * period, 0.7))
    return _tiles(rng, size, u, v, ids, np.stack(colours)[index], grout, rng.uniform(1.0, 3.0))


def brick_pavement(rng: np.random.Generator, size: int) -> np.ndarray:
    height_px = rng.uniform(10, 40) * size / 256
    ratio = rng.uniform(1.6, 3.2)
    u, v = coords(rng, size, height_px, max_angle=90 if rng.random() < 0.3 else 5)
    row = np.floor(v)
    shift = 0.5 if rng.random() < 0.8 else 0.0
    uu = u / ratio + shift * (row % 2)
    ids = hash_ids(np.floor(uu), row)
    base = hsv(rng.choice([0.02, 0.05, 0.08, 0.1, 0.6]) + rng.normal(0, 0.01), rng.uniform(0.1, 0.7), rng.uniform(0.35, 0.8))
    colours = base[None, None, :] * (1 + 0.12 * lookup(rng, ids + 7))[..., None]
    image = _tiles(rng, size, u, v, ids, colours, rng.uniform(0.8, 2.5) * size / 256, rng.uniform(1.0, 2.5))
    return image * (1 + 0.06 * _noise(rng, (size, size), size // 3))[..., None]


def hexagon_tiles(rng: np.random.Generator, size: int) -> np.ndarray:
    period = rng.uniform(14, 60) * size / 256
    u, v = coords(rng, size, period)
    r3 = math.sqrt(3.0)
    # the nearest centre of a hexagonal lattice: two rectangular lattices, the nearer wins
    ax, ay = np.round(u), np.round(v / r3) * r3
    bx, by = np.floor(u) + 0.5, (np.floor(v / r3) + 0.5) * r3
    da = (u - ax) ** 2 + (v - ay) ** 2
    db = (u - bx) ** 2 + (v - by) ** 2
    use_a = da <= db
    cx, cy = np.where(use_a, ax, bx), np.where(use_a, ay, by)
    ids = hash_ids(np.rint(cx * 2), np.rint(cy / r3 * 2))
    colours = palette(rng, int(rng.integers(1, 4)))
    index = np.mod(ids * 2654435761 >> 9, len(colours)).astype(int)
    grout = rng.uniform(0.6, max(0.07 * period, 0.8))
    return _tiles(rng, size, u, v, ids, np.stack(colours)[index], grout, rng.uniform(1.0, 3.0))


def herringbone_tiles(rng: np.random.Generator, size: int) -> np.ndarray:
    width = rng.uniform(8, 24) * size / 256
    n = int(rng.integers(2, 6))
    u, v = coords(rng, size, width, angle=rng.choice([0.0, 45.0, 90.0]) + rng.uniform(-5, 5))
    i, j = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    horizontal = np.mod(i - j, 2 * n) < n
    ids = np.where(horizontal, hash_ids(j, np.floor_divide(i - j, 2 * n), np.zeros_like(i)),
                   hash_ids(i, np.floor_divide(i - j - n, 2 * n), np.ones_like(i)))
    base = any_colour(rng, (0.05, 0.6), (0.3, 0.85))
    colours = base[None, None, :] * (1 + 0.1 * lookup(rng, ids))[..., None]
    return _tiles(rng, size, u, v, ids, colours, rng.uniform(0.4, 1.2) * size / 256, rng.uniform(0.8, 2.0))


def polka_dots(rng: np.random.Generator, size: int) -> np.ndarray:
    period = rng.uniform(10, 50) * size / 256
    u, v = coords(rng, size, period)
    if rng.random() < 0.5:
        d = np.sqrt((u - np.round(u)) ** 2 + (v - np.round(v)) ** 2)
        ids = hash_ids(np.round(u), np.round(v))
    else:
        r3 = math.sqrt(3.0)
        da = np.sqrt((u - np.round(u)) ** 2 + (v - np.round(v / r3) * r3) ** 2)
        db = np.sqrt((u - np.floor(u) - 0.5) ** 2 + (v - (np.floor(v / r3) + 0.5) * r3) ** 2)
        d = np.minimum(da, db)
        ids = (da < db).astype(np.int64)
    radius = rng.uniform(0.15, 0.42)
    alpha = np.clip((radius - d) * period + 0.5, 0, 1)
    colours = palette(rng, 3)
    dot = np.stack(colours[1:])[np.mod(ids, 2) if rng.random() < 0.4 else np.zeros(ids.shape, int)]
    ground = np.broadcast_to(colours[0], dot.shape)
    image = mix(ground.astype(np.float32), dot, alpha)
    return image * (1 + 0.03 * _noise(rng, (size, size), size // 3))[..., None]


def knit_fabric(rng: np.random.Generator, size: int) -> np.ndarray:
    period = rng.uniform(8, 22) * size / 256
    u, v = coords(rng, size, period, max_angle=8)
    height = np.zeros(u.shape, np.float32)
    for dv in (0.0, 0.5):
        fu, fv = u - np.floor(u), (v + dv) - np.floor(v + dv)
        for side in (-1.0, 1.0):
            cx = 0.5 + side * 0.24
            a = math.radians(side * 28.0)
            dx, dy = fu - cx, fv - 0.5
            px = dx * math.cos(a) + dy * math.sin(a)
            py = -dx * math.sin(a) + dy * math.cos(a)
            leg = 1 - (px / 0.21) ** 2 - (py / 0.62) ** 2
            height = np.maximum(height, np.sqrt(np.clip(leg, 0, 1)))
    yarn = 1 + 0.08 * fibre_noise(rng, size, size // 6, 3, 90.0)
    shade = relief(height, light_direction(rng), period * 0.25)
    colour = any_colour(rng, (0.1, 0.8), (0.3, 0.9))
    return colour[None, None, :] * ((0.35 + 0.65 * height) * shade * yarn)[..., None]


def twill_weave(rng: np.random.Generator, size: int) -> np.ndarray:
    thread = rng.uniform(2.5, 6.0) * size / 256
    u, v = coords(rng, size, thread, max_angle=10)
    over = int(rng.integers(2, 4))
    repeat = over + 1
    warp_up = np.mod(np.floor(u) - np.floor(v), repeat) < over
    fu, fv = u - np.floor(u), v - np.floor(v)
    warp_shade = np.sin(np.pi * fu) ** 0.7 * (0.8 + 0.2 * np.sin(np.pi * fv / 1.0))
    weft_shade = np.sin(np.pi * fv) ** 0.7 * (0.8 + 0.2 * np.sin(np.pi * fu / 1.0))
    warp_colour = [hsv(0.62, 0.6, 0.45), hsv(0.6, 0.5, 0.3), any_colour(rng)][int(rng.integers(3))]
    weft_colour = any_colour(rng, (0.0, 0.15), (0.7, 0.95)) if rng.random() < 0.7 else any_colour(rng)
    slub = 1 + 0.1 * _noise(rng, (size, size), (size // 3, 4))
    image = np.where(warp_up[..., None], warp_colour * (0.55 + 0.45 * warp_shade)[..., None] * slub[..., None],
                     weft_colour * (0.55 + 0.45 * weft_shade)[..., None])
    return cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.5)


def basket_weave(rng: np.random.Generator, size: int) -> np.ndarray:
    strands = int(rng.integers(2, 5))
    block = rng.uniform(16, 48) * size / 256
    u, v = coords(rng, size, block, max_angle=45)
    horizontal = np.mod(np.floor(u) + np.floor(v), 2) == 0
    across = np.where(horizontal, v, u) * strands
    along = np.where(horizontal, u, v)
    f = across - np.floor(across)
    strand = np.sin(np.pi * f) ** 0.5
    ends = np.minimum(along - np.floor(along), np.ceil(along) - along)
    strand = strand * (0.75 + 0.25 * smoothstep(0.0, 0.12, ends))
    colour = hsv(rng.uniform(0.06, 0.13), rng.uniform(0.25, 0.6), rng.uniform(0.5, 0.85)) if rng.random() < 0.6 \
        else any_colour(rng)
    grain = 1 + 0.07 * _noise(rng, (size, size), size // 4)
    return colour[None, None, :] * ((0.25 + 0.75 * strand) * grain)[..., None]


def diamond_mesh(rng: np.random.Generator, size: int) -> np.ndarray:
    period = rng.uniform(18, 50) * size / 256
    u, v = coords(rng, size, period)
    behind = cv2.GaussianBlur(_fbm(rng, (size, size), 3, 3), (0, 0), 3)
    image = gray_tint(rng, 0.4 + 0.2 * behind, contrast=(0.2, 0.45), s=(0.0, 0.6))
    width = rng.uniform(0.05, 0.12)
    d1 = np.abs((u + v) - np.round(u + v))
    d2 = np.abs((u - v) - np.round(u - v))
    w1 = np.sqrt(np.clip(1 - (d1 / width) ** 2, 0, 1))
    w2 = np.sqrt(np.clip(1 - (d2 / width) ** 2, 0, 1))
    top = np.mod(np.floor(u + v) + np.floor(u - v), 2) == 0
    wire = np.where(top, np.maximum(w1, 0.999 * w2 * (w1 <= 0)), np.maximum(w2, 0.999 * w1 * (w2 <= 0)))
    metal = hsv(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.55, 0.9))
    image = mix(image * (1 - 0.35 * cv2.GaussianBlur(wire, (0, 0), 2.0))[..., None], metal * (0.5 + 0.5 * wire)[..., None],
                np.clip(wire * 3, 0, 1))
    return image


def corrugated_sheet(rng: np.random.Generator, size: int) -> np.ndarray:
    period = rng.uniform(12, 45) * size / 256
    u, _ = coords(rng, size, period, max_angle=90 if rng.random() < 0.5 else 5)
    if rng.random() < 0.5:
        height = np.sin(2 * np.pi * u)
    else:  # trapezoidal profile
        height = np.clip(2.2 * np.sin(2 * np.pi * u), -1, 1)
    shade = relief(height, light_direction(rng), period * rng.uniform(0.15, 0.35))
    colour = any_colour(rng, (0.0, 0.7), (0.35, 0.85))
    spangle = 1 + 0.05 * _noise(rng, (size, size), size // 6)
    return colour[None, None, :] * ((0.2 + 0.8 * shade) * spangle)[..., None]


def corduroy_fabric(rng: np.random.Generator, size: int) -> np.ndarray:
    period = rng.uniform(5, 16) * size / 256
    angle = rng.choice([0.0, 90.0]) + rng.uniform(-6, 6)
    u, _ = coords(rng, size, period, angle=angle)
    rib = np.abs(np.sin(np.pi * u)) ** 0.6
    pile = 1 + 0.08 * fibre_noise(rng, size, size // 10, size // 2, angle + 90)
    shade = relief(rib, light_direction(rng), period * 0.3)
    colour = any_colour(rng, (0.2, 0.8), (0.25, 0.8))
    return colour[None, None, :] * ((0.4 + 0.6 * rib) * shade * pile)[..., None]


def wave_print(rng: np.random.Generator, size: int) -> np.ndarray:
    period = rng.uniform(12, 50) * size / 256
    u, v = coords(rng, size, period)
    amplitude = rng.uniform(0.2, 1.2)
    frequency = rng.uniform(0.15, 0.6)
    if rng.random() < 0.5:
        phase = u + amplitude * np.sin(2 * np.pi * frequency * v)
    else:  # zigzag (chevron)
        tri = np.abs((frequency * v) - np.floor(frequency * v) - 0.5) * 2
        phase = u + amplitude * tri
    edges, colours = _stripe_sequence(rng, int(rng.integers(2, 5)))
    image = cv2.GaussianBlur(_stripes(phase, edges, colours), (0, 0), 0.7)
    return image * (1 + 0.03 * _noise(rng, (size, size), size // 3))[..., None]


def turned_metal_face(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = _grid(size)
    cy, cx = rng.uniform(-0.3, 1.3, 2) * size
    r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    theta = np.arctan2(y - cy, x - cx)
    period = rng.uniform(2.5, 7.0) * size / 256
    grooves = np.sin(2 * np.pi * r / period + 0.3 * _noise(rng, (size, size), 4))
    sheen = 0.5 + 0.5 * np.cos(2 * (theta - rng.uniform(0, np.pi)))
    gray = 0.45 + rng.uniform(0.06, 0.12) * grooves + rng.uniform(0.15, 0.35) * sheen ** 2 + 0.03 * _noise(rng, (size, size), size // 8)
    return gray_tint(rng, gray, contrast=(0.45, 0.65), s=(0.0, 0.2))


def fish_scales(rng: np.random.Generator, size: int) -> np.ndarray:
    period = rng.uniform(14, 44) * size / 256
    u, v = coords(rng, size, period, max_angle=20 if rng.random() < 0.7 else 180)
    step = rng.uniform(0.4, 0.55)
    radius = 0.62
    row0 = np.floor(v / step)
    height = np.zeros(u.shape, np.float32)
    ids = np.zeros(u.shape, np.int64)
    found = np.zeros(u.shape, bool)
    for k in (1, 0, -1):  # the lower row lies on top
        row = row0 + k
        shift = 0.5 * np.mod(row, 2)
        cx = np.round(u - shift) + shift
        d = np.sqrt((u - cx) ** 2 + (v - row * step) ** 2) / radius
        inside = (d < 1.0) & ~found
        height = np.where(inside, 1 - d ** 2, height)
        ids = np.where(inside, hash_ids(np.round(cx * 2), row), ids)
        found |= inside
    colours = palette(rng, int(rng.integers(1, 4)))
    index = np.mod(ids * 40503 >> 5, len(colours)).astype(int)
    shade = relief(height, light_direction(rng), period * 0.3)
    edge = smoothstep(0.05, 0.15, height)
    return np.stack(colours)[index] * ((0.5 + 0.5 * edge) * shade * (1 + 0.06 * lookup(rng, ids)))[..., None]


def tread_plate(rng: np.random.Generator, size: int) -> np.ndarray:
    period = rng.uniform(14, 36) * size / 256
    u, v = coords(rng, size, period)
    i, j = np.round(u), np.round(v)
    du, dv = u - i, v - j
    a = np.where(np.mod(i + j, 2) == 0, math.pi / 4, -math.pi / 4)
    px = du * np.cos(a) + dv * np.sin(a)
    py = -du * np.sin(a) + dv * np.cos(a)
    bump = np.sqrt(np.clip(1 - (px / 0.4) ** 2 - (py / 0.1) ** 2, 0, 1))
    plate = 0.08 * fibre_noise(rng, size, 3, size // 3, rng.uniform(-90, 90))
    shade = relief(bump + plate, light_direction(rng), period * 0.12)
    return gray_tint(rng, (0.55 + 0.05 * plate) * shade, contrast=(0.4, 0.6), s=(0.0, 0.12))


def circuit_board(rng: np.random.Generator, size: int) -> np.ndarray:
    mask_colour = [hsv(0.36, 0.7, 0.35), hsv(0.6, 0.7, 0.35), hsv(0.0, 0.0, 0.1), hsv(0.0, 0.7, 0.4),
                   hsv(0.33, 0.6, 0.2)][int(rng.integers(5))]
    image = np.empty((size, size, 3), np.float32)
    image[:] = mask_colour
    image *= (1 + 0.04 * _noise(rng, (size, size), 6))[..., None]
    copper = mask_colour * 0.6 + np.array([90, 80, 20], np.float32) * rng.uniform(0.6, 1.0)
    pad_colour = [np.array([215, 180, 90], np.float32), np.array([200, 200, 205], np.float32)][int(rng.integers(2))]
    step = rng.uniform(6, 14) * size / 256
    width = max(int(round(rng.uniform(0.2, 0.4) * step)), 1)  # pixels
    grid = int(size / step) + 1
    directions = [(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)]
    for _ in range(int(rng.integers(6, 14))):  # buses: a few parallel traces that turn together
        x, y = rng.integers(0, grid, 2).astype(float)
        turns = [(directions[int(rng.integers(8))], int(rng.integers(3, 12))) for _ in range(int(rng.integers(1, 4)))]
        lanes = int(rng.integers(1, 5))
        for lane in range(lanes):
            points = [(x + lane, y)]
            for (dx, dy), length in turns:
                points.append((points[-1][0] + dx * length, points[-1][1] + dy * length))
            pts = (np.array(points) * step * 16).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(image, [pts], False, copper.tolist(), width, cv2.LINE_AA, shift=4)
            ends = (points[0], points[-1])
            for px, py in ends:
                cv2.circle(image, (int(px * step * 16), int(py * step * 16)), int(width * 16 * 0.9 + 16), pad_colour.tolist(),
                           -1, cv2.LINE_AA, shift=4)
                cv2.circle(image, (int(px * step * 16), int(py * step * 16)), int(width * 16 * 0.35 + 6),
                           (mask_colour * 0.3).tolist(), -1, cv2.LINE_AA, shift=4)
    for _ in range(int(rng.integers(1, 4))):  # an SMD footprint: a row of rectangular pads
        x0, y0 = rng.uniform(0, size, 2)
        pitch = step * rng.uniform(0.8, 1.3)
        for k in range(int(rng.integers(3, 9))):
            cx = x0 + k * pitch
            cv2.rectangle(image, (int((cx - 0.3 * pitch) * 16), int(y0 * 16)),
                          (int((cx + 0.3 * pitch) * 16), int((y0 + 1.6 * pitch) * 16)), pad_colour.tolist(), -1,
                          cv2.LINE_AA, shift=4)
    return image
