"""Held-out families: generators that no training family uses, for a second set of unseen classes.

They differ in kind from the training families, not only in parameters: band-pass (Turing-like)
labyrinths, Truchet tilings, guilloche line work, meander (Greek key) bitmaps, puffed quilting, rosette
spots and refracting water drops for textures; pipe tees, padlocks, thread spools, circlips, lathe-turned
spindles, SIM cards and utility blades for parts. They share only the toolkit (colour, lighting, the
camera finish, the part staging of `part_drawing`) with the training families.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from siad.data.synth.appearance import (any_colour, coords, hsv, jittered_points, light_direction, material,
                                        mix, palette, relief, smoothstep, two_tone, voronoi)
from siad.data.synth.common import ObjectScene, _fbm, _grid, _noise, _tint
from siad.data.synth.part_drawing import (circle, code, metal, poly, pose, print_text, rounded_rect, shade,
                                          stage, surface, wire)
from siad.data.synth.parts import _bevel_height

Shape = tuple[int, int]

# --------------------------------------------------------------------------------------------------
# Textures


def labyrinth_coral(rng: np.random.Generator, size: int) -> np.ndarray:
    """A Turing-like labyrinth: white noise band-passed to one spatial frequency, then sharpened."""
    white = rng.standard_normal((size, size)).astype(np.float32)
    spectrum = np.fft.rfft2(white)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    k = np.sqrt(fx * fx + fy * fy)
    k0 = 1.0 / (rng.uniform(9, 24) * size / 256)
    band = np.exp(-((k - k0) / (0.12 * k0)) ** 2)
    if rng.random() < 0.5:  # anisotropic: the labyrinth prefers one direction
        a = rng.uniform(0, np.pi)
        band = band * (0.3 + 0.7 * np.cos(np.arctan2(fy, fx) - a) ** 2)
    field = np.fft.irfft2(spectrum * band, s=(size, size)).astype(np.float32)
    field /= max(float(field.std()), 1e-6)
    height = np.tanh(rng.uniform(1.5, 4.0) * (field + rng.uniform(-0.4, 0.4)))
    shade_ = relief(height, light_direction(rng), rng.uniform(1.5, 3.5) * size / 256)
    dark, light = two_tone(rng, contrast=(0.25, 0.55), s=(0.1, 0.6))
    return _tint(0.5 + 0.5 * height, dark, light) * shade_[..., None]


def truchet_tiles(rng: np.random.Generator, size: int) -> np.ndarray:
    """Quarter-circle Truchet tiles, each cell turned at random: a maze of arcs."""
    cell = rng.uniform(14, 44) * size / 256
    u, v = coords(rng, size, cell, max_angle=45 if rng.random() < 0.5 else 3)
    iu, iv = np.floor(u), np.floor(v)
    table = rng.random(4096) < 0.5
    flip = table[np.mod((iu.astype(np.int64) * 7919 + iv.astype(np.int64) * 104729), 4096)]
    fu = np.where(flip, 1 - (u - iu), u - iu)
    fv = v - iv
    r1 = np.hypot(fu, fv)
    r2 = np.hypot(1 - fu, 1 - fv)
    d = np.minimum(np.abs(r1 - 0.5), np.abs(r2 - 0.5))
    width = rng.uniform(0.06, 0.16)
    tube = np.sqrt(np.clip(1 - (d / width) ** 2, 0, 1))
    colours = palette(rng, 3)
    if rng.random() < 0.5:  # two-coloured regions between the arcs
        inside = (r1 < 0.5) | (r2 < 0.5)
        parity = (np.mod(iu + iv, 2) == 1) ^ flip ^ inside
        ground = np.where(parity[..., None], colours[0], colours[1])
    else:
        ground = np.broadcast_to(colours[0], (size, size, 3))
    shade_ = relief(tube, light_direction(rng), cell * width * 0.8)
    return mix(ground.astype(np.float32), colours[2] * shade_[..., None], np.clip(tube * 2.5, 0, 1))


def guilloche_print(rng: np.random.Generator, size: int) -> np.ndarray:
    """Banknote-like guilloche: two families of fine wavy rosette lines interlaced around a centre."""
    y, x = _grid(size)
    a = rng.uniform(0, 2 * np.pi)
    distance = rng.uniform(0.8, 2.0) * size  # the rosette's centre lies outside the image
    cy, cx = size / 2 + distance * math.sin(a), size / 2 + distance * math.cos(a)
    r = np.hypot(x - cx, y - cy)
    theta = np.arctan2(y - cy, x - cx)
    spacing = rng.uniform(6, 12) * size / 256
    lobes = int(rng.integers(6, 40))
    # no steeper than 2.5 line spacings per spacing of radius at the nearest pixel: no aliasing
    amplitude = min(rng.uniform(1.0, 4.0) * spacing, 2.5 * float(r.min()) / lobes)
    ink = np.zeros((size, size), np.float32)
    for phase in (0.0, math.pi * rng.uniform(0.5, 1.0)):
        wave = amplitude * np.sin(lobes * theta + phase) * (1 + 0.3 * np.sin(r / (rng.uniform(20, 60) * spacing)))
        d = np.abs(((r + wave) / spacing) % 1.0 - 0.5) * 2  # 0 between lines, 1 on a line
        ink = np.maximum(ink, smoothstep(0.55, 0.9, d))
    paper = any_colour(rng, (0.05, 0.3), (0.8, 0.97))
    colour = any_colour(rng, (0.4, 0.9), (0.2, 0.6))
    tint = 1 + 0.03 * _noise(rng, (size, size), 5)
    return mix(paper[None, None, :] * tint[..., None], colour, ink * rng.uniform(0.6, 0.95))


_MEANDER = np.array([  # one period of a Greek key band, 10 x 10 cells (1 = ink)
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 1, 1, 1, 1, 1, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 1, 0, 0, 1],
    [1, 0, 1, 1, 1, 0, 1, 0, 0, 1],
    [1, 0, 1, 0, 1, 0, 1, 0, 0, 1],
    [1, 0, 1, 0, 0, 0, 1, 0, 0, 1],
    [1, 0, 1, 1, 1, 1, 1, 0, 0, 1],
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
], np.float32)


def meander_print(rng: np.random.Generator, size: int) -> np.ndarray:
    """Greek key (meander) bands: a bitmap tile repeated, printed or woven."""
    cell = rng.uniform(3.0, 6.5) * size / 256
    u, v = coords(rng, size, cell, max_angle=90 if rng.random() < 0.4 else 4)
    tile = _MEANDER if rng.random() < 0.5 else _MEANDER.T
    gap = int(rng.integers(0, 4))
    rows = tile.shape[0] + gap
    ii = np.mod(np.floor(v).astype(np.int64), rows)
    jj = np.mod(np.floor(u).astype(np.int64), tile.shape[1])
    padded = np.vstack([tile, np.zeros((gap, tile.shape[1]), np.float32)])
    ink = padded[ii, jj]
    ink = cv2.GaussianBlur(ink, (0, 0), 0.35 * cell)
    colours = palette(rng, 2)
    image = mix(np.broadcast_to(colours[0], (size, size, 3)).astype(np.float32), colours[1], np.clip(ink * 1.3, 0, 1))
    return image * (1 + 0.04 * _noise(rng, (size, size), size // 3))[..., None]


def quilted_fabric(rng: np.random.Generator, size: int) -> np.ndarray:
    """Quilting: seams in a diamond or square grid, the cloth puffed between them, dashed stitches."""
    period = rng.uniform(30, 80) * size / 256
    diamond = rng.random() < 0.6
    u, v = coords(rng, size, period, max_angle=10)
    a, b = (u + v, u - v) if diamond else (u, v)
    da = np.abs(a - np.round(a))
    db = np.abs(b - np.round(b))
    seam = np.minimum(da, db)
    height = np.sqrt(np.clip(seam * 2, 0, 1))
    along = np.where(da < db, b, a) * rng.uniform(8, 14)
    stitch = smoothstep(0.03, 0.015, seam) * (np.mod(along, 1.0) < 0.6)
    shade_ = relief(height, light_direction(rng), period * 0.15)
    cloth = any_colour(rng, (0.1, 0.8), (0.3, 0.9))
    sheen = 1 + 0.05 * _noise(rng, (size, size), (size // 2, 3))
    image = cloth[None, None, :] * ((0.45 + 0.55 * height) * shade_ * sheen)[..., None]
    thread = cloth * 1.4 if cloth.mean() < 150 else cloth * 0.5
    return mix(image, thread, stitch.astype(np.float32) * 0.8)


def rosette_spots(rng: np.random.Generator, size: int) -> np.ndarray:
    """Leopard-like rosettes: broken dark rings around seeds, sometimes a darker centre."""
    spacing = rng.uniform(18, 45) * size / 256
    points = jittered_points(rng, size, spacing, 0.9)
    labels, to_seed, _ = voronoi(points, size)
    radius = spacing * rng.uniform(0.25, 0.36) * (1 + 0.15 * _noise(rng, (size, size), 6))
    y, x = _grid(size)
    angle_noise = _noise(rng, (size, size), int(size / spacing * 3))
    ring_ = smoothstep(spacing * 0.1, spacing * 0.05, np.abs(to_seed - radius)) * (angle_noise > -0.3)
    centre = smoothstep(radius * 0.8, radius * 0.5, to_seed) * (rng.random() < 0.7)
    fur = 1 + 0.08 * _noise(rng, (size, size), size // 3)
    ground = hsv(rng.uniform(0.07, 0.12), rng.uniform(0.4, 0.75), rng.uniform(0.65, 0.9)) if rng.random() < 0.7 \
        else any_colour(rng, (0.1, 0.8), (0.5, 0.9))
    image = ground[None, None, :] * fur[..., None]
    image = mix(image, ground * 0.8, centre * 0.6)
    return mix(image, hsv(0.07, 0.5, 0.12), np.clip(ring_, 0, 1))


def rain_droplets(rng: np.random.Generator, size: int) -> np.ndarray:
    """Water drops on a surface: each drop refracts (flips and magnifies) what lies below it."""
    shape: Shape = (size, size)
    behind = _fbm(rng, shape, int(rng.integers(2, 6)), 4)
    dark, light = two_tone(rng, contrast=(0.3, 0.6), s=(0.05, 0.7))
    ground = _tint(np.clip(0.5 + 0.25 * behind, 0, 1), dark, light)
    drops = np.zeros(shape, np.uint8)
    mean_r = rng.uniform(5, 13) * size / 256
    for _ in range(int(rng.uniform(0.15, 0.4) * size * size / (math.pi * mean_r ** 2))):
        r = mean_r * math.exp(rng.normal(0, 0.4))
        cx, cy = rng.uniform(0, size, 2)
        cv2.ellipse(drops, (int(cx * 16), int(cy * 16)), (max(int(r * 16), 16), max(int(r * rng.uniform(0.8, 1.0) * 16), 16)),
                    rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA, shift=4)
    alpha = drops.astype(np.float32) / 255.0
    height = _bevel_height(alpha, mean_r * 1.2, dome=True)
    gy, gx = np.gradient(height)
    y, x = _grid(size)
    lens = mean_r * 2.5
    refracted = cv2.remap(ground.astype(np.float32), (x + lens * gx).astype(np.float32), (y + lens * gy).astype(np.float32),
                          cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    light_ = light_direction(rng)
    lit = relief(height, light_, mean_r)
    glint = np.clip(lit - 1.2, 0, None) * 1.5
    rim = 1 - smoothstep(0.0, 0.5, height)  # the drop's edge bends light away: a dark outline
    inside = refracted * ((0.7 + 0.3 * lit) * (1 - 0.45 * rim))[..., None] + 255 * glint[..., None]
    return mix(ground, inside, alpha)


# --------------------------------------------------------------------------------------------------
# Parts


def pipe_tee(rng: np.random.Generator, size: int) -> ObjectScene:
    """A pipe tee seen from above: three cylindrical arms with collars at their ends."""
    shape: Shape = (size, size)
    arm = rng.uniform(60, 80)
    radius = rng.uniform(16, 26)
    p = pose(rng, size, math.hypot(arm, arm * 0.5) + 4)
    body = np.maximum(poly(shape, p, [[-arm, -radius], [arm, -radius], [arm, radius], [-arm, radius]]),
                      poly(shape, p, [[-radius, 0], [radius, 0], [radius, arm], [-radius, arm]]))
    collar_r = radius * rng.uniform(1.12, 1.25)
    collar_w = rng.uniform(10, 16)
    collars = np.maximum(poly(shape, p, [[-arm, -collar_r], [-arm + collar_w, -collar_r], [-arm + collar_w, collar_r], [-arm, collar_r]]),
                         poly(shape, p, [[arm - collar_w, -collar_r], [arm, -collar_r], [arm, collar_r], [arm - collar_w, collar_r]]))
    collars = np.maximum(collars, poly(shape, p, [[-collar_r, arm - collar_w], [collar_r, arm - collar_w], [collar_r, arm], [-collar_r, arm]]))
    alpha = np.maximum(body, collars)
    light = light_direction(rng)
    if rng.random() < 0.5:
        colour, ambient, gloss, shininess = [hsv(0, 0, 0.92), hsv(0.6, 0.05, 0.55), hsv(0.08, 0.6, 0.7)][int(rng.integers(3))], \
            0.5, 0.15, 20.0
    else:
        colour, ambient, gloss, shininess = metal(rng, ("brass", "copper", "zinc", "steel"))
    height = np.maximum(_bevel_height(body, radius * p.unit, dome=True), 1.1 * _bevel_height(collars, 4 * p.unit))
    return stage(rng, alpha, shade(alpha, surface(rng, colour, size), light, bevel=0, relief=radius * 0.6 * p.unit,
                                   height=height, ambient=ambient, gloss=gloss, shininess=shininess), light)


def padlock(rng: np.random.Generator, size: int) -> ObjectScene:
    """A padlock: a body with a keyhole and print, and a U-shaped shackle."""
    shape: Shape = (size, size)
    w, h = rng.uniform(80, 120), rng.uniform(70, 100)
    shackle_h = rng.uniform(35, 60)
    p = pose(rng, size, 0.5 * math.hypot(w, h + 2 * shackle_h), max_angle=40)
    body_y = shackle_h * 0.5
    body = poly(shape, p, rounded_rect(w, h, rng.uniform(6, 20), 0, body_y))
    thick = rng.uniform(9, 15)
    span = w * rng.uniform(0.28, 0.36)
    t = np.radians(np.linspace(180, 360, 20))
    top = body_y - h / 2
    arc = np.stack([span * np.cos(t), top - shackle_h + span * 0.0 + span * np.sin(t) * 0.9], 1)
    path = np.concatenate([[[-span, top + 4]], arc[::-1][::-1] * [1, 1], [[span, top + 4]]])
    shackle = wire(shape, p, path, thick) * (1 - body)
    keyhole = np.maximum(circle(shape, p, 0, body_y, 6), poly(shape, p, [[-2.5, body_y], [2.5, body_y], [4, body_y + 16], [-4, body_y + 16]]))
    brand = print_text(shape, p, code(rng, "AAAA"), 0, body_y - h * 0.25, h * 0.13, 0.12)
    light = light_direction(rng)
    colour, ambient, gloss, shininess = metal(rng, ("brass", "steel", "aluminium")) if rng.random() < 0.6 else \
        (any_colour(rng, (0.5, 0.9), (0.3, 0.8)), 0.5, 0.3, 30.0)
    steel, s_amb, s_gloss, s_shine = material(rng, "steel")
    lit_body = shade(body, mix(surface(rng, colour, size), colour * 0.4, brand), light, bevel=8 * p.unit,
                     relief=6 * p.unit, dome=True, ambient=ambient, gloss=gloss, shininess=shininess)
    lit_body = mix(lit_body, np.array([15, 14, 12], np.float32), keyhole)
    lit_shackle = shade(shackle, steel, light, bevel=thick * 0.5 * p.unit, relief=thick * 0.5 * p.unit, dome=True,
                        ambient=s_amb, gloss=s_gloss, shininess=s_shine)
    alpha = np.maximum(body, shackle)
    return stage(rng, alpha, mix(lit_shackle, lit_body, body), light)


def thread_spool(rng: np.random.Generator, size: int) -> ObjectScene:
    """A spool of thread from the side: two flanges and the wound thread between them."""
    shape: Shape = (size, size)
    length = rng.uniform(110, 160)
    flange_r = rng.uniform(38, 55)
    wound_r = flange_r * rng.uniform(0.7, 0.92)
    flange_w = rng.uniform(8, 14)
    p = pose(rng, size, math.hypot(length / 2, flange_r) + 2)
    half = length / 2
    flanges = np.maximum(poly(shape, p, rounded_rect(flange_w, 2 * flange_r, 3, -half + flange_w / 2, 0)),
                         poly(shape, p, rounded_rect(flange_w, 2 * flange_r, 3, half - flange_w / 2, 0)))
    thread = poly(shape, p, [[-half + flange_w - 1, -wound_r], [half - flange_w + 1, -wound_r],
                             [half - flange_w + 1, wound_r], [-half + flange_w - 1, wound_r]])
    alpha = np.maximum(flanges, thread)
    light = light_direction(rng)
    thread_colour = any_colour(rng, (0.4, 0.95), (0.3, 0.95))
    flange_colour = [hsv(0.1, 0.4, 0.75), hsv(0, 0, 0.9), any_colour(rng, (0.2, 0.6), (0.3, 0.8))][int(rng.integers(3))]
    # the windings: fine lines across the spool, slightly slanted
    y, x = _grid(size)
    c, s = math.cos(p.angle), math.sin(p.angle)
    along = ((x - p.cx) * c + (y - p.cy) * s) / p.unit
    across = (-(x - p.cx) * s + (y - p.cy) * c) / p.unit
    windings = 0.5 + 0.5 * np.sin(2 * np.pi * (along + 0.05 * across) / rng.uniform(1.8, 3.0))
    lit_thread = shade(thread, thread_colour[None, None, :] * (0.8 + 0.2 * windings)[..., None], light,
                       bevel=wound_r * p.unit, relief=wound_r * 0.5 * p.unit, dome=True, ambient=0.45, gloss=0.15,
                       shininess=10.0)
    lit_flange = shade(flanges, flange_colour, light, bevel=3 * p.unit, relief=3 * p.unit, ambient=0.5, gloss=0.15,
                       shininess=20.0)
    return stage(rng, alpha, mix(lit_thread, lit_flange, flanges), light)


def circlip(rng: np.random.Generator, size: int) -> ObjectScene:
    """A retaining ring: an open, tapered ring with two lugs, each with a hole."""
    shape: Shape = (size, size)
    outer = rng.uniform(62, 84)
    width = rng.uniform(16, 26)
    p = pose(rng, size, outer + 6)
    gap = rng.uniform(0.35, 0.6)  # radians of the opening
    t = np.linspace(gap / 2, 2 * np.pi - gap / 2, 90)
    taper = width * (0.65 + 0.35 * np.sin((t - gap / 2) / (2 * np.pi - gap) * np.pi))
    outer_pts = np.stack([outer * np.cos(t), outer * np.sin(t)], 1)
    inner_pts = np.stack([(outer - taper) * np.cos(t), (outer - taper) * np.sin(t)], 1)[::-1]
    alpha = poly(shape, p, np.concatenate([outer_pts, inner_pts]))
    lug_r = width * 0.75
    for a in (gap / 2 + 0.12, -gap / 2 - 0.12):
        lx, ly = (outer - lug_r * 0.7) * math.cos(a), (outer - lug_r * 0.7) * math.sin(a)
        alpha = np.maximum(alpha, circle(shape, p, lx, ly, lug_r))
        alpha = alpha * (1 - circle(shape, p, lx, ly, lug_r * 0.42))
    light = light_direction(rng)
    colour, ambient, gloss, shininess = metal(rng, ("dark_steel", "steel", "zinc", "copper"))
    return stage(rng, alpha, shade(alpha, surface(rng, colour, size, grain=0.05), light, bevel=3 * p.unit,
                                   relief=3 * p.unit, ambient=ambient, gloss=gloss, shininess=shininess), light)


def turned_spindle(rng: np.random.Generator, size: int) -> ObjectScene:
    """A lathe-turned part from the side: a random profile of cylinders, cones, collars and grooves,
    shaded as a solid of revolution."""
    shape: Shape = (size, size)
    length = rng.uniform(140, 178)
    p = pose(rng, size, length / 2 + 4)
    n = int(rng.integers(3, 7))
    cuts = np.sort(rng.uniform(-length / 2, length / 2, n - 1))
    edges = np.concatenate([[-length / 2], cuts, [length / 2]])
    radii = rng.uniform(16, 42, n)
    xs, rs = [], []
    for k in range(n):
        x0, x1 = edges[k], edges[k + 1]
        if rng.random() < 0.3 and k + 1 < n:  # a cone into the next section
            xs += [x0, x1]
            rs += [radii[k], radii[k + 1]]
        else:
            xs += [x0 + 0.5, x1 - 0.5]
            rs += [radii[k], radii[k]]
    xs, rs = np.array(xs), np.array(rs)
    outline = np.concatenate([np.stack([xs, -rs], 1), np.stack([xs[::-1], rs[::-1]], 1)])
    alpha = poly(shape, p, outline)
    # analytic shading: model coordinates of each pixel, the radius of the profile there
    y, x = _grid(size)
    c, s = math.cos(p.angle), math.sin(p.angle)
    mx = ((x - p.cx) * c + (y - p.cy) * s) / p.unit
    my = (-(x - p.cx) * s + (y - p.cy) * c) / p.unit
    r_here = np.interp(mx, xs, rs)
    height = np.sqrt(np.clip(1 - (my / np.maximum(r_here, 1e-3)) ** 2, 0, 1)) * alpha
    light = light_direction(rng)
    colour, ambient, gloss, shininess = metal(rng, ("steel", "aluminium", "brass", "dark_steel"))
    grooves = 1 + 0.04 * np.sin(2 * np.pi * mx / rng.uniform(1.0, 2.5))
    base = surface(rng, colour, size) * grooves[..., None]
    return stage(rng, alpha, shade(alpha, base, light, bevel=0, relief=float(rs.mean()) * 0.8 * p.unit, height=height,
                                   ambient=ambient, gloss=gloss, shininess=shininess), light)


def sim_card(rng: np.random.Generator, size: int) -> ObjectScene:
    """A SIM card: a plastic card with a clipped corner, a gold contact pad and print."""
    shape: Shape = (size, size)
    w, h = rng.uniform(110, 150), 0
    h = w * 0.66
    p = pose(rng, size, 0.5 * math.hypot(w, h), max_angle=35)
    outline = rounded_rect(w, h, 4)
    clip = rng.uniform(10, 18)
    outline = np.array([q for q in outline if not (q[0] > w / 2 - clip and q[1] < -h / 2 + clip)] +
                       [[w / 2 - clip, -h / 2], [w / 2, -h / 2 + clip]])
    order = np.argsort(np.arctan2(outline[:, 1], outline[:, 0]))
    alpha = poly(shape, p, outline[order])
    pad_w, pad_h = w * 0.3, h * 0.38
    px, py = -w * 0.18, 0.0
    pad = poly(shape, p, rounded_rect(pad_w, pad_h, 3, px, py))
    lines = np.zeros(shape, np.float32)
    for k in (-1, 0, 1):
        lines = np.maximum(lines, wire(shape, p, np.array([[px - pad_w / 2, py + k * pad_h / 4], [px + pad_w / 2, py + k * pad_h / 4]]), 1.2))
    lines = np.maximum(lines, wire(shape, p, np.array([[px, py - pad_h / 2], [px, py + pad_h / 2]]), 1.2)) * pad
    card_colour = [hsv(0, 0, 0.95), any_colour(rng, (0.4, 0.9), (0.3, 0.9))][int(rng.random() < 0.6)]
    gold = np.array([212, 178, 96], np.float32) * rng.uniform(0.9, 1.05)
    text = print_text(shape, p, code(rng, "AAA"), w * 0.22, -h * 0.18, h * 0.15, 0.12) + \
        print_text(shape, p, code(rng, "0000 0000"), w * 0.18, h * 0.25, h * 0.08)
    base = mix(surface(rng, card_colour, size, grain=0.02), card_colour * 0.3 if card_colour.mean() > 120 else
               np.array([240, 240, 240], np.float32), np.clip(text, 0, 1))
    base = mix(base, gold, pad)
    base = base * (1 - 0.5 * lines)[..., None]
    light = light_direction(rng)
    height = _bevel_height(alpha, 2 * p.unit) + 0.1 * pad
    return stage(rng, alpha, shade(alpha, base, light, bevel=0, relief=2 * p.unit, height=height, ambient=0.55, gloss=0.25,
                                   shininess=30.0), light, shadow=rng.uniform(0.15, 0.35))


def utility_blade(rng: np.random.Generator, size: int) -> ObjectScene:
    """A trapezoid utility-knife blade: a ground edge band, two notches in the back, print."""
    shape: Shape = (size, size)
    top, bottom, h = rng.uniform(90, 115), rng.uniform(150, 176), rng.uniform(45, 62)
    p = pose(rng, size, bottom / 2 + 4)
    notch = rng.uniform(6, 10)
    nx = top * rng.uniform(0.15, 0.3)
    outline = [[-bottom / 2, h / 2], [bottom / 2, h / 2], [top / 2, -h / 2], [nx + notch, -h / 2],
               [nx, -h / 2 + notch], [nx - notch, -h / 2], [-nx + notch, -h / 2], [-nx, -h / 2 + notch],
               [-nx - notch, -h / 2], [-top / 2, -h / 2]]
    alpha = poly(shape, p, outline)
    edge_band = poly(shape, p, [[-bottom / 2, h / 2], [bottom / 2, h / 2], [bottom / 2 - 8, h / 2 - 9],
                                [-bottom / 2 + 8, h / 2 - 9]])
    text = print_text(shape, p, code(rng, "AA-00"), 0, -h * 0.05, h * 0.18, 0.1)
    colour, ambient, gloss, shininess = material(rng, "steel")
    base = surface(rng, colour, size, brushed=True, grain=0.05)
    base = mix(base, colour * 1.2, edge_band * 0.7)
    base = mix(base, colour * 0.4, text * 0.8)
    light = light_direction(rng)
    height = 0.5 * _bevel_height(alpha, 2 * p.unit) - 0.3 * edge_band
    return stage(rng, alpha, shade(alpha, base, light, bevel=0, relief=3 * p.unit, height=height, ambient=ambient,
                                   gloss=gloss * 1.3, shininess=shininess), light)

