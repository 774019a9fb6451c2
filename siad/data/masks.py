"""Ground-truth masks: any mask file as a bool array, resized like the encoder's input, and the check
that a mask has its image's size.

- `load_mask(path, size=None)`: set where the mask is > 0 (VisA's small values, 0/255, BMP labels).
- `resize_mask(mask, size)`: nearest neighbours, with the geometry of `siad.image.resize_for_encoder`.
- `check_mask_sizes(samples)`: one `MaskSizeWarning` naming the masks whose size differs from their
  image's (`mask_size_mismatch`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from siad.data.sample import PathLike, Sample
from siad.image import center_crop_geometry, upright_size


class MaskSizeWarning(UserWarning):
    """A ground-truth mask whose size differs from its image's (it is resized to the image's)."""


def load_mask(path: PathLike, size: int | tuple[int, int] | None = None, mode: str = "squash") -> np.ndarray:
    """Read a mask file as a bool array: a pixel is set where the mask is > 0.

    Any mask format is binarised the same way: VisA's masks (small non-zero values), 0/255 PNGs,
    KolektorSDD's BMP labels, palette or RGB masks (a pixel is set where any colour channel is > 0).
    An EXIF orientation is applied, as `siad.image.load_rgb` applies it to images.
    `size` (an int for a square, or (height, width)) resizes with nearest neighbours, with the same
    geometry as `siad.image.resize_for_encoder` (mode "squash" or "center_crop"; center_crop needs
    an int size).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask file not found: {path}")
    try:
        with Image.open(path) as opened:
            upright = ImageOps.exif_transpose(opened)
            array = np.asarray(upright.convert("RGB") if upright.mode == "P" else upright)
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{path} is not a mask image that can be read: {error}") from error
    if array.ndim == 3:
        channels = array.shape[2]
        array = array[:, :, :3] if channels >= 3 else array[:, :, :1]  # drop alpha
        array = array.max(axis=2)
    mask = array > 0
    if size is None:
        return mask
    return resize_mask(mask, size, mode)


def mask_size_mismatch(mask_path: PathLike, image_path: PathLike) -> str | None:
    """None when the mask has its image's size (both upright, read from the file headers), else a
    sentence naming both files and sizes. Evaluation resizes a mask to the map's size; a mask of
    another size than its image is then stretched (or shrunk) to it."""
    mask_size, image_size = upright_size(mask_path), upright_size(image_path)
    if mask_size == image_size:
        return None
    (mh, mw), (ih, iw) = mask_size, image_size
    stretched = " (another aspect ratio: it is stretched)" if abs(mw / mh - iw / ih) > 0.01 * iw / ih else ""
    return f"the mask {mask_path} is {mw}x{mh} but its image {image_path} is {iw}x{ih}{stretched}"


def check_mask_sizes(samples: Iterable[Sample]) -> list[str]:
    """Compare every sample's mask with its image (`mask_size_mismatch`); one `MaskSizeWarning` lists
    the masks that differ (the first 10 by name). Returns all the mismatches found."""
    found = []
    for sample in samples:
        if sample.mask_path is not None:
            try:
                problem = mask_size_mismatch(sample.mask_path, sample.image_path)
            except (OSError, SyntaxError, ValueError):
                continue  # an unreadable file is reported where it is read
            if problem is not None:
                found.append(problem)
    if found:
        more = f"; and {len(found) - 10} more" if len(found) > 10 else ""
        warnings.warn(f"{len(found)} mask(s) differ in size from their image and are resized to it: "
                      f"{'; '.join(found[:10])}{more}", MaskSizeWarning, stacklevel=3)
    return found


def resize_mask(mask: np.ndarray, size: int | tuple[int, int], mode: str = "squash") -> np.ndarray:
    """Nearest-neighbour resize of a bool mask with the geometry of `resize_for_encoder`."""
    image = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
    if mode == "squash":
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        return np.asarray(image.resize((width, height), Image.Resampling.NEAREST)) > 0
    if mode != "center_crop":
        raise ValueError(f"resize mode must be 'squash' or 'center_crop', got {mode!r}")
    if not isinstance(size, int):
        raise ValueError(f"center_crop needs a square size (an int), got {size!r}")
    new_w, new_h, left, top = center_crop_geometry(image.width, image.height, size)
    image = image.resize((new_w, new_h), Image.Resampling.NEAREST)
    return np.asarray(image.crop((left, top, left + size, top + size))) > 0
