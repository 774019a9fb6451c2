import numpy as np
import pytest
import torch
from PIL import Image

from siad.config import SIADConfig
from siad.image import load_rgb, map_size, map_to_original, normalize, resize_for_encoder


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
    loaded = load_rgb(image, max_side=1024, max_pixels=10**8)
    assert max(loaded.rgb.shape[:2]) <= 1024 and loaded.original_size == (10000, 10000)
    path = tmp_path / "big.jpg"
    image.save(path, quality=50)
    loaded = load_rgb(path, max_side=1024)  # 100 MP, but decoded at 1/8 scale: within the default budget
    assert max(loaded.rgb.shape[:2]) <= 1024 and loaded.original_size == (10000, 10000)
    big_array = np.zeros((9000, 10000), dtype=np.uint16)
    loaded = load_rgb(big_array, max_side=2048, max_pixels=10**8)
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


@pytest.mark.parametrize("size", [(480, 640), (100, 37), (224, 224), (1, 1), (3000, 11), (50, 2048)])
def test_map_to_original_is_torchs_bilinear_interpolation(size):
    """The numpy resize (what the ONNX runtime shares with the model) equals torch's bilinear
    interpolation, align_corners=False, to float32 rounding, up and down, in both modes."""
    import torch.nn.functional as F

    heat = torch.rand(224, 224, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(heat[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    assert np.abs(map_to_original(heat, size) - expected).max() < 1e-5
    assert np.array_equal(map_to_original(heat, size), map_to_original(heat.numpy(), size))  # tensor or array
    side = min(size)
    square = F.interpolate(heat[None, None], size=(side, side), mode="bilinear", align_corners=False)[0, 0].numpy()
    cropped = map_to_original(heat, size, "center_crop")
    top, left = (size[0] - side) // 2, (size[1] - side) // 2
    assert np.abs(cropped[top:top + side, left:left + side] - square).max() < 1e-5
    with pytest.raises(ValueError, match="resize mode"):
        map_to_original(heat, size, "stretch")


def test_loading_and_resizing_import_no_torch():
    """siad.image loads, resizes and maps back with numpy and Pillow alone (the ONNX runtime's path)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; import siad.image as i; "
            "p = i.prepare_image(np.zeros((30, 40, 3), np.uint8), __import__('siad.config').config.SIADConfig.mini()); "
            "m = i.map_to_original(np.zeros((224, 224), np.float32), (30, 40)); "
            "assert p.pixels.shape == (224, 224, 3) and m.shape == (30, 40); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_callers_image_is_not_changed():
    image = Image.new("RGB", (3000, 100), (10, 20, 30))
    load_rgb(image, max_side=512)
    assert image.size == (3000, 100)


# ------------------------------------------------------------------------ pixel budget, map size
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_small_file_of_too_many_pixels_is_refused_from_its_header(tmp_path, monkeypatch):
    """A 0.1 MB PNG of 13000 x 13000 used to be decoded in full (+2 GB, two 676 MB maps)."""
    from PIL import ImageFile

    path = tmp_path / "bomb.png"
    Image.new("1", (13000, 13000)).save(path)
    assert path.stat().st_size < 1_000_000
    assert SIADConfig().vision.max_input_pixels == 40_000_000

    def no_decoding(self):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ValueError, match=r"13000 x 13000 pixels \(169.0 MP\), more than this model reads \(40.0 MP"):
        load_rgb(path)
    with pytest.raises(ValueError, match=r"169.0 MP"):
        load_rgb(Image.open(path))  # a lazily opened PIL image: refused before it is decoded too


@pytest.mark.parametrize("kind", ["pil", "array", "png"])
def test_pixel_budget_is_inclusive_for_every_kind_of_input(tmp_path, kind):
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    source = {"pil": lambda: Image.fromarray(pixels), "array": lambda: pixels}.get(kind)
    if source is None:
        Image.fromarray(pixels).save(tmp_path / "x.png")
        source = lambda: tmp_path / "x.png"  # noqa: E731
    assert load_rgb(source(), max_pixels=20_000).original_size == (100, 200)
    with pytest.raises(ValueError, match=r"200 x 100 pixels"):
        load_rgb(source(), max_pixels=19_999)


def test_a_jpeg_is_counted_at_the_scale_it_is_decoded_at(tmp_path):
    Image.new("RGB", (4000, 4000), (90, 90, 90)).save(tmp_path / "x.jpg")
    Image.new("RGB", (4000, 4000), (90, 90, 90)).save(tmp_path / "x.png")
    loaded = load_rgb(tmp_path / "x.jpg", max_side=500, max_pixels=300_000)  # drafted at 1/8: 500 x 500
    assert loaded.original_size == (4000, 4000) and loaded.rgb.shape == (500, 500, 3)
    with pytest.raises(ValueError, match="4000 x 4000 pixels"):
        load_rgb(tmp_path / "x.png", max_side=500, max_pixels=300_000)


def test_map_size_keeps_the_aspect_ratio_within_the_cap():
    assert map_size((300, 500), 10**6) == (300, 500)
    assert map_size((13000, 13000), 2048 * 2048) == (2048, 2048)
    height, width = map_size((3000, 12000), 10**6)
    assert height * width <= 10**6 and abs(width / height - 4.0) < 0.01 and height * width > 0.99 * 10**6
    assert map_size((1, 10**8), 1000) == (1, 1000)
    heat = torch.rand(224, 224)
    assert map_to_original(heat, (13000, 13000)).shape == (2048, 2048)  # the default cap
    cropped = map_to_original(heat, (3000, 12000), "center_crop", max_pixels=10**6)
    assert cropped.shape == map_size((3000, 12000), 10**6) and cropped[:, :100].max() == 0


@pytest.mark.slow
def test_detect_caps_its_maps_and_refuses_an_image_over_the_budget():
    from siad.model import SIADModel

    torch.manual_seed(0)
    model = SIADModel(SIADConfig.tiny(map=dict(max_map_pixels=1000), vision=dict(max_input_pixels=50_000))).eval()
    result = model.detect(np.zeros((100, 400, 3), dtype=np.uint8), "widget", chat=False)[0]
    assert result.anomaly_map.shape == map_size((100, 400), 1000) == (15, 63)
    with pytest.raises(ValueError, match=r"VisionConfig.max_input_pixels"):
        model.detect(np.zeros((300, 200, 3), dtype=np.uint8), "widget", chat=False)
    for name, bad in (("max_input_pixels", 0), ("max_map_pixels", 10**9), ("max_map_pixels", True)):
        with pytest.raises(ValueError, match=name):
            SIADConfig.tiny(**{name: bad})


# --------------------------------------------------------------------- orientation, frames
def _asymmetric() -> Image.Image:
    """40 wide, 20 high: white on the left quarter, a grey ramp elsewhere (no symmetry)."""
    pixels = np.tile(np.linspace(0, 200, 40, dtype=np.uint8), (20, 1))
    pixels[:, :10] = 255
    pixels[:5] = 30
    return Image.fromarray(np.stack([pixels] * 3, axis=-1))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF", "JPEG"])
def test_exif_orientation_is_applied_for_every_format(tmp_path, fmt):
    """PNG eXIf and WebP orientation used to be ignored (the map was of the unrotated image)."""
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / f"rotated.{fmt.lower()}"
    options = {"lossless": True} if fmt == "WEBP" else {"quality": 100} if fmt == "JPEG" else {}
    _asymmetric().save(path, fmt, exif=exif.tobytes(), **options)
    with Image.open(path) as opened:
        shown = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    assert shown.shape == (40, 20, 3)  # upright: 20 wide, 40 high
    for source in (path, Image.open(path)):
        loaded = load_rgb(source)
        assert loaded.original_size == (40, 20) and loaded.rgb.shape == (40, 20, 3)
        tolerance = 12 if fmt == "JPEG" else 0
        assert np.abs(loaded.rgb.astype(int) - shown.astype(int)).max() <= tolerance
    untouched = Image.open(path)
    before = untouched.size  # (PIL's TIFF reader reports the upright size itself)
    load_rgb(untouched)
    assert untouched.size == before  # the caller's PIL image is not rotated


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_the_map_of_a_rotated_image_is_upright(tmp_path, fmt):
    from siad.model import SIADModel

    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"rotated.{fmt.lower()}"
    _asymmetric().save(path, fmt, exif=exif.tobytes(), **({"lossless": True} if fmt == "WEBP" else {}))
    torch.manual_seed(0)
    model = SIADModel(SIADConfig.tiny()).eval()
    result = model.detect(path, "widget", chat=False)[0]
    upright = np.asarray(_asymmetric().transpose(Image.Transpose.ROTATE_270))
    reference = model.detect(upright, "widget", chat=False)[0]
    assert result.anomaly_map.shape == (40, 20)
    assert np.allclose(result.anomaly_map, reference.anomaly_map, atol=1e-6)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_multi_frame_files_use_frame_zero_and_say_so(tmp_path, fmt):
    frames = [Image.new("RGB", (16, 12), colour) for colour in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    path = tmp_path / f"frames.{fmt.lower()}"
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match=r"holds 3 frames .*only frame 0 is used"):
        loaded = load_rgb(path)
    assert loaded.original_size == (12, 16)
    assert loaded.rgb[..., 0].min() > 200 and loaded.rgb[..., 1:].max() < 50  # the first (red) frame
    assert len(loaded.notes) == 1 and "holds 3 frames" in loaded.notes[0]  # for the app's result (issue 20)
    with Image.open(path) as opened:
        with pytest.warns(UserWarning):
            assert "holds 3 frames" in load_rgb(opened).notes[0]
    frames[0].save(tmp_path / "one.png")
    assert load_rgb(tmp_path / "one.png").notes == ()


def test_prepared_images_give_the_same_results_as_paths(tmp_path):
    """prepare_image (what DataLoader workers run) + detect == detect on the path, bit for bit, for the
    model and the zero-shot baseline; a PreparedImage of another size is refused."""
    from siad.baseline import load_detector
    from siad.image import PreparedImage, encoder_inputs, prepare_image
    from tests.conftest import build_tiny

    rng = np.random.default_rng(3)
    paths = []
    for index, shape in enumerate([(40, 56, 3), (300, 90, 3)]):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(paths[-1])
    model = build_tiny(0).eval()
    prepared = [prepare_image(path, model.config) for path in paths]
    assert [p.original_size for p in prepared] == [(40, 56), (300, 90)] and prepared[0].source == str(paths[0])
    for detector in (model, load_detector("zero-shot:tiny")):
        direct = detector.detect(paths, "gear", chat=False)
        ahead = detector.detect(prepared, "gear", chat=False)
        for a, b in zip(direct, ahead):
            assert a.score == b.score and np.array_equal(a.anomaly_map, b.anomaly_map)
    batch, sizes = encoder_inputs([prepared[0], paths[1]], model.config)
    assert batch.shape == (2, 224, 224, 3) and batch.dtype == np.uint8 and sizes == [(40, 56), (300, 90)]
    with pytest.raises(ValueError, match="PreparedImage"):
        model.detect([PreparedImage(np.zeros((32, 32, 3), np.uint8), (32, 32))], "gear", chat=False)
