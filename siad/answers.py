"""From a mask to the answer text of DESIGN 3.9 (the LLM's training target).

Each 8-connected region of the mask gets the position word of its own centre (the centre of its
bounding box) on a 3 x 3 grid: top left ... bottom right. The answer lists the regions; a mask with
no region gives the normal answer.
"""

from __future__ import annotations

import cv2
import numpy as np

from siad.prompts import POSITION_WORDS, answer_text


def position_word(cy: float, cx: float, height: int, width: int) -> str:
    """The 3 x 3 grid word of the point (cy, cx), in pixel units, of an image of the given size."""
    row = min(max(int(cy * 3 // height), 0), 2)
    col = min(max(int(cx * 3 // width), 0), 2)
    return POSITION_WORDS[row * 3 + col]


def region_positions(mask: np.ndarray, min_area: int = 1) -> list[str]:
    """One position word per 8-connected region of `mask` (H x W, bool or numbers > 0.5 are set).

    Regions smaller than `min_area` pixels are ignored. Words are ordered top left to bottom right.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {mask.shape}")
    binary = (mask > 0.5).astype(np.uint8) if mask.dtype != bool else mask.astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    height, width = binary.shape
    found: list[tuple[int, float, float]] = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < min_area:
            continue
        cy, cx = y + h / 2.0, x + w / 2.0
        word = position_word(cy, cx, height, width)
        found.append((POSITION_WORDS.index(word), cy, cx))
    found.sort()
    return [POSITION_WORDS[index] for index, _, _ in found]


def answer_from_mask(mask: np.ndarray, min_area: int = 1) -> str:
    """The answer text of DESIGN 3.9 for a ground-truth (or pseudo-anomaly) mask."""
    return answer_text(region_positions(mask, min_area=min_area))
