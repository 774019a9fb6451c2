"""What `pip install siad-llm` gets: lower-bounded core dependencies (no app, no plots), extras, the
`siad` command, and the model card template inside the wheel."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_core_dependencies_are_lower_bounds_without_the_app_or_plots():
    project = _project()
    assert "dynamic" not in project  # requirements.txt (the Space's pinned set) is not the library's list
    core = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    for name in ("torch", "transformers", "peft", "huggingface_hub", "safetensors", "accelerate", "timm", "jinja2"):
        assert name in core, name
    assert not {"gradio", "matplotlib", "tensorboard", "pytest", "pyyaml", "onnx", "onnxscript", "onnxruntime",
                "openvino"} & set(core)
    for requirement in core.values():
        assert all(spec.operator in (">=", "<") for spec in requirement.specifier), requirement  # no exact pins
    extras = {k: {Requirement(r).name for r in v} for k, v in project["optional-dependencies"].items()}
    assert {"gradio", "matplotlib"} <= extras["app"] and extras["plots"] == {"matplotlib"}
    assert {"tensorboard", "pyyaml", "scikit-image"} <= extras["train"]
    assert {"onnx", "onnxscript", "onnxruntime"} <= extras["export"] and extras["openvino"] == {"openvino"}
    test = [Requirement(r) for r in project["optional-dependencies"]["test"]]
    assert {"pytest", "scikit-learn", "psutil", "playwright"} <= {r.name for r in test}
    assert any(r.name == "siad-llm" and {"app", "plots", "train", "export", "openvino"} <= r.extras for r in test)
    assert project["scripts"] == {"siad": "siad.cli:main"}


def test_requirements_files_keep_the_space_pins_and_install_the_test_extra():
    pinned = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert "torch==2.14.1" in pinned and any(line.startswith("gradio") for line in pinned)
    test = (ROOT / "requirements-test.txt").read_text().splitlines()
    assert "-r requirements.txt" in test and "-e .[test]" in test


@pytest.mark.slow
def test_the_wheel_holds_the_card_template_and_the_command(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "siad", source / "siad", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                           "-q", "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("siad_llm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        template = archive.read("siad/templates/model_card.md").decode()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "siad/cli.py" in names and "siad/model_card.py" in names
    assert template == (ROOT / "siad" / "templates" / "model_card.md").read_text()
    assert "siad = siad.cli:main" in entry_points
