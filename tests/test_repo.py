"""The promises of the repository itself: the README's commands, CI, the Space's front matter."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
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


def test_the_inner_loop_leaves_out_the_slow_tier_and_ci_runs_everything():
    import tomllib

    readme = (ROOT / "README.md").read_text()
    commands = [line.split("  #")[0].strip() for block in _bash_blocks(readme) for line in block.splitlines()]
    assert 'python -m pytest -m "not slow"' in commands  # the README's developer note
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert any(marker.startswith("slow:") for marker in options["markers"])
    assert "--strict-markers" in options["addopts"].split()  # a misspelt marker is an error, never a silent no-op
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci.endswith("&& python -m pytest -q")  # CI selects nothing: every tier runs


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


@pytest.mark.slow
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


def _markdown_tables(text: str) -> list[tuple[str, list[list[str]]]]:
    """Every table of a markdown text: (the last non-empty line before it, its rows of cells, the header
    first and the |---| line left out); an escaped pipe (`\\|`) inside a cell is a pipe."""
    tables: list[tuple[str, list[list[str]]]] = []
    rows: list[list[str]] = []
    before = ""
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
            continue
        if rows:
            tables.append((before, rows))
            rows = []
        if line.strip():
            before = line.strip()
    return tables


def test_every_figure_of_the_v2_card_has_its_complete_command():
    """siad-mini v2's card: each row of its results tables (`#` column) has a complete command in a
    `| # | command |` table, one the code accepts (siad.evaluate's options, data the card makes, the row's
    number of references, the ablation variant the row names); every other table of figures names the command
    that wrote it."""
    import importlib.util
    import shlex

    from siad.evaluation.cli import _parser as evaluate_parser

    card = (ROOT / "checkpoints" / "siad-mini-v2" / "README.md").read_text(encoding="utf-8")
    tables = _markdown_tables(card)
    results = [rows for _, rows in tables if rows[0][0] == "#" and any("AUROC" in c for c in rows[0])]
    commands = {row[0]: row[1] for _, rows in tables if rows[0][:2] == ["#", "command"] for row in rows[1:]}
    labels = {row[0]: row[1] for rows in results for row in rows[1:]}
    assert len(results) == 2 and len(labels) == sum(len(rows) - 1 for rows in results) == 19
    assert set(commands) == set(labels)
    for before, rows in tables:  # the per-class and per-metric tables: from a row's command, or their own
        if rows not in results and rows[0][0] != "#" and any("AUROC" in " ".join(r) for r in rows):
            named = re.search(r"row (\d+)'s command", before)
            assert (named and named.group(1) in labels) or before.startswith("Measured with `python -m siad."), before

    spec = importlib.util.spec_from_file_location("ablations", ROOT / "train" / "ablations.py")
    ablations = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ablations)
    data = {"data/siad_synth/test", "data/siad_synth/medical", "data/siad_heldout", "data/siad_validation"}
    made_by_card = {f"python -m siad.data.synth {kind}--out {folder}" for kind, folder in (
        ("", "data/siad_synth"), ("heldout ", "data/siad_heldout"), ("validation ", "data/siad_validation"))}
    assert all(line in card for line in made_by_card)
    for key, label in labels.items():
        quoted = commands[key]
        assert quoted.startswith("`") and quoted.endswith("`") and quoted.count("`") == 2, key
        steps = [shlex.split(step) for step in quoted.strip("`").split(" && ")]
        folders = {"checkpoints/siad-mini-v2"}
        for step in steps:  # folders the command makes before it evaluates them
            if step[:2] == ["cp", "-r"]:
                folders.add(step[3])
            if "tar" in step:
                folders.add(step[step.index("-C") + 1])
        last = steps[-1]
        if key.startswith("A"):
            assert last[:2] == ["python", "train/ablations.py"], key
            options: dict[str, list[str]] = {}
            for token in last[2:]:
                if token.startswith("--"):
                    option = options.setdefault(token, [])
                else:
                    option.append(token)
            config = ROOT / options["--config"][0]
            assert config.name == "mini_v2.yaml" and config.is_file() and options["--seeds"] == ["0", "1"], key
            assert [ablations.VARIANTS[v][0] for v in options["--variants"]] == [label], key  # the variant it names
            continue
        assert last[:3] == ["python", "-m", "siad.evaluate"], key
        args = evaluate_parser().parse_args(last[3:])
        assert str(args.root) in data and args.model in folders, key
        shots = re.search(r"(\d+) (?:normal )?references?", label)
        assert args.shots == (int(shots.group(1)) if shots else 0), key
        assert args.shot_seeds == ([0, 1, 2] if shots else None), key
        assert ("v1" in label) == any(step[:2] == ["git", "archive"] for step in steps), key
        assert (args.dataset == "brainmri") == ("medical" in label), key
