"""Model cards: built with ModelCardData/ModelCard from the packaged template, base_model only for a
Hub LM, no results but measured ones in the metadata, the paper's figures labelled in the prose."""

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from siad import SIADConfig, SIADModel
from siad.model_card import (PAPER_TABLE_1, full_model_card, hub_base_model, render_model_card, template_text,
                             write_card_results)

ROOT = Path(__file__).resolve().parents[1]


def test_the_template_is_read_from_the_package():
    from importlib import resources

    assert resources.files("siad").joinpath("templates/model_card.md").is_file()
    assert "{{ card_data }}" in template_text()
    assert not (ROOT / "siad" / "model_card.py").read_text().count("parents[1]")  # never from a checkout's root


@pytest.mark.parametrize("llm, expected", [
    ("lmsys/vicuna-7b-v1.5", "lmsys/vicuna-7b-v1.5"),
    ("gpt2", "gpt2"),
    ("/models/vicuna-7b-v0", None),
    ("./vicuna", None),
    ("~/models/vicuna", None),
    ("not a/valid id!", None),
])
def test_base_model_only_for_a_hub_id(llm, expected):
    config = SIADConfig.siad_llm(llm=dict(name_or_path=llm))
    assert hub_base_model(config) == expected
    assert ModelCard(render_model_card(config)).data.base_model == expected


def test_a_local_folder_named_like_a_hub_id_is_not_a_hub_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "llm").mkdir(parents=True)
    assert hub_base_model(SIADConfig.siad_llm(llm=dict(name_or_path="org/llm"))) is None


def test_a_model_with_its_own_lm_has_no_base_model_and_no_results():
    card = ModelCard(render_model_card(SIADConfig.tiny()))
    assert card.data.base_model is None and not card.data.eval_results
    assert "model-index" not in str(card).split("---")[1]
    assert "built by SIAD" in card.text and "stored with the model in `llm/`" in card.text


def test_the_paper_figures_are_a_labelled_table_in_the_prose_only():
    card = ModelCard(render_model_card(SIADConfig.siad_llm(), model_id="org/siad-llm"))
    assert not card.data.eval_results
    section = card.text.split("## Results reported in the paper (not measured on these weights)")[1].split("\n## ")[0]
    assert "**reported in the paper**" in section
    for dataset, trained_on, image, pixel in PAPER_TABLE_1:
        row = f"| {dataset} | {trained_on} | {image:.1f} | {'-' if pixel is None else f'{pixel:.1f}'} |"
        assert row in section, row
    assert "No results have been measured on these weights yet" in card.text
    assert 'from_pretrained("org/siad-llm"' in card.text and "{{" not in card.text and "{%" not in card.text
    for text in ("ImageBind", "Vicuna", "PandaGPT", "MVTec AD", "Citation", "train/train.py", "siad evaluate"):
        assert text in card.text, text


def test_the_card_says_where_the_encoder_is_and_how_big_the_parts_are(tmp_path):
    torch.manual_seed(0)
    model = SIADModel(SIADConfig.tiny(encoder_checkpoint="imagebind_huge.pth"))
    model.save_pretrained(tmp_path / "m", save_encoder=False)
    text = (tmp_path / "m" / "README.md").read_text()
    assert "- Vision encoder: ImageBind's vision trunk (32 x 4 blocks)" in text
    assert "text encoder: ImageBind's text trunk (32 x 2 blocks)" in text
    assert "the encoders' weights are not stored here" in text and "`imagebind_huge.pth`" in text
    encoder = sum(p.numel() for e in (model.vision_encoder, model.text_encoder) for p in e.parameters())
    assert f"encoder {encoder / 1e6:.1f} M" in text
    model.save_pretrained(tmp_path / "m2")
    assert "the encoders' weights are stored in `model.safetensors`" in (tmp_path / "m2" / "README.md").read_text()


def test_the_repository_card_is_the_full_models_rendered_card():
    assert (ROOT / "model_card.md").read_text() == full_model_card(), \
        "model_card.md is out of date: python -m siad.model_card > model_card.md"
    card = ModelCard.load(ROOT / "model_card.md")
    assert card.data.base_model == "lmsys/vicuna-7b-v1.5" and not card.data.eval_results
    assert "base LM 6.74 B" in card.text and "encoder 986.9 M" in card.text


# ---------------------------------------------------------------------- measured results
def _result(dataset="visa", name="VisA", image=0.6034, pixel=0.8812):
    return {"dataset_type": dataset, "dataset_name": name, "split": "test", "metrics": [
        {"type": "image_auroc", "name": "Image AUROC, pass 2 (S')", "value": image},
        {"type": "pixel_auroc", "name": "Pixel AUROC, pass 2 (M')", "value": pixel}]}


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "m"
    path.mkdir()
    SIADConfig.tiny().save(path / "config.json")
    (path / "README.md").write_text(render_model_card(SIADConfig.tiny(), model_id="org/siad-mine"))
    return path


def _metrics(card: ModelCard) -> dict:
    return {(r.dataset_type, r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}


def test_measured_results_go_into_the_model_index_and_a_table(folder):
    write_card_results(folder, [_result()], command="python -m siad.evaluate --model m --dataset visa --out e")
    card = ModelCard.load(folder / "README.md")
    assert _metrics(card) == {("visa", "test", "Image AUROC, pass 2 (S')"): 60.3,
                              ("visa", "test", "Pixel AUROC, pass 2 (M')"): 88.1}
    result = card.data.eval_results[0]
    assert (result.dataset_name, result.task_type) == ("VisA", "image-anomaly-detection")
    assert card.data.model_name == "siad-mine"
    measured = card.text.split("## Results measured on these weights")[1].split("\n## ")[0]
    assert "No results have been measured" not in measured
    assert "`python -m siad.evaluate --model m --dataset visa --out e`" in measured
    assert "| Image AUROC, pass 2 (S') | 60.3 |" in measured and "| Pixel AUROC, pass 2 (M') | 88.1 |" in measured
    assert "| VisA | MVTec AD | 62.2 | 88.1 |" in card.text  # the paper's table stays, in the prose


def test_new_results_replace_those_of_the_same_dataset_and_keep_the_others(folder):
    write_card_results(folder, [_result()], command="first")
    write_card_results(folder, [_result("mvtec", "MVTec AD", 0.7, None)], command="second")
    write_card_results(folder, [_result(image=0.5, pixel=0.9)], command="third")
    card = ModelCard.load(folder / "README.md")
    assert _metrics(card) == {("visa", "test", "Image AUROC, pass 2 (S')"): 50.0,
                              ("visa", "test", "Pixel AUROC, pass 2 (M')"): 90.0,
                              ("mvtec", "test", "Image AUROC, pass 2 (S')"): 70.0}  # None: undefined, left out
    assert "`first`" not in card.text and "`second`" in card.text and "`third`" in card.text
    assert card.text.count("### VisA") == 1 and card.text.count("### MVTec AD") == 1
    assert card.text.index("### VisA") < card.text.index("### MVTec AD")  # replaced in place


@pytest.mark.parametrize("bad, match", [
    ({**_result(), "metrics": [{"type": "image_auroc", "name": "x", "value": 60.3}]}, "fraction"),
    ({**_result(), "metrics": [{"type": "image_auroc", "name": "x", "value": float("nan")}]}, "fraction"),
    ({**_result(), "metrics": [{"type": "image_auroc", "value": 0.5}]}, "exactly type, name and value"),
    ({**_result(), "split": ""}, "split"),
    ({**_result(), "dataset_type": "vis a"}, "dataset_type"),
    ({**_result(), "extra": 1}, "unknown keys"),
    ({**_result(), "metrics": [{"type": "image_auroc", "name": "x", "value": None}]}, "no metric with a value"),
    ("visa", "mapping"),
])
def test_results_of_another_shape_are_refused_before_writing(folder, bad, match):
    before = (folder / "README.md").read_text()
    with pytest.raises(ValueError, match=match):
        write_card_results(folder, [bad], command="cmd")
    with pytest.raises(ValueError, match="command"):
        write_card_results(folder, [_result()], command=" ")
    with pytest.raises(ValueError, match="twice"):
        write_card_results(folder, [_result(), _result()], command="cmd")
    assert (folder / "README.md").read_text() == before


def test_a_folder_without_a_card_gets_one_and_a_foreign_card_gets_the_section(folder, tmp_path):
    (folder / "README.md").unlink()
    write_card_results(folder, [_result()], command="cmd")
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "siad-llm" and len(card.data.eval_results) == 2
    mini = tmp_path / "mini"
    mini.mkdir()
    # a hand-written card with results in its metadata but no results section: the bundled mini's card
    # with its section (and what it holds) taken out
    bundled = (ROOT / "checkpoints" / "siad-mini" / "README.md").read_text(encoding="utf-8")
    start, end = bundled.index("<!-- siad:measured-results:start -->"), bundled.index("<!-- siad:measured-results:end -->")
    foreign = bundled[:start] + bundled[end + len("<!-- siad:measured-results:end -->"):]
    assert "siad:measured-results" not in foreign
    (mini / "README.md").write_text(foreign, encoding="utf-8")
    earlier = ModelCard.load(mini / "README.md").data.eval_results
    assert earlier
    write_card_results(mini, [_result("mvtec_format", "SIAD-Synth test")], command="cmd")
    card = ModelCard.load(mini / "README.md")
    assert card.data.eval_results[:len(earlier)] == earlier  # other datasets' results are kept
    assert card.text.rstrip().endswith("<!-- siad:measured-results:end -->")
    assert "### SIAD-Synth test (`mvtec_format`, test split)" in card.text
