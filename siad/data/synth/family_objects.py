"""Part families for training, printed and everyday objects: labels, resistors, keycaps, coins, keys,
paper clips, blister packs, cable cross-sections, dice and nameplates, drawn as `family_parts` draws
machine parts (`part_drawing`).

Each generator is `draw(rng, size) -> ObjectScene` (image, the part's foreground, the same scene without
the part). None of them is one of SIAD-Synth's test classes (connector, capsule, gear, bracket) or uses
their generators.
"""

from __future__ import annotations

import math
import string

import cv2
import numpy as np

from siad.data.synth.appearance import any_colour, hsv, light_direction, material, mix, palette
from siad.data.synth.common import ObjectScene
from siad.data.synth.part_drawing import (Shape, circle, code, metal, poly, pose, print_text, ring, rounded_rect,
                                          shade, stage, surface, wire)
from siad.data.synth.parts import _bevel_height


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
