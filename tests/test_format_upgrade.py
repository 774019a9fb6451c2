"""Folders saved before the config came in parts (format 3) still load and give the same results.

The fixtures were written by the format-3 code (tests/fixtures/README.md): a tiny model folder with the
maps, scores and answers that code gave, and the bundled siad-mini v2's maps on two examples. Maps and
scores are compared to float32 rounding (1e-6): the same code gives bit-identical results for the same
torch thread count, and a different thread count changes the order of float sums."""

import json
from pathlib import Path

import numpy as np
import pytest

from siad import SIADModel
from siad.config import CONFIG_FORMAT_VERSION
from siad.hub import renamed_weight_keys, safetensors_shapes

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def old_model():
    return SIADModel.from_pretrained(FIXTURES / "format3_tiny").eval()


@pytest.fixture(scope="module")
def images():
    stacked = np.load(FIXTURES / "format3_inputs.npy")
    return [stacked[:30], stacked[30:]]


def test_the_format_3_folder_is_what_it_says():
    config = json.loads((FIXTURES / "format3_tiny" / "config.json").read_text())
    assert config["format_version"] == 3 < CONFIG_FORMAT_VERSION
    stored = safetensors_shapes(FIXTURES / "format3_tiny" / "model.safetensors")
    assert any(k.startswith("encoder.modality_trunks.vision.") for k in stored)
    renamed = renamed_weight_keys(stored, 3)
    assert renamed["encoder.modality_trunks.vision.blocks.0.attn.in_proj_weight"] == \
        "vision_encoder.modality_trunks.vision.blocks.0.attn.in_proj_weight"
    assert renamed["encoder.modality_preprocessors.text.token_embedding.weight"] == \
        "text_encoder.modality_preprocessors.text.token_embedding.weight"
    assert renamed["llama_proj.weight"] == "llama_proj.weight"
    assert renamed_weight_keys(["encoder.x"], CONFIG_FORMAT_VERSION) == {"encoder.x": "encoder.x"}


def test_zero_shot_maps_and_scores_are_bit_identical(old_model, images):
    expected = np.load(FIXTURES / "format3_tiny_expected.npz")
    results = old_model.detect(images, "screw", chat=False)
    assert np.allclose(np.stack([r.anomaly_map for r in results]), expected["maps"], rtol=0, atol=TOLERANCE)
    assert np.allclose([r.score for r in results], expected["scores"], rtol=0, atol=TOLERANCE)


def test_one_shot_and_chat_results_are_bit_identical(old_model, images):
    expected = np.load(FIXTURES / "format3_tiny_expected.npz")
    bank = old_model.build_references([images[1]], "screw")
    one_shot = old_model.detect([images[0]], "screw", chat=False, references=bank)[0]
    assert np.allclose(one_shot.anomaly_map, expected["map_1shot"], rtol=0, atol=TOLERANCE)
    assert abs(one_shot.score - float(expected["score_1shot"])) <= TOLERANCE
    chat = old_model.detect([images[0]], "screw", chat=True)[0]
    assert np.allclose(chat.anomaly_map, expected["chat_map"], rtol=0, atol=TOLERANCE)
    assert np.allclose(chat.initial_map, expected["chat_initial_map"], rtol=0, atol=TOLERANCE)
    assert [chat.initial_answer, chat.answer] == expected["answers"].tolist()


def test_a_folder_saved_again_is_of_the_current_format_and_gives_the_same_maps(old_model, images, tmp_path):
    old_model.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["format_version"] == CONFIG_FORMAT_VERSION
    stored = safetensors_shapes(tmp_path / "again" / "model.safetensors")
    assert not any(k.startswith("encoder.") for k in stored) and any(k.startswith("vision_encoder.") for k in stored)
    again = SIADModel.from_pretrained(tmp_path / "again").eval()
    a = old_model.detect(images, "screw", chat=False)
    b = again.detect(images, "screw", chat=False)
    assert all(np.array_equal(x.anomaly_map, y.anomaly_map) for x, y in zip(a, b))


def test_the_v2_mini_gives_the_maps_it_gave_before_the_change():
    folder = ROOT / "checkpoints" / "siad-mini-v2"
    expected = np.load(FIXTURES / "v2_mini_expected.npz")
    model = SIADModel.from_pretrained(folder).eval()
    files = [ROOT / "examples" / "images" / name for name in ("gear_good.png", "gear_missing.png")]
    results = model.detect(files, "gear", chat=False)
    assert np.allclose(np.stack([r.anomaly_map for r in results]), expected["maps"], rtol=0, atol=TOLERANCE)
    assert np.allclose([r.score for r in results], expected["scores"], rtol=0, atol=TOLERANCE)
