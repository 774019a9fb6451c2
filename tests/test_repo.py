"""The promises of the repository itself: the README's commands, CI, the Space's front matter."""

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    test_commands = [b for b in _bash_blocks(readme) if b.endswith("python -m pytest -q")]
    assert len(test_commands) == 1
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert ci_lines[-1] == test_commands[0]
    app_commands = [b for b in _bash_blocks(readme) if b.endswith("python app.py")]
    assert len(app_commands) == 1 and "imagebind-unofficial==0.1.1" in app_commands[0]


def test_space_front_matter():
    readme = (ROOT / "README.md").read_text()
    front = yaml.safe_load(readme.split("---")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py"
    assert isinstance(front["python_version"], str) and front["python_version"] == "3.11"
    import gradio

    assert front["sdk_version"] == gradio.__version__
    for key in ("license", "short_description", "suggested_hardware", "title"):
        assert front[key], key
    assert "models" not in front  # the Space's default model is bundled, not a Hub model
    assert len(front["short_description"]) <= 60
    assert (ROOT / front["app_file"]).is_file()


def test_model_card_parses_offline():
    from huggingface_hub import ModelCard

    from siad import SIADConfig
    from siad.model_card import render_model_card

    card = ModelCard(render_model_card(SIADConfig.siad_llm()))
    data = card.data
    assert data.library_name == "siad-llm" and data.pipeline_tag and data.base_model == "lmsys/vicuna-7b-v1.5"
    assert data.license and "anomaly-detection" in data.tags
    assert not data.eval_results  # the metadata holds only results measured on the weights
    assert "| MVTec AD | VisA | 72.8 | 86.0 |" in card.text  # the paper's Table 1, labelled, in the prose
    for text in ("ImageBind", "Vicuna", "PandaGPT", "MVTec AD", "Citation", "train/train.py", "siad.evaluate"):
        assert text in card.text, text
    assert "{{" not in card.content


def test_quickstart_example_runs():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "score pass 1" in out.stdout and "map (240, 320)" in out.stdout


def test_the_bundled_mini_model_loads_and_detects():
    import numpy as np
    from PIL import Image

    from siad import SIADConfig, SIADModel

    folder = ROOT / "checkpoints" / "siad-mini"
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size <= 40e6
    model = SIADModel.from_pretrained(folder)
    # v3 (EfficientNet-Lite): the preset exactly, with its calibrated threshold
    expected = SIADConfig.mini(map=dict(threshold=model.config.map.threshold))
    assert model.config == expected
    image = np.asarray(Image.open(ROOT / "examples" / "images" / "gear_missing.png"))
    result = model.detect([image], ["gear"])[0]
    assert result.anomaly_map.shape == image.shape[:2] and isinstance(result.answer, str)
    assert result.answer.startswith(("Yes", "No"))  # its LM learnt the answer templates
    from huggingface_hub import ModelCard

    card = ModelCard.load(folder / "README.md")
    filed = {(r.dataset_type, r.metric_type) for r in card.data.eval_results}  # written by siad.evaluate --card
    assert {("siad-synth-unseen", "image_auroc"), ("siad-synth-heldout", "pixel_auroc")} <= filed
