"""Part families for training: parts composed from parametric primitives (polygons, rings, plates with
holes, rods, pins, wires, lobed knobs, print and labels, multi-part layouts), shaded under a random light,
with a soft shadow, on a random backdrop, then photographed (`appearance.finish`).

Each generator is `draw(rng, size) -> ObjectScene` (image, the part's foreground, the same scene without
the part). None of them is one of SIAD-Synth's test classes (connector, capsule, gear, bracket) or uses
their generators; toothed wheels are left out on purpose (gear is a test class).

The helpers (`pose`, `shade`, `stage`, outlines) are shared with the held-out families.
"""

from __future__ import annotations

import math
import string
from typing import Optional, Sequence

import cv2
import numpy as np

from siad.data.synth.appearance import (METALS, any_colour, backdrop, finish, hsv, light_direction, material, mix,
                                        palette)
from siad.data.synth.common import ObjectScene, _fill_ellipse, _fill_polygon, _noise, _polyline, _text
from siad.data.synth.parts import _bevel_height, _Pose, _shade

Shape = tuple[int, int]

# --------------------------------------------------------------------------------------------------
# Placing, shading and staging a part


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
        from siad.data.synth.appearance import fibre_noise
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


# --------------------------------------------------------------------------------------------------
# Part families


def polygon_nut(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    sides = int(rng.choice([4, 5, 6, 6, 8]))
    outer = rng.uniform(60, 82)
    p = pose(rng, size, outer)
    a0 = rng.uniform(0, 2 * np.pi)
    corners = [[outer * math.cos(a0 + 2 * np.pi * k / sides), outer * math.sin(a0 + 2 * np.pi * k / sides)]
               for k in range(sides)]
    chamfer = outer * rng.uniform(0.9, 1.0)
    bore = outer * rng.uniform(0.3, 0.5)
    alpha = poly(shape, p, corners) * circle(shape, p, 0, 0, chamfer) * (1 - circle(shape, p, 0, 0, bore))
    light = light_direction(rng)
    colour, ambient, gloss, shininess = metal(rng)
    base = surface(rng, colour, size, brushed=True)
    thread = ring(shape, p, 0, 0, bore * 1.15, bore)
    face = ring(shape, p, 0, 0, chamfer * 0.92, chamfer * 0.9)
    base = base * (1 - 0.3 * thread - 0.2 * face)[..., None]
    return stage(rng, alpha, shade(alpha, base, light, bevel=5 * p.unit, relief=6 * p.unit, ambient=ambient,
                                   gloss=gloss, shininess=shininess), light)


def o_ring(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    outer = rng.uniform(50, 84)
    thickness = rng.uniform(5, 18)
    p = pose(rng, size, outer)
    alpha = ring(shape, p, 0, 0, outer, outer - thickness)
    light = light_direction(rng)
    colour = [hsv(0, 0, 0.12), hsv(0.0, 0.7, 0.45), hsv(0.3, 0.6, 0.35), hsv(0.6, 0.6, 0.4), hsv(0.08, 0.8, 0.6),
              any_colour(rng)][int(rng.integers(6))]
    base = surface(rng, colour, size, grain=0.04)
    return stage(rng, alpha, shade(alpha, base, light, bevel=0.5 * thickness * p.unit, relief=0.5 * thickness * p.unit,
                                   dome=True, ambient=0.45, gloss=rng.uniform(0.05, 0.25), shininess=12.0), light)


def mounting_plate(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    w, h = rng.uniform(110, 175), rng.uniform(55, 130)
    p = pose(rng, size, 0.5 * math.hypot(w, h))
    alpha = poly(shape, p, rounded_rect(w, h, rng.uniform(0, 0.3) * min(w, h)))
    hole = rng.uniform(5, 11)
    inset = hole + rng.uniform(5, 12)
    holes = [(sx * (w / 2 - inset), sy * (h / 2 - inset)) for sx in (-1, 1) for sy in (-1, 1)]
    if rng.random() < 0.4:
        holes = holes[::3] if rng.random() < 0.5 else holes
    for hx, hy in holes:
        alpha = alpha * (1 - circle(shape, p, hx, hy, hole))
    if rng.random() < 0.5:  # a central slot or a large bore
        if rng.random() < 0.5:
            length = rng.uniform(0.15, 0.35) * w
            alpha = alpha * (1 - stadium(shape, p, -length, 0, length, 0, rng.uniform(4, 9)))
        else:
            alpha = alpha * (1 - circle(shape, p, 0, 0, rng.uniform(0.12, 0.3) * h))
    light = light_direction(rng)
    if rng.random() < 0.3:  # anodised or painted
        colour, ambient, gloss, shininess = any_colour(rng, (0.3, 0.8), (0.25, 0.8)), 0.5, 0.2, 20.0
    else:
        colour, ambient, gloss, shininess = metal(rng)
    base = surface(rng, colour, size, brushed=rng.random() < 0.7, grain=0.05)
    return stage(rng, alpha, shade(alpha, base, light, bevel=3 * p.unit, relief=3 * p.unit, ambient=ambient,
                                   gloss=gloss, shininess=shininess), light)


def pipe_flange(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    outer = rng.uniform(70, 86)
    p = pose(rng, size, outer)
    bore = outer * rng.uniform(0.22, 0.42)
    face = bore + outer * rng.uniform(0.12, 0.2)
    bolts = int(rng.choice([4, 6, 8]))
    pitch = 0.5 * (face + outer) + 2
    bolt_r = min(rng.uniform(5, 9), 0.45 * (outer - face))
    alpha = circle(shape, p, 0, 0, outer) * (1 - circle(shape, p, 0, 0, bore))
    a0 = rng.uniform(0, np.pi)
    for k in range(bolts):
        a = a0 + 2 * np.pi * k / bolts
        alpha = alpha * (1 - circle(shape, p, pitch * math.cos(a), pitch * math.sin(a), bolt_r))
    light = light_direction(rng)
    if rng.random() < 0.35:
        colour, ambient, gloss, shininess = any_colour(rng, (0.4, 0.8), (0.2, 0.6)), 0.5, 0.12, 15.0
    else:
        colour, ambient, gloss, shininess = metal(rng)
    raised = ring(shape, p, 0, 0, face, bore)
    height = _bevel_height(alpha, 4 * p.unit) * 0.6 + 0.4 * cv2.GaussianBlur(raised, (0, 0), 1.0)
    grooves = 1 + 0.05 * np.sin(np.hypot(*np.mgrid[0:size, 0:size] - np.array([p.cy, p.cx])[:, None, None]) / p.unit * 3.0)
    base = surface(rng, colour, size) * (grooves * (1 - 0.1 * raised))[..., None]
    return stage(rng, alpha, shade(alpha, base, light, bevel=0, relief=6 * p.unit, height=height, ambient=ambient,
                                   gloss=gloss, shininess=shininess), light)


def dowel_pin(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    length, radius = rng.uniform(110, 175), rng.uniform(7, 22)
    p = pose(rng, size, length / 2 + 4)
    ch = rng.uniform(0.15, 0.5) * radius
    half = length / 2
    outline = [[-half, -radius + ch], [-half + ch, -radius], [half - ch, -radius], [half, -radius + ch],
               [half, radius - ch], [half - ch, radius], [-half + ch, radius], [-half, radius - ch]]
    alpha = poly(shape, p, outline)
    light = light_direction(rng)
    colour, ambient, gloss, shininess = metal(rng)
    base = surface(rng, colour, size, brushed=True)
    if rng.random() < 0.4:  # a groove near one end
        gx = rng.uniform(0.55, 0.8) * half * rng.choice([-1, 1])
        groove = poly(shape, p, [[gx - 2, -radius], [gx + 2, -radius], [gx + 2, radius], [gx - 2, radius]])
        base = base * (1 - 0.4 * groove)[..., None]
    return stage(rng, alpha, shade(alpha, base, light, bevel=radius * p.unit, relief=radius * 0.8 * p.unit, dome=True,
                                   ambient=ambient, gloss=gloss, shininess=shininess), light)


def hex_bolt(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    total = rng.uniform(140, 178)
    head_len, across = rng.uniform(18, 30), rng.uniform(40, 58)
    shank_r = across * rng.uniform(0.26, 0.36)
    p = pose(rng, size, total / 2 + 4)
    x0 = -total / 2
    head = poly(shape, p, rounded_rect(head_len, across, 3, x0 + head_len / 2, 0))
    shank = poly(shape, p, [[x0 + head_len - 1, -shank_r], [total / 2 - shank_r * 0.4, -shank_r],
                            [total / 2, -shank_r * 0.6], [total / 2, shank_r * 0.6],
                            [total / 2 - shank_r * 0.4, shank_r], [x0 + head_len - 1, shank_r]])
    alpha = np.clip(head + shank, 0, 1)
    light = light_direction(rng)
    colour, ambient, gloss, shininess = metal(rng)
    base = surface(rng, colour, size, brushed=True)
    facets = wire(shape, p, np.array([[x0, -across / 6], [x0 + head_len, -across / 6]]), 1.5) + \
        wire(shape, p, np.array([[x0, across / 6], [x0 + head_len, across / 6]]), 1.5)
    thread_start = x0 + head_len + rng.uniform(0.1, 0.5) * (total - head_len)
    pitch = rng.uniform(3.5, 7)
    threads = np.zeros(shape, np.float32)
    x = thread_start
    while x < total / 2 - 2:
        threads = np.maximum(threads, wire(shape, p, np.array([[x, -shank_r], [x + pitch * 0.5, shank_r]]), 1.3))
        x += pitch
    base = base * (1 - 0.35 * np.clip(facets, 0, 1) - 0.4 * threads * shank)[..., None]
    return stage(rng, alpha, shade(alpha, base, light, bevel=shank_r * p.unit, relief=shank_r * 0.6 * p.unit,
                                   dome=True, ambient=ambient, gloss=gloss, shininess=shininess), light)


def coil_spring(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    length, radius = rng.uniform(120, 175), rng.uniform(18, 42)
    thickness = rng.uniform(3.5, 8)
    turns = int(min(rng.integers(5, 14), length / (2.6 * thickness)))
    p = pose(rng, size, math.hypot(length / 2, radius) + thickness)
    t = np.linspace(0, turns, turns * 24 + 1)
    x = -length / 2 + length * t / turns
    y = radius * np.cos(2 * np.pi * t)
    front = np.sin(2 * np.pi * t) >= 0
    alpha = np.zeros(shape, np.float32)
    back_alpha = np.zeros(shape, np.float32)
    for k in range(len(t) - 1):
        segment = np.array([[x[k], y[k]], [x[k + 1], y[k + 1]]])
        if front[k]:
            continue
        back_alpha = np.maximum(back_alpha, wire(shape, p, segment, thickness))
    starts = np.flatnonzero(np.diff(np.concatenate([[0], front.astype(int), [0]])) == 1)
    ends = np.flatnonzero(np.diff(np.concatenate([[0], front.astype(int), [0]])) == -1)
    for s, e in zip(starts, ends):
        seg = np.stack([x[s:e + 1], y[s:e + 1]], 1)
        if len(seg) >= 2:
            alpha = np.maximum(alpha, wire(shape, p, seg, thickness))
    light = light_direction(rng)
    colour, ambient, gloss, shininess = metal(rng) if rng.random() < 0.7 else \
        (any_colour(rng, (0.4, 0.8), (0.3, 0.7)), 0.5, 0.2, 20.0)
    front_lit = shade(alpha, colour, light, bevel=thickness * 0.5 * p.unit, relief=thickness * 0.5 * p.unit, dome=True,
                      ambient=ambient, gloss=gloss, shininess=shininess)
    back_lit = 0.6 * shade(back_alpha, colour, light, bevel=thickness * 0.5 * p.unit, relief=thickness * 0.5 * p.unit,
                           dome=True, ambient=ambient, gloss=gloss * 0.5, shininess=shininess)
    total = np.maximum(alpha, back_alpha)
    lit = np.where((alpha > 0.05)[..., None], front_lit, back_lit)
    return stage(rng, total, lit, light)


def star_knob(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    lobes = int(rng.integers(3, 9))
    outer = rng.uniform(62, 84)
    p = pose(rng, size, outer)
    lobe_r = outer * rng.uniform(0.2, 0.35)
    alpha = circle(shape, p, 0, 0, outer - lobe_r * rng.uniform(0.9, 1.4))
    a0 = rng.uniform(0, np.pi)
    for k in range(lobes):
        a = a0 + 2 * np.pi * k / lobes
        alpha = np.maximum(alpha, circle(shape, p, (outer - lobe_r) * math.cos(a), (outer - lobe_r) * math.sin(a), lobe_r))
    light = light_direction(rng)
    colour = [hsv(0, 0, 0.1), hsv(0, 0, 0.2), any_colour(rng, (0.5, 0.9), (0.3, 0.8))][int(rng.integers(3))]
    base = surface(rng, colour, size, grain=0.03)
    insert = circle(shape, p, 0, 0, outer * rng.uniform(0.18, 0.32))
    steel = material(rng, "steel")[0]
    base = mix(base, steel, insert)
    if rng.random() < 0.5:
        base = base * (1 - 0.8 * circle(shape, p, 0, 0, outer * 0.1))[..., None]
    return stage(rng, alpha, shade(alpha, base, light, bevel=outer * 0.3 * p.unit, relief=10 * p.unit, dome=True,
                                   ambient=0.45, gloss=0.25, shininess=30.0), light)


def printed_label(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    w, h = rng.uniform(120, 180), rng.uniform(70, 120)
    p = pose(rng, size, 0.5 * math.hypot(w, h), scale=(0.75, 1.05), max_angle=25)
    alpha = poly(shape, p, rounded_rect(w, h, rng.uniform(0, 12)))
    paper = [material(rng, "paper")[0], any_colour(rng, (0.1, 0.5), (0.75, 0.98))][int(rng.random() < 0.3)]
    ink_colours = palette(rng, 2, s=(0.3, 0.9), v=(0.05, 0.45))
    ink = np.zeros(shape, np.float32)
    accent = np.zeros(shape, np.float32)
    top = -h / 2 + 0.18 * h
    ink = np.maximum(ink, print_text(shape, p, code(rng, "AAAA" if rng.random() < 0.5 else "AAA-00"), 0, top,
                                     0.17 * h, 0.12))
    lines = int(rng.integers(1, 4))
    for k in range(lines):
        y = top + 0.2 * h * (k + 1)
        ink = np.maximum(ink, print_text(shape, p, code(rng) + " " + code(rng), -0.05 * w, y, 0.09 * h))
    if rng.random() < 0.6:  # a barcode
        x = -0.4 * w
        y0, y1 = 0.22 * h, 0.42 * h
        bars = np.zeros(shape, np.float32)
        while x < 0.1 * w:
            bw = rng.choice([1.0, 1.0, 2.0, 3.0])
            bars = np.maximum(bars, poly(shape, p, [[x, y0], [x + bw, y0], [x + bw, y1], [x, y1]]))
            x += bw + rng.choice([1.0, 1.5, 2.5])
        ink = np.maximum(ink, bars)
    if rng.random() < 0.7:  # a logo
        lx, ly = 0.32 * w, 0.25 * h
        logo = circle(shape, p, lx, ly, 0.12 * h) if rng.random() < 0.5 else \
            poly(shape, p, [[lx, ly - 0.14 * h], [lx + 0.14 * h, ly + 0.12 * h], [lx - 0.14 * h, ly + 0.12 * h]])
        accent = np.maximum(accent, logo)
    if rng.random() < 0.5:  # a border
        accent = np.maximum(accent, np.clip(poly(shape, p, rounded_rect(w - 6, h - 6, 5)) -
                                            poly(shape, p, rounded_rect(w - 9, h - 9, 4)), 0, 1))
    base = surface(rng, paper, size, grain=0.02)
    base = mix(mix(base, ink_colours[0], ink * 0.92), ink_colours[1] * 1.6, accent * 0.9)
    light = light_direction(rng)
    curl = cv2.GaussianBlur(alpha, (0, 0), 2 * p.unit) * 0.3
    return stage(rng, alpha, shade(alpha, base, light, bevel=0, relief=3 * p.unit, height=curl, ambient=0.75, gloss=0.02,
                                   shininess=5.0), light, shadow=rng.uniform(0.1, 0.3))


def resistor(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    body_len, body_r = rng.uniform(80, 120), rng.uniform(14, 22)
    lead = rng.uniform(22, 40)
    p = pose(rng, size, body_len / 2 + lead)
    half = body_len / 2
    body = np.maximum(poly(shape, p, rounded_rect(body_len * 0.7, body_r * 1.7, body_r * 0.6)),
                      np.maximum(circle(shape, p, -half + body_r, 0, body_r), circle(shape, p, half - body_r, 0, body_r)))
    leads = wire(shape, p, np.array([[-half - lead, 0], [half + lead, 0]]), rng.uniform(2.5, 4))
    if rng.random() < 0.5:  # leads bent down
        bend = rng.uniform(15, 35)
        leads = wire(shape, p, np.array([[-half - lead + 10, bend], [-half - lead + 10, 0], [half + lead - 10, 0],
                                         [half + lead - 10, bend]]), rng.uniform(2.5, 4))
    alpha = np.maximum(body, leads * (1 - body))
    light = light_direction(rng)
    body_colour = [hsv(0.1, 0.35, 0.85), hsv(0.58, 0.45, 0.75), hsv(0.1, 0.2, 0.6), hsv(0.33, 0.4, 0.5)][int(rng.integers(4))]
    band_colours = [hsv(0, 0, 0.08), hsv(0.07, 0.7, 0.35), hsv(0, 0.8, 0.7), hsv(0.07, 0.9, 0.9), hsv(0.15, 0.9, 0.9),
                    hsv(0.33, 0.8, 0.5), hsv(0.6, 0.8, 0.6), hsv(0.8, 0.6, 0.6), hsv(0, 0, 0.5), hsv(0.12, 0.6, 0.75)]
    base = surface(rng, body_colour, size)
    n_bands = int(rng.choice([4, 5]))
    xs = np.linspace(-half + body_r * 1.3, half - body_r * 1.6, n_bands)
    xs[-1] = half - body_r * 0.9
    for k, bx in enumerate(xs):
        band = poly(shape, p, [[bx - 3, -body_r * 1.2], [bx + 3, -body_r * 1.2], [bx + 3, body_r * 1.2], [bx - 3, body_r * 1.2]])
        base = mix(base, band_colours[int(rng.integers(len(band_colours)))], band * body)
    tin = material(rng, "zinc")[0]
    base = mix(base, tin, leads * (1 - body))
    return stage(rng, alpha, shade(alpha, base, light, bevel=body_r * p.unit, relief=body_r * 0.6 * p.unit, dome=True,
                                   ambient=0.5, gloss=0.2, shininess=25.0), light)


def keycap(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    w = rng.uniform(90, 130)
    h = w * (rng.uniform(0.9, 1.0) if rng.random() < 0.7 else rng.uniform(0.45, 0.6))
    p = pose(rng, size, 0.5 * math.hypot(w, h), max_angle=30)
    alpha = poly(shape, p, rounded_rect(w, h, rng.uniform(6, 14)))
    top = poly(shape, p, rounded_rect(w * 0.76, h * 0.76, rng.uniform(8, 16), 0, -h * 0.04))
    colour = [hsv(0, 0, 0.9), hsv(0, 0, 0.15), hsv(0.1, 0.1, 0.75), any_colour(rng, (0.3, 0.8), (0.3, 0.9))][int(rng.integers(4))]
    legend = hsv(0, 0, 0.1) if colour.mean() > 128 else hsv(0, 0, 0.92)
    label = "".join(rng.choice(list(string.ascii_uppercase + string.digits), int(rng.choice([1, 1, 1, 2, 3]))))
    glyph = print_text((size, size), p, label, -w * 0.15, -h * 0.1, min(0.3 * h, 36), 0.1)
    base = mix(surface(rng, colour, size), legend, glyph * top)
    light = light_direction(rng)
    height = 0.55 * _bevel_height(alpha, 12 * p.unit) + 0.45 * _bevel_height(top, 6 * p.unit, dome=True)
    return stage(rng, alpha, shade(alpha, base, light, bevel=0, relief=12 * p.unit, height=height, ambient=0.5,
                                   gloss=0.15, shininess=25.0), light)


def coin(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    outer = rng.uniform(55, 84)
    p = pose(rng, size, outer)
    alpha = circle(shape, p, 0, 0, outer)
    rim = ring(shape, p, 0, 0, outer, outer * rng.uniform(0.86, 0.92))
    emboss = print_text(shape, p, str(int(rng.choice([1, 2, 5, 10, 20, 50, 100]))), 0, 0, outer * rng.uniform(0.5, 0.7),
                        0.13)
    dots = np.zeros(shape, np.float32)
    if rng.random() < 0.7:
        n = int(rng.integers(8, 20))
        r = outer * 0.78
        for k in range(n):
            a = 2 * np.pi * k / n
            dots = np.maximum(dots, circle(shape, p, r * math.cos(a), r * math.sin(a), outer * 0.035))
    light = light_direction(rng)
    colour, ambient, gloss, shininess = metal(rng, ("brass", "copper", "steel", "aluminium", "zinc"))
    height = 0.5 * _bevel_height(alpha, 3 * p.unit) + 0.5 * cv2.GaussianBlur(np.clip(rim + emboss + dots, 0, 1), (0, 0), 0.8)
    base = surface(rng, colour, size, grain=0.04)
    return stage(rng, alpha, shade(alpha, base, light, bevel=0, relief=4 * p.unit, height=height, ambient=ambient,
                                   gloss=gloss, shininess=shininess), light)


def door_key(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    total = rng.uniform(150, 180)
    bow_r = rng.uniform(24, 36)
    p = pose(rng, size, total / 2 + 2)
    x0 = -total / 2
    bow_cx = x0 + bow_r
    if rng.random() < 0.5:
        bow = circle(shape, p, bow_cx, 0, bow_r)
    else:
        bow = poly(shape, p, rounded_rect(2 * bow_r, 2 * bow_r * rng.uniform(0.8, 1.1), bow_r * 0.5, bow_cx, 0))
    bow = bow * (1 - circle(shape, p, x0 + bow_r * 0.6, 0, bow_r * 0.25))
    blade_h = rng.uniform(12, 18)
    blade_x0 = bow_cx + bow_r * 0.8
    tip = total / 2
    profile = [[blade_x0, -blade_h / 2], [tip - 6, -blade_h / 2], [tip, 0], [tip - 4, blade_h / 2]]
    x = tip - 10
    while x > blade_x0 + 12:  # the bitting: notches of random depth along one edge
        depth = rng.uniform(0, 0.9) * blade_h
        profile += [[x, blade_h / 2 + depth * 0.7], [x - 4, blade_h / 2 + depth * 0.7]]
        x -= rng.uniform(8, 13)
    profile += [[blade_x0, blade_h / 2 + 1]]
    alpha = np.maximum(bow, poly(shape, p, profile))
    light = light_direction(rng)
    colour, ambient, gloss, shininess = metal(rng, ("brass", "steel", "aluminium", "zinc", "copper"))
    groove = wire(shape, p, np.array([[blade_x0 + 4, -1], [tip - 10, -1]]), 2.0)
    base = surface(rng, colour, size, brushed=True) * (1 - 0.3 * groove)[..., None]
    return stage(rng, alpha, shade(alpha, base, light, bevel=3 * p.unit, relief=3 * p.unit, ambient=ambient,
                                   gloss=gloss, shininess=shininess), light)


def paper_clip(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    length, width = rng.uniform(150, 180), rng.uniform(40, 60)
    p = pose(rng, size, length / 2 + 6, scale=(0.8, 1.1))
    L = length / 2
    r1, r2, r3 = width / 2, 0.36 * width, 0.24 * width

    def arc(cx: float, cy: float, r: float, start: float, stop: float) -> np.ndarray:
        a = np.radians(np.linspace(start, stop, 16))
        return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)

    y1 = 0.0
    y2 = y1 - r1 + r2
    y3 = y2 + r2 - r3
    path = np.concatenate([
        np.array([[-L + rng.uniform(0.3, 0.45) * length, y1 + r1]]),   # the free end, on the outer top line
        arc(L - r1, y1, r1, 90, -90),                                    # outer turn (right)
        arc(-L + r2, y2, r2, -90, -270),                                 # middle turn (left)
        arc(L - r1 - rng.uniform(0.12, 0.2) * length, y3, r3, 90, -90),  # inner turn (right)
        np.array([[-L + r2 + rng.uniform(0.25, 0.4) * length, y3 - r3]]),  # the inner free end
    ])
    thickness = rng.uniform(5, 9)
    alpha = wire(shape, p, path, thickness)
    light = light_direction(rng)
    colour, ambient, gloss, shininess = metal(rng, ("steel", "aluminium", "zinc")) if rng.random() < 0.6 else \
        (any_colour(rng, (0.5, 0.9), (0.4, 0.9)), 0.5, 0.25, 30.0)
    return stage(rng, alpha, shade(alpha, colour, light, bevel=thickness * 0.5 * p.unit, relief=thickness * 0.5 * p.unit,
                                   dome=True, ambient=ambient, gloss=gloss, shininess=shininess), light)


def blister_pack(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    rows, cols = int(rng.integers(2, 4)), int(rng.integers(2, 5))
    pitch = rng.uniform(34, 46)
    w, h = cols * pitch + 14, rows * pitch + 14
    p = pose(rng, size, 0.5 * math.hypot(w, h), max_angle=30)
    foil = poly(shape, p, rounded_rect(w, h, 6))
    tablet_r = pitch * rng.uniform(0.3, 0.4)
    oval = rng.random() < 0.3
    tablets = np.zeros(shape, np.float32)
    domes = np.zeros(shape, np.float32)
    for i in range(rows):
        for j in range(cols):
            x = (j - (cols - 1) / 2) * pitch
            y = (i - (rows - 1) / 2) * pitch
            domes = np.maximum(domes, circle(shape, p, x, y, tablet_r * 1.2))
            if oval:
                tablets = np.maximum(tablets, poly(shape, p, rounded_rect(tablet_r * 2, tablet_r * 1.2, tablet_r * 0.6, x, y)))
            else:
                tablets = np.maximum(tablets, circle(shape, p, x, y, tablet_r))
    light = light_direction(rng)
    foil_colour = material(rng, "aluminium")[0] if rng.random() < 0.7 else any_colour(rng, (0.3, 0.7), (0.5, 0.8))
    tablet_colour = [hsv(0, 0, 0.95), hsv(0.1, 0.3, 0.9), any_colour(rng, (0.3, 0.7), (0.6, 0.95))][int(rng.integers(3))]
    base = surface(rng, foil_colour, size, grain=0.08)
    height = 0.2 * _bevel_height(foil, 2 * p.unit) + 0.8 * _bevel_height(domes, tablet_r * 0.6 * p.unit, dome=True)
    lit_foil = shade(foil, base, light, bevel=0, relief=8 * p.unit, height=height, ambient=0.45, gloss=0.35,
                     shininess=25.0)
    lit_tablet = shade(tablets, tablet_colour, light, bevel=tablet_r * 0.5 * p.unit, relief=5 * p.unit, dome=True,
                       ambient=0.6, gloss=0.1, shininess=10.0)
    colour = mix(lit_foil, lit_tablet * 0.95, tablets * 0.9)
    return stage(rng, foil, colour, light)


def ball_bearing(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    outer = rng.uniform(64, 84)
    p = pose(rng, size, outer)
    race_o = outer * rng.uniform(0.76, 0.84)
    bore = outer * rng.uniform(0.25, 0.4)
    race_i = bore + outer * rng.uniform(0.12, 0.18)
    gap = race_o - race_i
    balls = max(int(2 * np.pi * (race_i + gap / 2) / (gap * 1.15)), 5)
    outer_ring = ring(shape, p, 0, 0, outer, race_o)
    inner_ring = ring(shape, p, 0, 0, race_i, bore)
    ball = np.zeros(shape, np.float32)
    for k in range(balls):
        a = 2 * np.pi * k / balls
        ball = np.maximum(ball, circle(shape, p, (race_i + gap / 2) * math.cos(a), (race_i + gap / 2) * math.sin(a),
                                       gap * 0.46))
    light = light_direction(rng)
    colour, ambient, gloss, shininess = metal(rng, ("steel", "dark_steel", "aluminium"))
    rings = np.clip(outer_ring + inner_ring, 0, 1)
    shield = rng.random() < 0.3  # a sealed bearing: a coloured shield hides the balls
    if shield:
        seal = ring(shape, p, 0, 0, race_o, race_i)
        seal_colour = [hsv(0, 0, 0.1), hsv(0.0, 0.7, 0.5), hsv(0.6, 0.6, 0.5)][int(rng.integers(3))]
        alpha = np.clip(rings + seal, 0, 1)
        lit = shade(alpha, np.where(seal[..., None] > 0.5, seal_colour, colour), light, bevel=2 * p.unit,
                    relief=4 * p.unit, ambient=0.5, gloss=gloss, shininess=shininess)
        return stage(rng, alpha, lit, light)
    lit_rings = shade(rings, surface(rng, colour, size), light, bevel=3 * p.unit, relief=4 * p.unit, ambient=ambient,
                      gloss=gloss, shininess=shininess)
    lit_balls = shade(ball, colour, light, bevel=gap * 0.46 * p.unit, relief=gap * 0.46 * p.unit, dome=True,
                      ambient=0.35, gloss=0.6, shininess=40.0)
    alpha = np.clip(rings + ball, 0, 1)
    inside = ring(shape, p, 0, 0, race_o, race_i) * (1 - ball)
    cavity = np.clip(inside, 0, 1)
    alpha = np.clip(alpha + cavity, 0, 1)
    colour_map = mix(mix(lit_rings, lit_balls, ball), colour * 0.2, cavity)
    return stage(rng, alpha, colour_map, light)


def wing_nut(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    span = rng.uniform(70, 86)
    boss = rng.uniform(20, 30)
    p = pose(rng, size, span)
    wing_w = rng.uniform(22, 34)
    alpha = circle(shape, p, 0, 0, boss)
    for side in (-1, 1):
        tip = side * span
        wing = np.maximum(circle(shape, p, tip - side * wing_w * 0.5, -wing_w * 0.15, wing_w * 0.55),
                          poly(shape, p, [[side * boss * 0.5, -boss * 0.7], [tip - side * wing_w * 0.6, -wing_w * 0.7],
                                          [tip - side * wing_w * 0.5, wing_w * 0.4], [side * boss * 0.5, boss * 0.7]]))
        alpha = np.maximum(alpha, wing)
    alpha = alpha * (1 - circle(shape, p, 0, 0, boss * rng.uniform(0.4, 0.55)))
    light = light_direction(rng)
    colour, ambient, gloss, shininess = metal(rng)
    base = surface(rng, colour, size, grain=0.05)
    height = np.maximum(_bevel_height(alpha, 6 * p.unit, dome=True),
                        _bevel_height(ring(shape, p, 0, 0, boss, boss * 0.5), 6 * p.unit, dome=True))
    return stage(rng, alpha, shade(alpha, base, light, bevel=0, relief=7 * p.unit, height=height, ambient=ambient,
                                   gloss=gloss, shininess=shininess), light)


def extrusion_profile(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    half = rng.uniform(50, 65)
    p = pose(rng, size, half * 1.42)
    alpha = poly(shape, p, rounded_rect(2 * half, 2 * half, rng.uniform(2, 8)))
    slot = half * rng.uniform(0.25, 0.38)
    depth = half * rng.uniform(0.3, 0.45)
    under = slot * rng.uniform(1.6, 2.2)
    for k in range(4):
        a = k * np.pi / 2
        c, s = math.cos(a), math.sin(a)

        def rot(points: list[list[float]]) -> list[list[float]]:
            return [[x * c - y * s, x * s + y * c] for x, y in points]
        opening = [[half + 1, -slot / 2], [half - depth * 0.35, -slot / 2], [half - depth * 0.35, slot / 2], [half + 1, slot / 2]]
        cavity = [[half - depth * 0.3, -under / 2], [half - depth, -under / 3], [half - depth, under / 3],
                  [half - depth * 0.3, under / 2]]
        alpha = alpha * (1 - poly(shape, p, rot(opening))) * (1 - poly(shape, p, rot(cavity)))
    alpha = alpha * (1 - circle(shape, p, 0, 0, half * rng.uniform(0.12, 0.22)))
    for sx in (-1, 1):
        for sy in (-1, 1):
            if rng.random() < 0.6:
                alpha = alpha * (1 - circle(shape, p, sx * half * 0.68, sy * half * 0.68, half * 0.08))
    light = light_direction(rng)
    colour = material(rng, "aluminium")[0] if rng.random() < 0.7 else any_colour(rng, (0.3, 0.7), (0.15, 0.5))
    base = surface(rng, colour, size, brushed=True, grain=0.06)
    return stage(rng, alpha, shade(alpha, base, light, bevel=2 * p.unit, relief=2 * p.unit, ambient=0.55, gloss=0.2,
                                   shininess=15.0), light)


def cable_cross_section(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    outer = rng.uniform(55, 84)
    p = pose(rng, size, outer)
    sheath_t = outer * rng.uniform(0.08, 0.16)
    alpha = circle(shape, p, 0, 0, outer)
    cores = int(rng.integers(2, 8))
    inner = outer - sheath_t
    core_r = inner * (0.42 if cores <= 2 else 0.36 if cores <= 4 else 0.26)
    ring_r = inner - core_r * 1.05 if cores > 1 else 0.0
    sheath_colour = [hsv(0, 0, 0.12), hsv(0, 0, 0.85), hsv(0.08, 0.8, 0.7), hsv(0.6, 0.4, 0.5), any_colour(rng)][int(rng.integers(5))]
    filler = any_colour(rng, (0.0, 0.15), (0.5, 0.85))
    base = mix(surface(rng, sheath_colour, size), filler, circle(shape, p, 0, 0, inner))
    insulation_colours = [hsv(0.07, 0.7, 0.5), hsv(0, 0, 0.1), hsv(0, 0, 0.55), hsv(0.6, 0.7, 0.6), hsv(0.15, 0.9, 0.85),
                          hsv(0.33, 0.7, 0.55), hsv(0.0, 0.8, 0.7)]
    order = rng.permutation(len(insulation_colours))
    copper = material(rng, "copper")[0]
    height = 0.4 * _bevel_height(alpha, 3 * p.unit)
    a0 = rng.uniform(0, np.pi)
    for k in range(cores):
        a = a0 + 2 * np.pi * k / cores
        cx, cy = ring_r * math.cos(a), ring_r * math.sin(a)
        insulation = circle(shape, p, cx, cy, core_r)
        conductor = circle(shape, p, cx, cy, core_r * 0.62)
        base = mix(base, insulation_colours[order[k % len(order)]], insulation)
        base = mix(base, copper, conductor)
        strands = np.zeros(shape, np.float32)
        for m in range(7):
            sa = 2 * np.pi * m / 6
            sr = 0 if m == 6 else core_r * 0.4
            strands = np.maximum(strands, ring(shape, p, cx + sr * math.cos(sa), cy + sr * math.sin(sa), core_r * 0.2,
                                               core_r * 0.16))
        base = base * (1 - 0.35 * strands * conductor)[..., None]
        height = height + 0.3 * _bevel_height(insulation, 2 * p.unit)
    light = light_direction(rng)
    return stage(rng, alpha, shade(alpha, base, light, bevel=0, relief=3 * p.unit, height=height, ambient=0.55,
                                   gloss=0.1, shininess=15.0), light)


def dice_cube(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    side = rng.uniform(80, 120)
    p = pose(rng, size, side * 0.72)
    alpha = poly(shape, p, rounded_rect(side, side, side * rng.uniform(0.1, 0.22)))
    colour = [hsv(0, 0, 0.93), hsv(0, 0.8, 0.7), hsv(0.1, 0.15, 0.88), hsv(0, 0, 0.1), any_colour(rng)][int(rng.integers(5))]
    pip_colour = hsv(0, 0, 0.05) if colour.mean() > 110 else hsv(0, 0, 0.95)
    face = int(rng.integers(1, 7))
    spots = {1: [(0, 0)], 2: [(-1, -1), (1, 1)], 3: [(-1, -1), (0, 0), (1, 1)], 4: [(-1, -1), (1, -1), (-1, 1), (1, 1)],
             5: [(-1, -1), (1, -1), (0, 0), (-1, 1), (1, 1)], 6: [(-1, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (1, 1)]}
    pips = np.zeros(shape, np.float32)
    for sx, sy in spots[face]:
        pips = np.maximum(pips, circle(shape, p, sx * side * 0.27, sy * side * 0.27, side * 0.09))
    base = mix(surface(rng, colour, size, grain=0.02), pip_colour, pips)
    light = light_direction(rng)
    height = _bevel_height(alpha, side * 0.12 * p.unit, dome=True) - 0.4 * cv2.GaussianBlur(pips, (0, 0), 1.0)
    return stage(rng, alpha, shade(alpha, base, light, bevel=0, relief=8 * p.unit, height=height, ambient=0.5,
                                   gloss=0.2, shininess=30.0), light)


def nameplate(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    w, h = rng.uniform(140, 180), rng.uniform(60, 100)
    p = pose(rng, size, 0.5 * math.hypot(w, h), scale=(0.75, 1.05), max_angle=30)
    alpha = poly(shape, p, rounded_rect(w, h, rng.uniform(2, 12)))
    colour, ambient, gloss, shininess = metal(rng, ("brass", "aluminium", "steel")) if rng.random() < 0.7 else \
        (any_colour(rng, (0.3, 0.7), (0.1, 0.35)), 0.5, 0.25, 25.0)
    engraved = np.zeros(shape, np.float32)
    lines = int(rng.integers(1, 4))
    for k in range(lines):
        y = (k - (lines - 1) / 2) * h * 0.26
        engraved = np.maximum(engraved, print_text(shape, p, code(rng, "AAAA 000" if k == 0 else None), 0, y,
                                                   h * (0.18 if k == 0 else 0.13), 0.1))
    screws = np.zeros(shape, np.float32)
    inset = rng.uniform(8, 12)
    for sx in (-1, 1):
        for sy in ((-1, 1) if rng.random() < 0.5 else (0,)):
            screws = np.maximum(screws, circle(shape, p, sx * (w / 2 - inset), sy * (h / 2 - inset), 5.5))
    base = surface(rng, colour, size, brushed=True, grain=0.05)
    ink = colour * 0.35 if colour.mean() > 90 else np.array([235, 232, 220], np.float32)
    base = mix(base, ink, engraved * 0.9)
    base = mix(base, material(rng, "steel")[0], screws)
    light = light_direction(rng)
    height = 0.6 * _bevel_height(alpha, 2 * p.unit) - 0.2 * engraved + 0.5 * _bevel_height(screws, 3 * p.unit, dome=True)
    return stage(rng, alpha, shade(alpha, base, light, bevel=0, relief=3 * p.unit, height=height, ambient=ambient,
                                   gloss=gloss, shininess=shininess), light)


def rivet_strip(rng: np.random.Generator, size: int) -> ObjectScene:
    shape: Shape = (size, size)
    length, width = rng.uniform(150, 180), rng.uniform(36, 70)
    p = pose(rng, size, 0.5 * math.hypot(length, width))
    alpha = poly(shape, p, rounded_rect(length, width, rng.uniform(0, 8)))
    rows = 2 if width > 55 and rng.random() < 0.6 else 1
    n = int(rng.integers(3, 9))
    head = rng.uniform(5, 8)
    rivets = np.zeros(shape, np.float32)
    for r in range(rows):
        y = 0 if rows == 1 else (r - 0.5) * width * 0.5
        for k in range(n):
            x = (k - (n - 1) / 2) * (length - 4 * head) / max(n - 1, 1)
            rivets = np.maximum(rivets, circle(shape, p, x, y, head))
    colour, ambient, gloss, shininess = metal(rng)
    base = surface(rng, colour, size, brushed=True, grain=0.05)
    light = light_direction(rng)
    height = 0.3 * _bevel_height(alpha, 2 * p.unit) + 0.7 * _bevel_height(rivets, head * p.unit, dome=True)
    return stage(rng, alpha, shade(alpha, base, light, bevel=0, relief=6 * p.unit, height=height, ambient=ambient,
                                   gloss=gloss, shininess=shininess), light)


def parts_tray(rng: np.random.Generator, size: int) -> ObjectScene:
    """A regular layout of identical small parts (washers, nuts, discs, pins) on one backdrop."""
    shape: Shape = (size, size)
    rows, cols = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    pitch = min(200 / max(rows, cols), 80)
    p = pose(rng, size, pitch * max(rows, cols) * 0.55 + 4, scale=(0.8, 1.0), max_angle=20)
    kind = int(rng.integers(4))
    r = pitch * rng.uniform(0.3, 0.4)
    alpha = np.zeros(shape, np.float32)
    jitter = rng.uniform(0, 0.06) * pitch
    sides = int(rng.choice([5, 6, 8]))
    a_fixed = rng.uniform(0, np.pi)
    for i in range(rows):
        for j in range(cols):
            x = (j - (cols - 1) / 2) * pitch + rng.normal(0, jitter)
            y = (i - (rows - 1) / 2) * pitch + rng.normal(0, jitter)
            if kind == 0:  # washers
                piece = ring(shape, p, x, y, r, r * 0.45)
            elif kind == 1:  # nuts
                a0 = a_fixed + rng.normal(0, 0.15)
                piece = poly(shape, p, [[x + r * math.cos(a0 + 2 * np.pi * k / sides), y + r * math.sin(a0 + 2 * np.pi * k / sides)]
                                        for k in range(sides)]) * (1 - circle(shape, p, x, y, r * 0.42))
            elif kind == 2:  # discs
                piece = circle(shape, p, x, y, r)
            else:  # short pins
                a = a_fixed + rng.normal(0, 0.08)
                dx, dy = r * 1.2 * math.cos(a), r * 1.2 * math.sin(a)
                piece = wire(shape, p, np.array([[x - dx, y - dy], [x + dx, y + dy]]), r * 0.45)
            alpha = np.maximum(alpha, piece)
    colour, ambient, gloss, shininess = metal(rng) if rng.random() < 0.7 else \
        (any_colour(rng, (0.3, 0.8), (0.3, 0.9)), 0.5, 0.2, 20.0)
    light = light_direction(rng)
    dome = kind in (2, 3)
    return stage(rng, alpha, shade(alpha, surface(rng, colour, size), light, bevel=(r * 0.4 if dome else 2.5) * p.unit,
                                   relief=4 * p.unit, dome=dome, ambient=ambient, gloss=gloss, shininess=shininess), light)
