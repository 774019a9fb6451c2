"""From a mask to the answer text of DESIGN 3.9 (the LLM's training target).

Each 8-connected region of the mask gets the position word of its own centre (the centre of its
bounding box) on a 3 x 3 grid: top left ... bottom right. The grid's inner edges are fractions of the
height and width, thirds by default (`edges`; for instance (5/14, 9/14) puts them where the PEM's 3 x 3
groups of a 14 x 14 patch grid change). The answer lists the regions; a mask with no region gives the
normal answer.
"""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np

from siad.prompts import POSITION_WORDS, answer_text

THIRDS: tuple[Fraction, Fraction] = (Fraction(1, 3), Fraction(2, 3))


def group_edges(cells: int, groups: int) -> list[int]:
    """Where a row of `cells` cells is cut into `groups` groups of (nearly) equal size: groups + 1 cell
    indices, 0 first and `cells` last (14 PEM patches in 3 groups: 0, 5, 9, 14). The PEM's 3 x 3 groups
    and the answers' position grid (`pem_position_edges`) both come from here."""
    return [round(i * cells / groups) for i in range(groups + 1)]


def pem_position_edges(image_size: int, patch_size: int) -> tuple[Fraction, Fraction]:
    """The inner edges (fractions of the side) of the position grid that matches the PEM's 3 x 3 groups
    of `image_size / patch_size` patches a side: (5/14, 9/14) for 224 px and 16 px patches."""
    cells = image_size // patch_size
    edges = group_edges(cells, 3)
    return Fraction(edges[1], cells), Fraction(edges[2], cells)


def check_edges(edges: tuple[float, float] | None) -> tuple[Fraction, Fraction]:
    """`edges` (two fractions 0 < a < b < 1; None: thirds) as exact fractions. Floats are read as the
    nearest fraction with a denominator up to 10 000 (5 / 14 written as a float is exactly 5/14)."""
    if edges is None:
        return THIRDS
    try:
        first, second = (Fraction(e).limit_denominator(10_000) for e in edges)
    except (TypeError, ValueError) as error:
        raise ValueError(f"edges must be two numbers 0 < a < b < 1, got {edges!r}") from error
    if not 0 < first < second < 1:
        raise ValueError(f"edges must be two numbers 0 < a < b < 1, got {edges!r}")
    return first, second


def _cell(value: float, size: int, edges: tuple[Fraction, Fraction]) -> int:
    """0, 1 or 2: how many edges n / d (fractions of `size`) lie at or before `value`, tested as
    value * d >= n * size (for thirds this is the old `int(value * 3 // size)`, clamped to 0..2)."""
    return sum(value * edge.denominator >= edge.numerator * size for edge in edges)


def position_word(cy: float, cx: float, height: int, width: int,
                  edges: tuple[float, float] | None = None) -> str:
    """The 3 x 3 grid word of the point (cy, cx), in pixel units, of an image of the given size.

    edges: the grid's inner edges as fractions of the height and of the width (default thirds).
    """
    inner = check_edges(edges)
    return POSITION_WORDS[_cell(cy, height, inner) * 3 + _cell(cx, width, inner)]


def region_positions(mask: np.ndarray, min_area: int = 1, edges: tuple[float, float] | None = None) -> list[str]:
    """One position word per 8-connected region of `mask` (H x W, bool or numbers > 0.5 are set).

    Regions smaller than `min_area` pixels are ignored. Words are ordered top left to bottom right.
    edges: the 3 x 3 grid's inner edges as fractions (default thirds, see `position_word`).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {mask.shape}")
    binary = (mask > 0.5).astype(np.uint8) if mask.dtype != bool else mask.astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    height, width = binary.shape
    inner = check_edges(edges)
    found: list[tuple[int, float, float]] = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < min_area:
            continue
        cy, cx = y + h / 2.0, x + w / 2.0
        word = position_word(cy, cx, height, width, inner)
        found.append((POSITION_WORDS.index(word), cy, cx))
    found.sort()
    return [POSITION_WORDS[index] for index, _, _ in found]


def answer_from_mask(mask: np.ndarray, min_area: int = 1, edges: tuple[float, float] | None = None) -> str:
    """The answer text of DESIGN 3.9 for a ground-truth (or pseudo-anomaly) mask."""
    return answer_text(region_positions(mask, min_area=min_area, edges=edges))
