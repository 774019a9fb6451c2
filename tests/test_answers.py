"""Position words with custom grid edges (siad.answers), and that the default stays the thirds."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from siad.answers import answer_from_mask, position_word, region_positions
from siad.prompts import POSITION_WORDS


def thirds_reference(cy: float, cx: float, height: int, width: int) -> str:
    """The first version's formula."""
    row = min(max(int(cy * 3 // height), 0), 2)
    col = min(max(int(cx * 3 // width), 0), 2)
    return POSITION_WORDS[row * 3 + col]


def test_default_edges_are_the_old_thirds() -> None:
    rng = np.random.default_rng(0)
    for height in (1, 2, 3, 7, 14, 90, 224, 256):
        values = [k / 2 for k in range(-2, 2 * height + 4)] + [height / 3, 2 * height / 3]
        values += list(rng.uniform(-1, height + 1, 30))
        for cy in values:
            for cx in values[::3]:
                expected = thirds_reference(cy, cx, height, height)
                assert position_word(cy, cx, height, height) == expected
                assert position_word(cy, cx, height, height, (Fraction(1, 3), Fraction(2, 3))) == expected


def test_custom_edges_move_the_cells() -> None:
    # PEM groups of a 14 x 14 patch grid at 224 px: 5 / 4 / 5 patches, edges at 80 and 144 px
    pem = (5 / 14, 9 / 14)
    assert position_word(78.0, 78.0, 224, 224) == "center"  # past the third (74.7 px)
    assert position_word(78.0, 78.0, 224, 224, pem) == "top left"  # before 80 px
    # an edge belongs to the next cell; float edges are read as the nearest small fraction (5/14)
    assert position_word(80.0, 144.0, 224, 224, pem) == "right"
    assert position_word(79.5, 143.5, 224, 224, pem) == "top"
    assert position_word(79.5, 144.0, 224, 224, pem) == "top right"
    mask = np.zeros((224, 224), bool)
    mask[70:86, 140:150] = True  # centre (78, 145)
    assert region_positions(mask) == ["center"]
    assert region_positions(mask, edges=pem) == ["top right"]
    assert answer_from_mask(mask, edges=pem).endswith("at the top right of the image.")
    assert region_positions(mask, edges=(0.5, 0.75)) == ["top"]


@pytest.mark.parametrize("edges", [(0.5, 0.5), (0.7, 0.2), (0.0, 0.5), (0.5, 1.0), (0.2,), "ab", (None, 0.5)])
def test_bad_edges(edges: object) -> None:
    with pytest.raises(ValueError, match="edges"):
        position_word(1.0, 1.0, 10, 10, edges)  # type: ignore[arg-type]
