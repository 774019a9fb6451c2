"""Helpers of the texture families (`family_textures`, `family_patterns`): a gray image tinted, random
colours per cell id, ids hashed, cell borders, a warp.
"""

from __future__ import annotations


import cv2
import numpy as np

from siad.data.synth.appearance import two_tone
from siad.data.synth.common import _grid, _noise, _tint

Shape = tuple[int, int]


def gray_tint(rng: np.random.Generator, gray: np.ndarray, **kwargs: object) -> np.ndarray:
    dark, light = two_tone(rng, **kwargs)  # type: ignore[arg-type]
    return _tint(np.clip(gray, 0, 1), dark, light)


def lookup(rng: np.random.Generator, ids: np.ndarray, n: int = 4096) -> np.ndarray:
    """A random value (standard normal) per integer id, the same for every pixel of an id."""
    table = rng.standard_normal(n).astype(np.float32)
    return table[np.mod(ids, n).astype(np.int64)]


def hash_ids(*parts: np.ndarray) -> np.ndarray:
    """One integer id per pixel from integer-valued cell indices."""
    h = np.zeros(parts[0].shape, np.int64)
    for k, p in enumerate(parts):
        h = h * (7919 + 2 * k) + p.astype(np.int64) + 104729
    return np.abs(h)


def borders(ids: np.ndarray) -> np.ndarray:
    """Distance (pixels) of every pixel to the nearest change of `ids`."""
    border = np.zeros(ids.shape, bool)
    border[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    border[1:, :] |= ids[1:, :] != ids[:-1, :]
    return cv2.distanceTransform((~border).astype(np.uint8), cv2.DIST_L2, 5)


def displace(rng: np.random.Generator, image: np.ndarray, amount: float, cells: int) -> np.ndarray:
    """Warp an image (2-D or 3-D float) by a smooth random displacement of about `amount` pixels."""
    size = image.shape[0]
    y, x = _grid(size)
    map_x = x + amount * _noise(rng, (size, size), cells)
    map_y = y + amount * _noise(rng, (size, size), cells)
    return cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
