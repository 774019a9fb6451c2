"""Image input and output: the one place where pictures become encoder inputs and maps go back.

- `load_rgb()` turns a path, a PIL image of any mode or a numpy array (H x W, H x W x 1/3/4; uint8,
  uint16, integers, bool or float) into an RGB uint8 array, downscaled first when it is larger than
  a bound, and remembers the original size. An input of more pixels than a budget
  (`VisionConfig.max_input_pixels`) is refused from its header, before anything is decoded. The EXIF
  orientation is applied for every format (JPEG, PNG eXIf, WebP, TIFF), as browsers and PIL show
  it; of a multi-frame file (animated GIF/WebP, multi-page TIFF) frame 0 is used, with a warning.
- `resize_for_encoder()` makes the encoder's square input (bicubic; "squash" or ImageBind's
  "center_crop"), `normalize()` turns a batch of them into a tensor with the CLIP mean and std.
- `prepare_image()` does both steps ahead of time (in a DataLoader worker, while the model runs) and
  gives a `PreparedImage`, which `SIADModel.detect` and the zero-shot baseline take like any image;
  `encoder_inputs()` is the one place where a batch of any inputs becomes the encoder's uint8 batch.
- `map_to_original()` brings an anomaly map back to the original height and width, or to a smaller
  size of the same aspect ratio when that holds more than `MapConfig.max_map_pixels` pixels
  (`map_size()`), by bilinear interpolation in numpy (`resize_bilinear`: torch's
  `F.interpolate(mode="bilinear", align_corners=False)`, to float32 rounding).

Bad input raises `ValueError` saying what is wrong.

Only `normalize()` needs torch, and imports it when called: loading, resizing and bringing maps back
run with numpy and Pillow alone, so the ONNX runtime (`siad.deploy`) prepares images with this very
code without torch.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from siad.config import MapConfig, SIADConfig, VisionConfig

if TYPE_CHECKING:
    import torch

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


@dataclass(frozen=True)
class LoadedImage:
    """An image ready for resizing: `rgb` (H' x W' x 3 uint8, H' x W' <= the bound) and the
    `original_size` (H, W) of the input it came from; `notes`: what a user should know about how it was
    read (e.g. that only the first frame of an animation is used), the texts of the warnings given."""

    rgb: np.ndarray
    original_size: tuple[int, int]
    notes: tuple[str, ...] = ()


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"'{os.fspath(source)}'"
    return type(source).__name__


def check_pixel_budget(height: int, width: int, max_pixels: int, what: str) -> None:
    """Refuse an image of more than `max_pixels` pixels (`VisionConfig.max_input_pixels`) with a
    `ValueError` naming its size; called with the header's size, before any decoding."""
    if height * width > max_pixels:
        raise ValueError(f"{what} is {width} x {height} pixels ({height * width / 1e6:.1f} MP), more than this "
                         f"model reads ({max_pixels / 1e6:.1f} MP, VisionConfig.max_input_pixels); downscale it first")


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8; 1 when absent or invalid). A PNG whose eXIf chunk follows the image
    data is read (decoded) to find it."""
    value = image.getexif().get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file as `load_rgb` gives it (EXIF orientation applied), read from its
    header without decoding the pixels. A PNG whose eXIf chunk follows its pixel data is taken as upright
    here (finding that chunk means decoding the image)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as opened:
            width, height = opened.size
            if opened.format == "TIFF" or (opened.format == "PNG" and "exif" not in opened.info):
                return height, width  # PIL's TIFF reader reports the upright size itself
            return (width, height) if _orientation(opened) in (5, 6, 7, 8) else (height, width)


def _warn_if_multi_frame(image: Image.Image, what: str) -> tuple[str, ...]:
    """A UserWarning when `image` holds several frames; returns its text (for `LoadedImage.notes`)."""
    frames = getattr(image, "n_frames", 1)
    if not isinstance(frames, int) or frames <= 1:
        return ()
    note = f"{what} holds {frames} frames (an animation or a multi-page file); only frame {image.tell()} is used"
    warnings.warn(note, UserWarning, stacklevel=3)
    return (note,)


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Integer or float intensities to uint8: floats in [0, 1] are scaled by 255, anything else is
    stretched from its own minimum to its maximum (16-bit scans use a part of their range)."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == bool:
        return values.astype(np.uint8) * 255
    data = values.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise ValueError("the image holds NaN or infinite pixel values")
    if np.issubdtype(values.dtype, np.floating) and data.min() >= 0.0 and data.max() <= 1.0:
        return np.round(data * 255.0).astype(np.uint8)
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    return np.round((data - low) * (255.0 / (high - low))).astype(np.uint8)


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.size == 0:
        raise ValueError(f"the image array is empty (shape {array.shape})")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        gray = _scale_to_uint8(array)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
            raise ValueError(f"unsupported array dtype {array.dtype}")
        rgb = _scale_to_uint8(array[:, :, :3])
        if array.shape[2] == 4:
            alpha = _scale_to_uint8(array[:, :, 3]).astype(np.float32)[:, :, None] / 255.0
            rgb = np.round(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)  # over white
        return np.ascontiguousarray(rgb)
    raise ValueError(f"an image array must be H x W, H x W x 1, H x W x 3 or H x W x 4; got shape {array.shape}")


def _downscale_array(array: np.ndarray, max_side: int) -> np.ndarray:
    height, width = array.shape[:2]
    if max(height, width) <= max_side:
        return array
    step = int(np.ceil(max(height, width) / max_side))
    return array[::step, ::step]  # strided view: bounded memory before any conversion


def _pil_to_rgb(image: Image.Image, max_side: int) -> np.ndarray:
    if image.width == 0 or image.height == 0:
        raise ValueError("the image is empty (0 pixels)")
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image)
        if array.dtype.byteorder not in ("=", "|"):
            array = array.astype(array.dtype.newbyteorder("="))
        return _array_to_rgb(_downscale_array(array, max_side))
    if max(image.size) > max_side:  # a new image: the caller's image is never changed
        scale = max_side / max(image.size)
        new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        resample = Image.Resampling.NEAREST if mode in ("P", "1") else Image.Resampling.BILINEAR
        image = image.resize(new_size, resample, reducing_gap=2.0)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "1":
        image = image.convert("L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def load_rgb(source: ImageInput, max_side: int = VisionConfig.max_input_side,
             max_pixels: int = VisionConfig.max_input_pixels) -> LoadedImage:
    """Read `source` (path, PIL image or numpy array) as RGB uint8, at most `max_side` pixels a side.

    An input of more than `max_pixels` pixels raises `ValueError` before it is decoded (a JPEG file is
    decoded at a reduced scale when it is larger than `max_side`, and the budget applies to that
    scale). The EXIF orientation is applied (every format; `original_size` is the upright size); of a
    multi-frame file frame 0 is used (of a PIL image its current frame), with a `UserWarning` whose text
    is also in the result's `notes`.
    """
    if isinstance(source, (str, os.PathLike)):
        return _load_file(Path(source), max_side, max_pixels)
    if isinstance(source, Image.Image):
        what = f"the PIL image ({source.format or source.mode})"
        check_pixel_budget(source.height, source.width, max_pixels, what)
        notes = _warn_if_multi_frame(source, what)
        try:
            orientation = _orientation(source)
            upright = ImageOps.exif_transpose(source) if orientation != 1 else source  # never changes the caller's
            rgb = _pil_to_rgb(upright, max_side)
        except OSError as error:
            raise ValueError(f"the PIL image cannot be decoded: {error}") from error
        return LoadedImage(rgb=rgb, original_size=(upright.height, upright.width), notes=notes)
    if isinstance(source, np.ndarray):
        if source.size == 0:
            raise ValueError(f"the image array is empty (shape {source.shape})")
        size = (int(source.shape[0]), int(source.shape[1])) if source.ndim >= 2 else (0, 0)
        check_pixel_budget(size[0], size[1], max_pixels, f"the image array (shape {source.shape})")
        return LoadedImage(rgb=_array_to_rgb(_downscale_array(source, max_side)), original_size=size)
    raise ValueError(f"an image must be a file path, a PIL image or a numpy array, not {type(source).__name__}")


def _load_file(path: Path, max_side: int, max_pixels: int) -> LoadedImage:
    what = _describe(path)
    if not path.is_file():
        raise ValueError(f"no image file at {what}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                size = (opened.height, opened.width)
                if opened.format == "JPEG":
                    opened.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale directly
                check_pixel_budget(opened.height, opened.width, max_pixels, what)  # header size: nothing decoded yet
                notes = _warn_if_multi_frame(opened, what)
                upright = ImageOps.exif_transpose(opened) if _orientation(opened) != 1 else opened
                if upright.size != opened.size:  # turned by 90 degrees (PIL's TIFF reader turns on its own)
                    size = size[::-1]
                rgb = _pil_to_rgb(upright, max_side)
    except Image.DecompressionBombError as error:
        raise ValueError(f"{what} is larger than any image that is read ({error}); this model reads at most "
                         f"{max_pixels / 1e6:.1f} MP (VisionConfig.max_input_pixels)") from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{what} is not an image file that can be read: {error}") from error
    return LoadedImage(rgb=rgb, original_size=size, notes=notes)


def resize_for_encoder(rgb: np.ndarray, size: int, mode: str = "squash") -> np.ndarray:
    """Bicubic resize of an RGB uint8 image to `size` x `size`.

    mode "squash": the whole image is resized (every pixel is seen; the map maps back exactly);
    "center_crop": ImageBind's preprocessing, shorter side to `size`, then the centre crop.
    """
    image = Image.fromarray(rgb)
    if mode == "squash":
        return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
    if mode != "center_crop":
        raise ValueError(f"resize mode must be 'squash' or 'center_crop', got {mode!r}")
    new_w, new_h, left, top = center_crop_geometry(image.width, image.height, size)
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


@dataclass(frozen=True)
class PreparedImage:
    """An image made ready for the encoder ahead of time: `pixels`, the S x S x 3 uint8 encoder input
    (`resize_for_encoder` of the loaded image), and `original_size` (H, W), the size its maps come back
    at; `source`: what it was made from (a path, for messages; "" otherwise)."""

    pixels: np.ndarray
    original_size: tuple[int, int]
    source: str = ""


def prepare_image(source: ImageInput, config: SIADConfig) -> PreparedImage:
    """`load_rgb` and `resize_for_encoder` with `config`'s bounds, size and resize mode: exactly what
    the model does with `source` itself (so results are the same bit for bit). Raises ValueError for
    an image that cannot be read."""
    loaded = load_rgb(source, config.vision.max_input_side, config.vision.max_input_pixels)
    return PreparedImage(pixels=resize_for_encoder(loaded.rgb, config.vision.image_size, config.vision.resize_mode),
                         original_size=loaded.original_size,
                         source=os.fspath(source) if isinstance(source, (str, os.PathLike)) else "")


def encoder_inputs(images: Sequence[ImageInput | PreparedImage], config: SIADConfig
                   ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A batch of images (any `ImageInput`, or `PreparedImage`s made for this config) -> the B x S x S x 3
    uint8 encoder batch and each image's original size (H, W)."""
    prepared = [image if isinstance(image, PreparedImage) else prepare_image(image, config) for image in images]
    side = config.vision.image_size
    for image in prepared:
        if image.pixels.shape != (side, side, 3) or image.pixels.dtype != np.uint8:
            raise ValueError(f"a PreparedImage must hold {side} x {side} x 3 uint8 pixels (prepare_image with this "
                             f"model's config), got {image.pixels.shape} {image.pixels.dtype}")
    return np.stack([image.pixels for image in prepared]), [image.original_size for image in prepared]


def center_crop_geometry(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """ImageBind's "center_crop" geometry: the size after resizing the shorter side to `size`, and the
    top-left corner of the centred `size` x `size` crop: (new_width, new_height, left, top)."""
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    return new_w, new_h, (new_w - size) // 2, (new_h - size) // 2


def normalize(batch: np.ndarray | torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """B x S x S x 3 uint8 (numpy or tensor) or B x 3 x S x S uint8 (tensor) -> B x 3 x S x S float32,
    normalised: (x / 255 - mean) / std. Traceable: `siad.export` puts it into the exported graph."""
    import torch  # deferred: siad.image imports no torch (siad.deploy runs without it)

    tensor = torch.as_tensor(batch)
    if tensor.ndim != 4:
        raise ValueError(f"expected a batch of images (4 dims), got shape {tuple(tensor.shape)}")
    if tensor.shape[-1] == 3 and tensor.shape[1] != 3:
        tensor = tensor.permute(0, 3, 1, 2)
    tensor = tensor.float() / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (tensor - mean_t) / std_t


def map_size(original_size: tuple[int, int], max_pixels: int = MapConfig.max_map_pixels) -> tuple[int, int]:
    """The (height, width) a map of an image of `original_size` is returned at: the original size, or,
    when that holds more than `max_pixels` pixels, the largest size of the same aspect ratio within it."""
    height, width = original_size
    if height * width <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    short, long = sorted((height, width))
    new_short = max(1, math.floor(short * scale))
    new_long = max(1, min(math.floor(long * scale), max_pixels // new_short))  # a 1-pixel side: the rest goes long
    return (new_short, new_long) if height <= width else (new_long, new_short)


def _linear_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `out_size` outputs along one axis: the two source indices and the weight of the second,
    as torch's bilinear interpolation with align_corners=False computes them (source coordinate
    (i + 0.5) * in / out - 0.5, clamped at 0; the second index clamped at the last)."""
    scale = np.float32(in_size / out_size)
    source = np.maximum((np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5),
                        np.float32(0.0))
    first = np.minimum(source.astype(np.int64), in_size - 1)
    second = np.minimum(first + 1, in_size - 1)
    return first, second, (source - first).astype(np.float32)


def resize_bilinear(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """A 2-D float array -> height x width float32, bilinear (torch's `F.interpolate(mode="bilinear",
    align_corners=False)`, no antialiasing, to float32 rounding)."""
    source = np.asarray(values, dtype=np.float32)
    if source.ndim != 2 or source.size == 0 or height < 1 or width < 1:
        raise ValueError(f"cannot resize an array of shape {source.shape} to {height} x {width}")
    c0, c1, cw = _linear_taps(width, source.shape[1])
    columns = source[:, c0] * (np.float32(1.0) - cw) + source[:, c1] * cw  # h x width
    r0, r1, rw = _linear_taps(height, source.shape[0])
    return columns[r0] * (np.float32(1.0) - rw)[:, None] + columns[r1] * rw[:, None]


def map_to_original(anomaly_map: np.ndarray | torch.Tensor | Any, original_size: tuple[int, int],
                    mode: str = "squash", max_pixels: int = MapConfig.max_map_pixels) -> np.ndarray:
    """An S x S anomaly map (numpy array or tensor) -> H x W float32 numpy array, clipped to [0, 1], at
    the original size (at `map_size(original_size, max_pixels)`: a smaller one of the same aspect
    ratio beyond `max_pixels`).

    "squash": bilinear resize (`resize_bilinear`); "center_crop": the map covers the centre crop only,
    the rest of the image (never seen by the encoder) is 0.
    """
    if hasattr(anomaly_map, "detach"):  # a tensor, on any device
        anomaly_map = anomaly_map.detach().float().cpu().numpy()
    source = np.asarray(anomaly_map, dtype=np.float32)
    height, width = map_size(original_size, max_pixels)
    if mode == "squash":
        return np.clip(resize_bilinear(source, height, width), 0.0, 1.0)
    if mode != "center_crop":
        raise ValueError(f"resize mode must be 'squash' or 'center_crop', got {mode!r}")
    side = min(height, width)
    full = np.zeros((height, width), dtype=np.float32)
    top, left = (height - side) // 2, (width - side) // 2
    full[top:top + side, left:left + side] = np.clip(resize_bilinear(source, side, side), 0.0, 1.0)
    return full
