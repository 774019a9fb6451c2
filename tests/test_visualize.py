"""siad.visualize: the jet overlay, ROC points and the evaluation plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image
from sklearn.metrics import roc_curve as sk_roc_curve

from siad import visualize as vis


def test_colorize_is_jet_on_an_absolute_scale():
    values = np.array([[0.0, 0.25, 0.5, 1.0], [1.7, -3.0, 0.75, 0.999]], dtype=np.float32)
    colours = vis.colorize(values)
    assert colours.shape == (2, 4, 3) and colours.dtype == np.uint8
    table = vis.jet_table()
    for value, colour in zip(np.clip(values, 0, 1).ravel(), colours.reshape(-1, 3)):
        assert np.array_equal(colour, table[int(round(value * 255))])
    assert tuple(colours[0, 0]) == (0, 0, 128) and tuple(colours[0, 3]) == (128, 0, 0)  # dark blue .. dark red


def test_the_jet_table_is_opencvs_jet_in_rgb_and_close_to_matplotlibs():
    import cv2

    table = vis.jet_table()
    assert table.shape == (256, 3) and table.dtype == np.uint8 and not table.flags.writeable
    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_JET)[0]
    assert np.array_equal(table, bgr[:, ::-1])
    # jet's course: blue, cyan, yellow, red at an eighth, three, five and seven eighths of the scale
    for value, hue in ((0.125, (0, 0, 255)), (0.375, (0, 255, 255)), (0.625, (255, 255, 0)), (0.875, (255, 0, 0))):
        assert np.abs(table[round(value * 255)].astype(int) - hue).max() <= 8, value
    matplotlib_jet = np.round(colormaps["jet"](np.arange(256))[:, :3] * 255)
    assert np.abs(table.astype(int) - matplotlib_jet).max() <= 34  # the figures' jet, as the overlays had it


@pytest.mark.slow
def test_overlays_need_no_matplotlib(tmp_path):
    """`siad detect --out` and `siad predict` write their overlays with matplotlib unimportable (the base
    install); only `siad evaluate`'s figures ask for the [plots] extra."""
    import os
    import subprocess
    import sys

    import torch

    from siad import SIADConfig, SIADModel
    from siad.image import load_rgb

    root = Path(vis.__file__).resolve().parents[1]
    image = root / "examples" / "images" / "gear_missing.png"
    torch.manual_seed(0)
    model = SIADModel(SIADConfig.tiny()).eval()
    model.save_pretrained(tmp_path / "tiny")
    code = ("import sys\n"
            "sys.modules['matplotlib'] = None  # import matplotlib fails, find_spec('matplotlib') is None\n"
            "from siad.cli import main\n"
            f"assert main(['detect', '--model', {str(tmp_path / 'tiny')!r}, '--class', 'gear', {str(image)!r}, "
            f"'--no-chat', '--out', {str(tmp_path / 'detect')!r}]) == 0\n"
            f"assert main(['predict', '--model', {str(tmp_path / 'tiny')!r}, '--class', 'gear', {str(image)!r}, "
            f"'--no-chat', '--quiet', '--workers', '0', '--out', {str(tmp_path / 'predict')!r}]) == 0\n"
            "assert main(['evaluate', '--model', 'm', '--out', 'o']) == 2\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    assert done.stderr.count('pip install "siad-llm[plots]"') == 1 and "siad evaluate" in done.stderr  # evaluate only
    assert "plots" not in done.stdout
    rgb = load_rgb(image).rgb
    expected = vis.overlay(rgb, model.detect([rgb], ["gear"], chat=False)[0].anomaly_map)
    for folder in ("detect", "predict"):
        written = np.asarray(Image.open(tmp_path / folder / "gear_missing_overlay.png").convert("RGB"))
        assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1, folder  # the jet overlay


def test_overlay_blends_with_alpha():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    heat = rng.random((20, 30)).astype(np.float32)
    assert np.array_equal(vis.overlay(image, heat, alpha=0.0), image)
    assert np.array_equal(vis.overlay(image, heat, alpha=1.0), vis.colorize(heat))
    half = vis.overlay(image, heat)  # alpha 0.5 by default
    expected = np.round(0.5 * image.astype(np.float32) + 0.5 * vis.colorize(heat).astype(np.float32))
    assert half.dtype == np.uint8 and np.array_equal(half, expected.astype(np.uint8))


def test_overlay_resizes_the_map_and_takes_grey_images():
    grey = np.full((40, 60), 100, dtype=np.uint8)
    out = vis.overlay(grey, np.ones((10, 15), dtype=np.float32))
    assert out.shape == (40, 60, 3)
    assert np.array_equal(out[0, 0], np.round(0.5 * 100 + 0.5 * vis.colorize(np.ones((1, 1)))[0, 0]).astype(np.uint8))


@pytest.mark.parametrize("shape", [(30, 200), (300, 40), (2000, 1500)])
def test_overlay_with_scale_is_an_rgb_picture(shape):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    picture = vis.overlay_with_scale(image, rng.random(shape), title="widget: score 0.912")
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert 150 <= max(picture.shape[:2]) <= 1100 and picture.std() > 0
    ratio = picture.shape[1] / picture.shape[0]  # a wide image gives a wide picture, a tall one a tall one
    if shape[1] > 2 * shape[0]:
        assert ratio > 1.0
    if shape[0] > 2 * shape[1]:
        assert ratio < 1.0


@pytest.mark.parametrize("image, heat, message", [
    (np.zeros((4, 4, 3), np.float32), np.zeros((4, 4)), "uint8"),
    (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 1)), "H x W"),
    (np.zeros((4, 4, 3), np.uint8), np.full((4, 4), np.nan), "NaN"),
])
def test_overlay_refuses_bad_input(image, heat, message):
    with pytest.raises(ValueError, match=message):
        vis.overlay(image, heat)
    with pytest.raises(ValueError, match="alpha"):
        vis.overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)), alpha=1.5)


def test_roc_curve_matches_scikit_learn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, 40)
        labels[:2] = (0, 1)
        scores = np.round(rng.random(40), 1)  # many ties
        curve = vis.roc_curve(labels, scores)
        fpr, tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
        assert np.allclose(curve.fpr, fpr) and np.allclose(curve.tpr, tpr)
    with pytest.raises(ValueError, match="both"):
        vis.roc_curve([1, 1], [0.2, 0.3])


def test_plots_are_written(tmp_path):
    rng = np.random.default_rng(0)
    labels = [0, 0, 1, 1, 1]
    scores = [0.1, 0.5, 0.4, 0.8, 0.9]
    paths = [
        vis.plot_roc(tmp_path / "roc.png", "widget", {"pass 1": (labels, scores), "pass 2": (labels, scores[::-1]),
                                                      "one class": ([1, 1], [0.3, 0.4])}),
        vis.plot_roc(tmp_path / "undefined.png", "all normal", {"pass 1": ([0, 0], [0.1, 0.2])}),
        vis.plot_histograms(tmp_path / "hist.png", {"pass 1 (S)": (labels, scores), "flat": (labels, [0.5] * 5)}),
        vis.plot_qualitative(tmp_path / "grid.png", [
            vis.QualitativeRow("a / scratch", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                               rng.random((32, 32)) > 0.8, {"M": rng.random((32, 32)), "M'": rng.random((32, 32))}),
            vis.QualitativeRow("b / yes", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), None,
                               {"M": rng.random((32, 32))}),
        ]),
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100 and image.height > 100
    with pytest.raises(ValueError):
        vis.plot_qualitative(tmp_path / "none.png", [])


def test_fit_map_keeps_averages_when_shrinking_and_leaves_a_fitting_map_alone():
    from siad.visualize import fit_map

    values = np.arange(16, dtype=np.float32).reshape(4, 4) / 15
    assert np.array_equal(fit_map(values, 4, 4), values)
    blocks = values.reshape(2, 2, 2, 2).mean(axis=(1, 3))
    assert np.allclose(fit_map(values, 2, 2), blocks, atol=1e-6)  # each pixel the mean of its 2 x 2 block
    grown = fit_map(values, 8, 6)
    assert grown.shape == (8, 6) and grown.min() >= values.min() and grown.max() <= values.max()


HOSTILE_TEXT = ["$", "$$", "\\frac{", "_^", "$\\frac{$", "a $x^$ b", "$_^$", "price: $5 and $"]


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_user_text_is_drawn_literally_never_as_mathtext(tmp_path, text, recwarn):
    """A class name with `$` used to raise ParseException (or recurse) inside matplotlib's mathtext;
    a curve name starting with "_" was dropped from the ROC legend (with a warning)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    heat = rng.random((300, 400))
    titled = vis.overlay_with_scale(image, heat, title=f"{text}: score 0.5")
    untitled = vis.overlay_with_scale(image, heat)
    assert titled.shape[0] > untitled.shape[0]  # the title is drawn, above the picture
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    paths = [
        vis.plot_roc(tmp_path / "roc.png", text, {text: (labels, scores)}),
        vis.plot_histograms(tmp_path / "hist.png", {text: (labels, scores)}),
        vis.plot_qualitative(tmp_path / "grid.png", [vis.QualitativeRow(text, image, None, {text: heat})]),
    ]
    for path in paths:
        with Image.open(path) as picture:
            assert picture.format == "PNG" and picture.width > 100
    assert not [w for w in recwarn if "legend" in str(w.message)]


def test_a_dollar_title_renders_its_dollars():
    """With mathtext, "$x$" is an italic x as wide as "x"; drawn literally its two dollars make it wider."""
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    heat = np.zeros((300, 400))
    widths = []
    for title in ("x", "$x$"):
        picture = vis.overlay_with_scale(image, heat, title=title)
        dark = picture.min(axis=2) < 128
        top = int(np.argmax(dark.sum(axis=1) > picture.shape[1] // 2))  # first row of the (dark) image
        widths.append(int(dark[:top].any(axis=0).sum()))  # inked columns of the title above it
    assert widths[1] > 1.5 * widths[0]
