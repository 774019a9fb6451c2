"""Hostile model folders, corrupt weights and diverging training runs (issue 14).

Each test reproduces a hole found by the audit and would fail on the code before the fix. The app's
own hostile-input tests live in tests/test_app.py (they need the running app)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from siad import SIADConfig, SIADModel
from siad.config import LLAMA_7B_ARCHITECTURE

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("saved") / "tiny"
    torch.manual_seed(0)
    SIADModel(SIADConfig.tiny()).save_pretrained(folder)
    return folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


# ---------------------------------------------------------------------------------------------
# A model folder is data: it never runs code


EVIL_MODULE = textwrap.dedent("""
    import os, pathlib
    pathlib.Path(os.environ["SIAD_EVIL_MARKER"]).write_text("ran")
    from transformers import LlamaConfig as EvilConfig, LlamaForCausalLM as EvilModel
    from transformers import PreTrainedTokenizerFast as EvilTokenizer
""")


def _load_in_subprocess(folder: Path, marker: Path) -> subprocess.CompletedProcess:
    """Load the folder in a fresh process whose standard input answers 'y' to any question."""
    code = f"from siad import SIADModel\nSIADModel.from_pretrained({str(folder)!r})\nprint('LOADED')\n"
    env = {**os.environ, "SIAD_EVIL_MARKER": str(marker), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], input="y\ny\ny\n", capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.slow
def test_llm_config_with_auto_map_never_runs_the_folders_code(saved_tiny, tmp_path):
    folder = _copy(saved_tiny, tmp_path)
    config_path = folder / "llm" / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("model_type")
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    config_path.write_text(json.dumps(config))
    (folder / "llm" / "evil.py").write_text(EVIL_MODULE)
    marker = tmp_path / "marker"
    done = _load_in_subprocess(folder, marker)
    assert not marker.exists(), "the folder's Python code ran"
    assert "LOADED" not in done.stdout and "Do you wish to run the custom code" not in done.stdout
    assert "never runs their code" in done.stderr


@pytest.mark.slow
def test_tokenizer_with_auto_map_never_runs_the_folders_code(saved_tiny, tmp_path):
    folder = _copy(saved_tiny, tmp_path)
    path = folder / "llm" / "tokenizer_config.json"
    data = json.loads(path.read_text())
    data["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    data["tokenizer_class"] = "EvilTokenizer"
    path.write_text(json.dumps(data))
    (folder / "llm" / "evil.py").write_text(EVIL_MODULE)
    marker = tmp_path / "marker"
    done = _load_in_subprocess(folder, marker)
    assert not marker.exists(), "the folder's Python code ran"
    assert "Do you wish to run the custom code" not in done.stdout


def test_external_llm_is_loaded_without_remote_code_and_from_safetensors_only(monkeypatch):
    """Every loading call for an external LM passes trust_remote_code=False (and use_safetensors for
    the weights), so transformers neither prompts nor runs code nor reads pickles."""
    import transformers

    from siad.llm import load_language_model

    calls = []

    def record(kind):
        def fake(name, **kwargs):
            calls.append((kind, kwargs))
            raise RuntimeError("stop here")
        return fake

    def config(name, **kwargs):  # the LM's config is read (and its sizes checked) before the model
        calls.append(("config", kwargs))
        return transformers.AutoConfig.for_model("llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                 num_attention_heads=4, vocab_size=512)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", config)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record("model"))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record("tokenizer"))
    with pytest.raises(RuntimeError, match="stop here"):
        load_language_model(SIADConfig.tiny(llm=dict(name_or_path="some/llm", architecture=None)))
    assert calls[0][0] == "config" and calls[0][1]["trust_remote_code"] is False
    kind, kwargs = calls[1]
    assert kind == "model" and kwargs["trust_remote_code"] is False and kwargs["use_safetensors"] is True


# ---------------------------------------------------------------------------------------------
# A folder without its language model is refused before anything is built


def test_folder_without_its_llm_is_refused_by_name(saved_tiny, tmp_path):
    folder = _copy(saved_tiny, tmp_path)
    shutil.rmtree(folder / "llm")
    with pytest.raises(FileNotFoundError, match=r"language model is missing \(no llm/ folder"):
        SIADModel.from_pretrained(folder)


def test_folder_with_a_7b_architecture_and_no_llm_is_refused_before_allocating(saved_tiny, tmp_path, monkeypatch):
    folder = _copy(saved_tiny, tmp_path)
    shutil.rmtree(folder / "llm")
    config = json.loads((folder / "config.json").read_text())
    config["llm"]["architecture"] = dict(LLAMA_7B_ARCHITECTURE)
    (folder / "config.json").write_text(json.dumps(config))

    def refuse(*args, **kwargs):
        raise AssertionError("a language model was built")

    monkeypatch.setattr("siad.hub.load_language_model", refuse)
    monkeypatch.setattr("siad.model.SIADModel.__init__", refuse)
    with pytest.raises(FileNotFoundError, match="language model is missing"):
        SIADModel.from_pretrained(folder)


@pytest.mark.parametrize("missing", ["model.safetensors", "config.json", "tokenizer.json"])
def test_incomplete_llm_folder_is_refused_by_name(saved_tiny, tmp_path, missing):
    folder = _copy(saved_tiny, tmp_path)
    (folder / "llm" / missing).unlink()
    if missing == "tokenizer.json":
        (folder / "llm" / "tokenizer_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        SIADModel.from_pretrained(folder)


# ---------------------------------------------------------------------------------------------
# Non-finite weights: never saved, never scored as normal


def _poison(model: SIADModel) -> None:
    with torch.no_grad():
        model.stage_projection.linears[0].weight.fill_(float("nan"))


def test_non_finite_weights_are_never_saved(tmp_path):
    torch.manual_seed(0)
    model = SIADModel(SIADConfig.tiny())
    _poison(model)
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_nan_score_is_an_error_never_a_normal_verdict():
    import numpy as np

    torch.manual_seed(0)
    model = SIADModel(SIADConfig.tiny()).eval()
    _poison(model)
    image = np.full((32, 32, 3), 128, dtype=np.uint8)
    with pytest.raises(FloatingPointError, match="non-finite anomaly map"):
        model.detect([image], ["gear"], chat=False)


def test_zero_shot_baseline_nan_score_is_an_error_too():
    import numpy as np

    from siad.baseline import ZeroShotBaseline

    torch.manual_seed(0)
    model = SIADModel(SIADConfig.tiny())
    baseline = ZeroShotBaseline(model.vision_encoder, model.text_encoder, model.config)
    with torch.no_grad():
        for p in baseline.vision_encoder.parameters():
            p.fill_(float("nan"))
    with pytest.raises(FloatingPointError):
        baseline.detect([np.zeros((16, 16, 3), dtype=np.uint8)], ["gear"])
