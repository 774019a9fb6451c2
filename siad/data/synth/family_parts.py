"""Part families for training, machine parts: nuts, rings, plates with holes, flanges, pins, bolts,
springs, knobs, bearings, profiles, rivets and trays of small parts, composed from parametric primitives,
shaded under a random light, with a soft shadow, on a random backdrop, then photographed
(`appearance.finish`); the drawing helpers are `part_drawing`'s. Printed and everyday objects are
`family_objects`.

Each generator is `draw(rng, size) -> ObjectScene` (image, the part's foreground, the same scene without
the part). None of them is one of SIAD-Synth's test classes (connector, capsule, gear, bracket) or uses
their generators; toothed wheels are left out on purpose (gear is a test class).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from siad.data.synth.appearance import any_colour, hsv, light_direction, material, mix
from siad.data.synth.common import ObjectScene
from siad.data.synth.part_drawing import (Shape, circle, metal, poly, pose, ring, rounded_rect, shade, stadium, stage,
                                          surface, wire)
from siad.data.synth.parts import _bevel_height


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
