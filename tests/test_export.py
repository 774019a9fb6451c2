"""siad export and siad.deploy: the map-and-score graph of one class in ONNX (and OpenVINO IR), run without
torch, against SIADModel.detect(..., self_improve=False).

The parity tests run on a siad-mini v3 built here (`SIADConfig.mini()`: the real ImageNet
EfficientNet-Lite0, random trainable parts) and on `checkpoints/siad-mini` when it is an EfficientNet-Lite
model (v3); more model folders can be added with SIAD_EXPORT_PARITY_MODELS (folders separated by the
path separator). Exports are slow on a CPU (about 10 s each): every file is made once per module.
Other backbones are skipped in that parametrization: siad-mini v2 (ImageBind trained from scratch) has
self-reference distances of 1e-7 to 1e-6 on plain backgrounds, so its own torch maps differ by 0.07
between batch 1 and 8 and no runtime can match them to 1e-4 (the tiny ImageBind model's test below does).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from siad import SIADConfig, SIADModel, __version__  # noqa: E402
from siad.deploy import EXPORT_FORMAT_VERSION, ExportedDetector, ExportInfo  # noqa: E402
from siad.export import UnsupportedOperatorError, export_onnx, locate_operator  # noqa: E402
from siad.references import model_fingerprint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "images"
BUNDLED = ROOT / "checkpoints" / "siad-mini"
CLASS = "gear"
TOLERANCE = 1e-4  # the parity: maps and scores from onnxruntime equal SIADModel.detect's to 1e-4
# every test exports a model (about 10 s each on a CPU) or checks the parity on the bundled model
pytestmark = pytest.mark.slow

BLOCK_TORCH = ("import sys\n"
               "class _Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name == 'torch' or name.startswith('torch.'):\n"
               "            raise ImportError('torch is blocked in this process')\n"
               "sys.meta_path.insert(0, _Block())\n")


def _model_folders() -> list:
    folders = [pytest.param("built", id="built-mini-v3"), pytest.param(str(BUNDLED), id="bundled")]
    extra = os.environ.get("SIAD_EXPORT_PARITY_MODELS", "")
    folders += [pytest.param(p, id=Path(p).name) for p in extra.split(os.pathsep) if p]
    return folders


@pytest.fixture(scope="module")
def built_folder(tmp_path_factory) -> Path:
    """siad-mini v3 as `SIADConfig.mini()` builds it (pretrained Lite0, random trainable parts), saved."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("export") / "mini-v3"
    SIADModel(SIADConfig.mini(map={"threshold": 0.61})).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list:
    """Eight inputs as siad predict meets them: files and arrays, many sizes (one beyond max_input_side),
    grey, RGBA, an EXIF-rotated JPEG, a non-square crop of a photo of the class and one of another."""
    folder = tmp_path_factory.mktemp("export-images")
    gear = Image.open(EXAMPLES / "gear_missing.png").convert("RGB")
    good = Image.open(EXAMPLES / "gear_good.png").convert("RGB")
    wood = Image.open(EXAMPLES / "wood_scratch.png").convert("RGB")
    rotated = folder / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    gear.resize((320, 200)).save(rotated, quality=95, exif=exif)
    grey = folder / "grey.png"
    good.convert("L").resize((97, 131)).save(grey)
    rgba = np.dstack([np.asarray(wood.resize((300, 180))), np.full((180, 300), 200, np.uint8)])
    return [str(EXAMPLES / "gear_missing.png"), np.asarray(gear.resize((500, 300))), str(rotated), str(grey), rgba,
            np.asarray(good.resize((2600, 400))), np.asarray(gear.resize((224, 224))), np.asarray(good.resize((64, 48)))]


@pytest.fixture(scope="module")
def exports(built_folder, images, tmp_path_factory):
    """(model, zero-shot file, 4-shot file) per model folder, exported once; folders that cannot take part are
    skipped with the reason."""
    made: dict[str, tuple] = {}
    out = tmp_path_factory.mktemp("exports")

    def get(spec: str):
        if spec not in made:
            folder = built_folder if spec == "built" else Path(spec)
            if not (folder / "config.json").is_file():
                pytest.skip(f"{folder} holds no model")
            config = SIADConfig.load(folder / "config.json")
            if not config.vision.backbone.startswith("efficientnet_lite"):
                pytest.skip(f"{folder} has a {config.vision.backbone} backbone: this parity case is for EfficientNet-Lite "
                            "models (siad-mini v3)")
            model = SIADModel.from_pretrained(folder).eval()
            bank = model.build_references([str(EXAMPLES / "gear_good.png"), np.asarray(Image.open(
                EXAMPLES / "gear_good.png").convert("RGB").rotate(90)), np.asarray(Image.open(
                    EXAMPLES / "gear_good.png").convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
                np.asarray(Image.open(EXAMPLES / "gear_good.png").convert("RGB").resize((300, 260)))], CLASS)
            name = Path(spec).name
            zero = export_onnx(model, CLASS, out / f"{name}-zero.onnx",
                               openvino=spec == "built" and _has("openvino"))
            few = export_onnx(model, CLASS, out / f"{name}-4shot.onnx", bank=bank)
            made[spec] = (model, bank, zero, few)
        return made[spec]

    return get


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _differences(exported, expected) -> tuple[float, float]:
    assert len(exported) == len(expected)
    maps = max(float(np.abs(a.anomaly_map - b.anomaly_map).max()) for a, b in zip(exported, expected))
    scores = max(abs(a.score - b.score) for a, b in zip(exported, expected))
    for a, b in zip(exported, expected):
        assert a.anomaly_map.shape == b.anomaly_map.shape and a.anomaly_map.dtype == np.float32
        assert a.mode == b.mode and a.class_name == b.class_name and a.answer is None and a.initial_score == a.score
    return maps, scores


# ------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("shots", [0, 4], ids=["zero-shot", "4-shot"])
@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize("folder", _model_folders())
def test_onnxruntime_equals_detect(exports, images, folder, shots, batch_size):
    model, bank, zero, few = exports(folder)
    report = zero if shots == 0 else few
    detector = ExportedDetector(report.path)
    references = None if shots == 0 else bank
    expected = model.detect(images, CLASS, chat=False, self_improve=False, batch_size=batch_size, references=references)
    got = detector.detect(images, batch_size=batch_size)
    maps, scores = _differences(got, expected)
    assert maps < TOLERANCE and scores < TOLERANCE, (maps, scores)
    assert [r.mode for r in got] == ["zero-shot" if shots == 0 else "4-shot"] * len(images)
    assert all(r.is_anomalous == (r.score >= model.config.map.threshold) for r in got)
    assert got[5].anomaly_map.shape == (400, 2600) and got[2].anomaly_map.shape == (320, 200)  # own sizes, EXIF upright


def test_the_exported_map_is_pass_one_of_detect_with_the_language_model(exports, images):
    """detect(..., self_improve=False) with answers: its maps and scores are the graph's too."""
    model, _, zero, _ = exports("built")
    expected = model.detect(images[:2], CLASS, self_improve=False)
    got = ExportedDetector(zero.path).detect(images[:2])
    assert all(isinstance(r.answer, str) for r in expected)
    maps, scores = _differences(got, expected)
    assert maps < TOLERANCE and scores < TOLERANCE


def test_openvino_ir_equals_detect(exports, images):
    pytest.importorskip("openvino")
    model, _, zero, _ = exports("built")
    assert zero.openvino_path is not None and zero.openvino_path.with_suffix(".bin").is_file()
    detector = ExportedDetector(zero.openvino_path)
    for batch_size in (1, 8):
        expected = model.detect(images, CLASS, chat=False, self_improve=False, batch_size=batch_size)
        maps, scores = _differences(detector.detect(images, batch_size=batch_size), expected)
        assert maps < TOLERANCE and scores < TOLERANCE, (maps, scores)
    assert detector.info == ExportedDetector(zero.path).info


def test_an_imagebind_backbone_exports_too(images, tmp_path):
    """The paper's backbone family (a ViT: ImageBind's vision trunk, here at tiny dims) exports as well."""
    torch.manual_seed(0)
    model = SIADModel(SIADConfig.tiny(map={"self_reference_weight": 0.5})).eval()
    report = export_onnx(model, CLASS, tmp_path / "tiny.onnx")
    expected = model.detect(images[:3], CLASS, chat=False)
    maps, scores = _differences(ExportedDetector(report.path).detect(images[:3]), expected)
    assert maps < TOLERANCE and scores < TOLERANCE, (maps, scores)


def test_the_export_checks_itself_and_names_what_it_holds(exports):
    model, bank, zero, few = exports("built")
    assert zero.max_map_difference is not None and zero.max_map_difference < TOLERANCE
    info = ExportedDetector(few.path).info
    assert info.class_name == CLASS and info.num_shots == 4 and info.mode == "4-shot"
    assert info.threshold == 0.61 == model.config.map.threshold  # the model's (calibrated) threshold
    assert info.config == model.config and info.image_size == 224 and info.siad_version == __version__
    assert info.model_fingerprint == model_fingerprint(model, "visual")
    assert info.bank_fingerprint == bank.fingerprint and info.bank_sha256 == bank.digest()
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(zero.path), load_external_data=False).metadata_props}
    assert metadata["siad.class_name"] == CLASS and metadata["siad.mode"] == "zero-shot"
    assert metadata["siad.image_size"] == "224" and metadata["siad.threshold"] == "0.61"
    assert metadata["siad.normalisation"].startswith("(pixel / 255 - mean) / std, mean [0.498")
    assert metadata["siad.version"] == __version__ and metadata["siad.model_fingerprint"].startswith("visual:")


# ------------------------------------------------------------------------------------ without torch
def test_the_runtime_imports_no_torch(exports, images, tmp_path):
    """siad.deploy loads the file and detects with numpy, Pillow and onnxruntime: torch cannot even be imported."""
    _, _, zero, _ = exports("built")
    expected = ExportedDetector(zero.path).detect([images[0]])[0]
    code = BLOCK_TORCH + (
        "import siad.deploy\n"
        f"d = siad.deploy.ExportedDetector({str(zero.path)!r})\n"
        f"r = d.detect([{images[0]!r}])[0]\n"
        "print(repr(r.score))\n"
        "assert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) == expected.score
    plain = subprocess.run([sys.executable, "-c", "import sys, siad.deploy; assert 'torch' not in sys.modules"],
                           cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert plain.returncode == 0


def test_predict_onnx_writes_the_csv_and_overlays_of_predict_without_torch(exports, built_folder, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, zero, _ = exports("built")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("gear_missing.png", "gear_good.png", "wood_scratch.png"):
        shutil.copy(EXAMPLES / name, inputs / name)
    (inputs / "broken.png").write_bytes(b"not a png")
    from siad import predict

    assert predict.main(["--model", str(built_folder), "--class", CLASS, "--no-chat", str(inputs), "--out",
                         str(tmp_path / "torch"), "--quiet", "--workers", "0"]) == 0
    code = BLOCK_TORCH + ("from siad.cli import main\n"
                          f"sys.exit(main(['predict', '--onnx', {str(zero.path)!r}, {str(inputs)!r}, '--out', "
                          f"{str(tmp_path / 'onnx')!r}, '--quiet', '--workers', '2']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "3 images scored" in done.stdout and "1 unreadable" in done.stdout

    def rows(folder: Path) -> list[dict[str, str]]:
        with (folder / "predictions.csv").open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    torch_rows, onnx_rows = rows(tmp_path / "torch"), rows(tmp_path / "onnx")
    assert [r["path"] for r in torch_rows] == [r["path"] for r in onnx_rows]
    for a, b in zip(torch_rows, onnx_rows):
        assert (a["verdict"], a["mode"], a["overlay"], a["answer"]) == (b["verdict"], b["mode"], b["overlay"], b["answer"])
        assert bool(a["error"]) == bool(b["error"])
        if a["score"]:
            assert abs(float(a["score"]) - float(b["score"])) < TOLERANCE
            first = np.asarray(Image.open(tmp_path / "torch" / a["overlay"]), dtype=np.int16)
            second = np.asarray(Image.open(tmp_path / "onnx" / b["overlay"]), dtype=np.int16)
            # a map difference of ~1e-6 can move a pixel to the next of jet's 256 colours: a step of at most
            # 4 levels per channel, half of it at alpha 0.5, plus rounding
            assert first.shape == second.shape and np.abs(first - second).max() <= 3
            assert (first != second).any(axis=2).mean() < 0.01
    assert sum(bool(r["error"]) for r in onnx_rows) == 1


# ------------------------------------------------------------------------------------ bad input
def test_export_without_a_class_is_a_clear_error(built_folder, tmp_path, capsys):
    from siad.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", str(built_folder), "--out", str(tmp_path / "x.onnx")])
    assert exit_info.value.code == 2
    assert "--class NAME is required: the graph holds the text features of one class" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


class _MedianBlock(torch.nn.Module):
    """A backbone block followed by an operator ONNX does not have (torch.median)."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        return x - x.median(dim=1, keepdim=True).values


def test_an_operator_that_does_not_export_is_named_with_its_module(built_folder, tmp_path):
    model = SIADModel.from_pretrained(built_folder).eval()
    model.vision_encoder.blocks[2] = _MedianBlock(model.vision_encoder.blocks[2])
    with pytest.raises(UnsupportedOperatorError) as error:
        export_onnx(model, CLASS, tmp_path / "bad.onnx", check=False)
    message = str(error.value)
    assert "aten.median.dim" in message and "model.vision_encoder.blocks.2" in message and "_MedianBlock" in message
    assert "test_export.py" in message and "in forward" in message  # the line that calls it
    assert not (tmp_path / "bad.onnx").exists()


def test_locate_operator_names_a_function_by_the_module_that_calls_it(built_folder):
    """torch.median inside a function (not a module): the place is the calling model's module and the line."""
    from siad.export import MapAndScoreGraph

    model = SIADModel.from_pretrained(built_folder).eval()
    module = MapAndScoreGraph(model, CLASS)
    example = torch.zeros(1, 224, 224, 3, dtype=torch.uint8)
    places = locate_operator(module, example, "aten.topk.default")  # lower_median's, in the self-reference
    assert places and "module 'model' (siad.model.SIADModel)" in places[0] and "siad/reference_maps.py" in places[0]
    assert "lower_median" in places[0]


def _rewrite_metadata(source: Path, target: Path, **changes: str) -> Path:
    import onnx

    proto = onnx.load(str(source))
    for entry in proto.metadata_props:
        key = entry.key.removeprefix("siad.")
        if key in changes:
            entry.value = changes[key]
    onnx.save(proto, str(target))
    return target


def test_a_file_of_another_siad_version_warns_and_a_newer_format_is_refused(exports, images, tmp_path):
    _, _, zero, _ = exports("built")
    older = _rewrite_metadata(zero.path, tmp_path / "older.onnx", version="0.0.9")
    with pytest.warns(UserWarning, match=r"exported by siad 0\.0\.9; this is siad " + __version__.replace(".", r"\.")):
        detector = ExportedDetector(older)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert detector.detect(images[:1])[0].score == ExportedDetector(zero.path).detect(images[:1])[0].score
    newer = _rewrite_metadata(zero.path, tmp_path / "newer.onnx", format_version=str(EXPORT_FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match="export format 2; this siad .* reads format 1 and older: upgrade siad"):
        ExportedDetector(newer)


def test_a_file_for_another_input_size_is_refused(exports, tmp_path):
    _, _, zero, _ = exports("built")
    config = ExportedDetector(zero.path).config.replace(vision={"image_size": 240})
    other = _rewrite_metadata(zero.path, tmp_path / "other.onnx", config=config.to_json_string(), image_size="240")
    with pytest.raises(ValueError, match=r"metadata says 240 x 240 input images, but the graph takes \['batch', 224, 224, 3\]"):
        ExportedDetector(other)
    detector = ExportedDetector(zero.path)
    with pytest.raises(ValueError, match=r"takes uint8 RGB batches of shape \(batch, 224, 224, 3\) \(exported for 224 x 224"):
        detector.run(np.zeros((1, 240, 240, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        detector.run(np.zeros((1, 224, 224, 3), np.float32))


def test_the_runtime_refuses_what_the_graph_cannot_do(exports, images, tmp_path):
    _, bank, zero, _ = exports("built")
    detector = ExportedDetector(zero.path)
    with pytest.raises(ValueError, match="exported for class 'gear', not 'screw'"):
        detector.detect(images[:1], "screw")
    assert detector.detect(images[:1], "  gear ")[0].class_name == "gear"
    with pytest.raises(ValueError, match="no language model"):
        detector.detect(images[:1], chat=True)
    with pytest.raises(ValueError, match="references cannot be given to an exported graph"):
        detector.detect(images[:1], references=bank)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="is not an image file that can be read"):
        detector.detect([str(broken)])
    huge = SIADConfig.mini().vision.max_input_pixels + 1
    with pytest.raises(ValueError, match="more than this model reads"):
        detector.detect([np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (1, huge, 3))])  # a view: no memory
    plain = tmp_path / "plain.onnx"
    import onnx

    proto = onnx.load(str(zero.path))
    del proto.metadata_props[:]
    onnx.save(proto, str(plain))
    with pytest.raises(ValueError, match="is not a SIAD export"):
        ExportedDetector(plain)
    with pytest.raises(FileNotFoundError):
        ExportedDetector(tmp_path / "missing.onnx")


def test_predict_onnx_refuses_references_and_another_class(exports, tmp_path, capsys):
    from siad import predict

    _, _, zero, _ = exports("built")
    image = tmp_path / "a.png"
    shutil.copy(EXAMPLES / "gear_good.png", image)
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--onnx", str(zero.path), str(image), "--out", str(tmp_path / "o"), "--references", str(image)])
    assert exit_info.value.code == 2 and "--onnx does not take --references" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--onnx", str(zero.path), "--class", "screw", str(image), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and "exported for class 'gear', not 'screw'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict.main(["--onnx", str(zero.path), "--model", "m", str(image), "--out", str(tmp_path / "o")])
    assert "not allowed with argument" in capsys.readouterr().err


def test_export_info_round_trips_through_metadata():
    config = SIADConfig.mini()
    info = ExportInfo(class_name="metal nut", num_shots=2, config=config, model_fingerprint="visual:a:b",
                      text_sha256="0" * 64)
    assert ExportInfo.from_metadata(info.to_metadata()) == info
    assert info.mode == "2-shot" and info.to_metadata()["siad.image_size"] == "224"
