import numpy as np
import pytest
import torch
from PIL import Image

from siad.image import load_rgb, map_to_original, normalize, resize_for_encoder


def _pil(mode: str, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(0)
    if mode in ("I;16",):
        return Image.fromarray(rng.integers(0, 4096, size[::-1], dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-1000, 70000, size[::-1], dtype=np.int32), mode="I")
    if mode == "F":
        return Image.fromarray(rng.normal(100, 30, size[::-1]).astype(np.float32), mode="F")
    base = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), mode="RGB")
    if mode == "P":
        return base.convert("P")
    return base.convert(mode)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"])
def test_every_pil_mode_gives_rgb_uint8(mode):
    image = _pil(mode)
    loaded = load_rgb(image)
    assert loaded.rgb.shape == (30, 40, 3) and loaded.rgb.dtype == np.uint8
    assert loaded.original_size == (30, 40)


def test_sixteen_bit_keeps_its_contrast():
    ramp = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (8, 1))
    rgb = load_rgb(Image.fromarray(ramp)).rgb
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255  # stretched from its own range


def test_rgba_is_composited_over_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent black
    assert (load_rgb(rgba).rgb == 255).all()


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 1), (20, 30, 3), (20, 30, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.int32, bool])
def test_numpy_shapes_and_dtypes(shape, dtype):
    rng = np.random.default_rng(1)
    array = (rng.random(shape) * (1 if dtype in (np.float32, np.float64) else 200)).astype(dtype)
    loaded = load_rgb(array)
    assert loaded.rgb.shape == (20, 30, 3) and loaded.original_size == (20, 30)


def test_float_outside_unit_range_is_stretched():
    array = np.array([[-5.0, 5.0]], dtype=np.float32)
    assert load_rgb(array).rgb[0, :, 0].tolist() == [0, 255]


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 5, 3), dtype=np.uint8), "empty"),
    (np.full((4, 4), np.nan, dtype=np.float32), "NaN"),
    (np.zeros((4, 4, 2), dtype=np.uint8), "shape"),
    (np.zeros((2, 3, 4, 5), dtype=np.uint8), "shape"),
    (12, "file path"),
])
def test_bad_arrays_raise_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        load_rgb(bad)


def test_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        load_rgb(path)
    with pytest.raises(ValueError, match="no image file"):
        load_rgb(tmp_path / "missing.png")


def test_truncated_file_is_a_value_error(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError):
        load_rgb(path)


def test_huge_image_is_downscaled_first(tmp_path):
    image = Image.new("L", (10000, 10000), 128)
    loaded = load_rgb(image, max_side=1024)
    assert max(loaded.rgb.shape[:2]) <= 1024 and loaded.original_size == (10000, 10000)
    path = tmp_path / "big.jpg"
    image.save(path, quality=50)
    loaded = load_rgb(path, max_side=1024)
    assert max(loaded.rgb.shape[:2]) <= 1024 and loaded.original_size == (10000, 10000)
    big_array = np.zeros((9000, 10000), dtype=np.uint16)
    loaded = load_rgb(big_array, max_side=2048)
    assert max(loaded.rgb.shape[:2]) <= 2048 and loaded.original_size == (9000, 10000)


def test_tiny_image():
    loaded = load_rgb(np.zeros((8, 8), dtype=np.uint8))
    assert resize_for_encoder(loaded.rgb, 224).shape == (224, 224, 3)


def test_resize_modes():
    rgb = np.zeros((100, 200, 3), dtype=np.uint8)
    rgb[:, :50] = 255  # left quarter white: cut off by the centre crop, kept by squash
    squash = resize_for_encoder(rgb, 224, "squash")
    crop = resize_for_encoder(rgb, 224, "center_crop")
    assert squash.shape == crop.shape == (224, 224, 3)
    assert squash[:, :40].mean() > 250 and crop.mean() < 5


def test_normalize_and_map_back():
    batch = np.full((2, 224, 224, 3), 255, dtype=np.uint8)
    tensor = normalize(batch, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert tensor.shape == (2, 3, 224, 224) and torch.allclose(tensor, torch.ones_like(tensor))
    heat = torch.rand(224, 224)
    back = map_to_original(heat, (300, 500))
    assert back.shape == (300, 500) and back.dtype == np.float32 and 0 <= back.min() <= back.max() <= 1
    cropped = map_to_original(heat, (300, 500), "center_crop")
    assert cropped.shape == (300, 500) and cropped[:, :50].max() == 0


def test_the_callers_image_is_not_changed():
    image = Image.new("RGB", (3000, 100), (10, 20, 30))
    load_rgb(image, max_side=512)
    assert image.size == (3000, 100)
