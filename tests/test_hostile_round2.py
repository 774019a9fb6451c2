"""Hostile model folders and datasets, round two (issue 20): bounded loading, bounded generation,
bounded files. Each test reproduces a hole found by the second audit and would fail on the code before
the fix. The app's own tests for this issue live in tests/test_app.py, the training run's in
tests/test_train.py, the command line's in tests/test_cli.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from siad import SIADConfig, SIADModel
from siad.config import LLAMA_7B_ARCHITECTURE, LLM_SIZE_LIMITS, SIZE_LIMITS, check_llm_sizes


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


def _edit_json(path: Path, part: str | None, **values) -> None:
    data = json.loads(path.read_text())
    (data[part] if part else data).update(values)
    path.write_text(json.dumps(data))


def _nothing_built(monkeypatch) -> None:
    """Any attempt to build the model or a full language model fails the test."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr("siad.model.SIADModel.__init__", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", refuse)


# ---------------------------------------------------------------------------------------------
# 1. Declared sizes: sane bounds and the weights' header, before anything is built


@pytest.mark.parametrize("file, part, field, value", [
    ("config.json", "vision", "num_blocks", 10**6),
    ("config.json", "text", "num_blocks", 10**6),
    ("config.json", "vision", "width", 10**6),
    ("config.json", None, "embed_dim", 10**6),
    ("llm/config.json", None, "num_hidden_layers", 10**6),
    ("llm/config.json", None, "hidden_size", 10**6),
    ("llm/config.json", None, "vocab_size", 10**9),
    ("llm/config.json", None, "intermediate_size", 10**7),
])
def test_sizes_past_the_bounds_are_refused_before_anything_is_built(saved_tiny, tmp_path, monkeypatch, file, part,
                                                                    field, value):
    folder = _copy(saved_tiny, tmp_path)
    _edit_json(folder / file, part, **{field: value})
    _nothing_built(monkeypatch)
    with pytest.raises(ValueError, match=rf"{file.replace('.', '[.]')}.*{field}={value}"):
        SIADModel.from_pretrained(folder)


@pytest.mark.parametrize("file, part, field, value", [
    ("config.json", "vision", "num_blocks", 8),
    ("config.json", "vision", "width", 64),
    ("config.json", "text", "width", 64),
    ("config.json", "text", "num_blocks", 3),
    ("config.json", None, "embed_dim", 64),
    ("llm/config.json", None, "num_hidden_layers", 3),
    ("llm/config.json", None, "hidden_size", 128),
    ("llm/config.json", None, "vocab_size", 1000),
    ("llm/config.json", None, "intermediate_size", 4096),
])
def test_sizes_that_differ_from_the_weights_header_are_refused_by_name(saved_tiny, tmp_path, monkeypatch, file, part,
                                                                        field, value):
    """Within the bounds, but not what the weights hold: refused from the headers, before the model (or
    the full language model: only a probe of two layers on the meta device) is built."""
    import transformers

    folder = _copy(saved_tiny, tmp_path)
    if part == "vision" and field == "width":
        _edit_json(folder / file, part, width=64, num_heads=4)
    else:
        _edit_json(folder / file, part, **{field: value})
    monkeypatch.setattr("siad.model.SIADModel.__init__", lambda *a, **k: pytest.fail("the model was built"))
    built = transformers.AutoModelForCausalLM.from_config

    def probe_only(config, **kwargs):
        model = built(config, **kwargs)
        assert all(p.is_meta for p in model.parameters()), "a language model was allocated"
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", probe_only)
    with pytest.raises(ValueError, match=rf"{field}={value}"):
        SIADModel.from_pretrained(folder)


def test_an_adapter_of_another_rank_is_refused_from_its_header(saved_tiny, tmp_path, monkeypatch):
    folder = _copy(saved_tiny, tmp_path)
    _edit_json(folder / "config.json", "llm", lora_r=8)
    _edit_json(folder / "llm_adapter" / "adapter_config.json", None, r=8)
    _nothing_built(monkeypatch)
    with pytest.raises(ValueError, match=r"adapter_model\.safetensors.*lora_r=8"):
        SIADModel.from_pretrained(folder)


def test_the_paper_model_lies_well_inside_the_bounds():
    config = SIADConfig.siad_llm()
    pairs = ((config.vision.width, "width"), (config.vision.num_blocks, "num_blocks"), (config.text.width, "width"),
             (config.text.num_blocks, "num_blocks"), (config.embed_dim, "embed_dim"), (config.llm.lora_r, "lora_r"))
    for value, name in pairs:
        limit = SIZE_LIMITS[name]
        assert value * 4 <= limit
    check_llm_sizes(LLAMA_7B_ARCHITECTURE, "LLaMA-7B")
    for name, value in LLAMA_7B_ARCHITECTURE.items():
        if name in LLM_SIZE_LIMITS:
            assert value * 4 <= LLM_SIZE_LIMITS[name], name
    SIADConfig.tiny(llm={"architecture": dict(LLAMA_7B_ARCHITECTURE)})  # a config may build it


def test_an_architecture_past_the_bounds_is_refused_by_the_config():
    for change in ({"num_hidden_layers": 10**6}, {"n_layer": 10**6}, {"vocab_size": 10**9}, {"hidden_size": 0}):
        with pytest.raises(ValueError, match=rf"SIADConfig\.llm\.architecture: {list(change)[0]}="):
            SIADConfig.tiny(llm={"architecture": {"hidden_size": 64, **change}})


def test_an_external_lm_config_past_the_bounds_is_refused_before_the_model_is_instantiated(monkeypatch):
    import transformers

    from siad.llm import load_language_model

    def config(name, **kwargs):
        return transformers.AutoConfig.for_model("llama", hidden_size=64, num_hidden_layers=10**6,
                                                 num_attention_heads=4, vocab_size=512)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", config)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was instantiated"))
    with pytest.raises(ValueError, match=r"some/llm.*num_hidden_layers=1000000"):
        load_language_model(SIADConfig.tiny(llm=dict(name_or_path="some/llm", architecture=None)))


# ---------------------------------------------------------------------------------------------
# 2. Generation options that multiply work or memory


@pytest.mark.parametrize("changes, match", [
    ({"num_beams": 10**6}, "num_beams=1000000"),
    ({"num_beams": 4, "num_return_sequences": 4}, "num_return_sequences=4"),
    ({"penalty_alpha": 0.6, "top_k": 4}, "contrastive search"),
    ({"cache_implementation": "static", "max_cache_len": 10**9}, "cache_implementation"),
    ({"output_scores": True, "return_dict_in_generate": True}, "return_dict_in_generate"),
    ({"stop_strings": ["#" * 100] * 3}, "stop_strings"),
    ({"suppress_tokens": list(range(10_000))}, "suppress_tokens"),
    ({"max_time": -1}, "max_time"),
])
def test_generation_options_past_the_bounds_are_refused_when_a_folder_loads(saved_tiny, tmp_path, monkeypatch,
                                                                            changes, match):
    folder = _copy(saved_tiny, tmp_path)
    _edit_json(folder / "generation_config.json", None, **changes)
    _nothing_built(monkeypatch)
    with pytest.raises(ValueError, match=rf"generation_config\.json.*{match}"):
        SIADModel.from_pretrained(folder)


def test_generation_options_set_in_code_are_bounded_at_every_generation(tiny_model):
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    settings = tiny_model.generation_config
    try:
        tiny_model.generation_config = settings.__class__(**{**settings.to_dict(), "num_beams": 10**4})
        with pytest.raises(ValueError, match="num_beams=10000"):
            tiny_model.detect([image], "gear")
        with pytest.raises(ValueError, match="num_beams=10000"):
            tiny_model.chat(image, "gear", [], "Where?")
    finally:
        tiny_model.generation_config = settings


def test_beam_search_within_the_bound_runs(saved_tiny, tmp_path):
    folder = _copy(saved_tiny, tmp_path)
    _edit_json(folder / "generation_config.json", None, num_beams=2, max_new_tokens=4)
    model = SIADModel.from_pretrained(folder).eval()
    assert model.detect([np.zeros((32, 32, 3), dtype=np.uint8)], "gear")[0].answer is not None


# ---------------------------------------------------------------------------------------------
# 6. Bounded files: nesting, size, long fields


def _deep(levels: int) -> str:
    return '{"a": ' + "[" * levels + "]" * levels + "}"


@pytest.mark.parametrize("file", ["config.json", "generation_config.json", "llm/config.json",
                                  "llm_adapter/adapter_config.json", "llm/tokenizer_config.json"])
def test_deeply_nested_json_in_a_model_folder_is_a_value_error_naming_the_file(saved_tiny, tmp_path, monkeypatch,
                                                                              file):
    folder = _copy(saved_tiny, tmp_path)
    (folder / file).write_text(_deep(100_000))
    _nothing_built(monkeypatch)
    with pytest.raises(ValueError, match=rf"{file.replace('.', '[.]')}: JSON nested deeper than"):
        SIADModel.from_pretrained(folder)


@pytest.mark.parametrize("file, content, match", [
    ("config.json", "[]", "must be a JSON object"),
    ("generation_config.json", "[]", "not a valid generation config"),
    ("generation_config.json", json.dumps({"max_new_tokens": "many"}), "not a valid generation config"),
    ("llm/config.json", "[]", "must be a JSON object"),
    ("llm/config.json", None, r"not a valid llama config .*hidden_size"),
    ("llm_adapter/adapter_config.json", "[]", "must be a JSON object"),
    ("llm/tokenizer_config.json", "[]", "must be a JSON object"),
    ("llm/tokenizer.json", "{}", "tokenizer files cannot be read"),
])
def test_malformed_files_are_value_errors_naming_the_file(saved_tiny, tmp_path, file, content, match):
    folder = _copy(saved_tiny, tmp_path)
    if content is None:
        _edit_json(folder / file, None, hidden_size="wide")
    else:
        (folder / file).write_text(content)
    with pytest.raises(ValueError, match=rf"{'/'.join(file.split('/')[:-1]) or file}.*{match}"):
        SIADModel.from_pretrained(folder)


def test_an_oversized_config_is_refused_by_its_size(saved_tiny, tmp_path):
    folder = _copy(saved_tiny, tmp_path)
    _edit_json(folder / "config.json", "llm", name_or_path="x" * (2 << 20))
    with pytest.raises(ValueError, match=r"config\.json: \d+ bytes; a file of this kind may have at most"):
        SIADModel.from_pretrained(folder)


@pytest.mark.slow
def test_a_huge_field_gives_a_short_message():
    from siad.config import SIADConfig as Config

    with pytest.raises(ValueError) as error:
        Config.from_json_string(json.dumps({**SIADConfig.tiny().to_dict(), "map": {"pem_norm": "x" * 40_000_000}}))
    assert "map.pem_norm" in str(error.value) and len(str(error.value)) < 500


def test_stage_phrases_that_do_not_fit_the_text_context_are_refused_before_the_lm_loads(saved_tiny, tmp_path,
                                                                                         monkeypatch):
    folder = _copy(saved_tiny, tmp_path)
    _edit_json(folder / "config.json", "text", stage_phrases=["very " * 200 + "local feature of"] * 4)
    _nothing_built(monkeypatch)
    monkeypatch.setattr("siad.hub._load_bundled_llm", lambda *a, **k: pytest.fail("the LM was loaded"))
    with pytest.raises(ValueError, match=r"stage_phrases\[0\] has \d+ tokens"):
        SIADModel.from_pretrained(folder)


def test_a_deeply_nested_bank_sidecar_is_a_value_error(tiny_model, tmp_path):
    from siad import ReferenceBank

    bank = tiny_model.build_references([np.full((32, 32, 3), 100, dtype=np.uint8)] * 2, "gear")
    _, sidecar = bank.save(tmp_path / "gear")
    sidecar.write_text(_deep(100_000))
    with pytest.raises(ValueError, match="nested deeper than"):
        ReferenceBank.load(tmp_path / "gear")


# ---------------------------------------------------------------------------------------------
# 8. A reference bank's normal scale is range-checked


def _rewrite_bank(tensors_path: Path, sidecar_path: Path, **tensors_changed: torch.Tensor) -> None:
    """Rewrite a saved bank's tensors by hand, with a matching checksum and metadata (as an attacker can)."""
    import hashlib

    from safetensors.torch import load_file, save_file

    fields = {k: v for k, v in json.loads(sidecar_path.read_text()).items() if k != "sha256"}
    tensors = {**load_file(str(tensors_path)), **tensors_changed}
    save_file(tensors, str(tensors_path), metadata={"format": "siad-reference-bank", "bank": json.dumps(fields)})
    sidecar_path.write_text(json.dumps({**fields, "sha256": hashlib.sha256(tensors_path.read_bytes()).hexdigest()}))


@pytest.mark.parametrize("scale", [1e-30, 1e30, 0.0, float("nan")])
def test_a_bank_whose_normal_scale_is_out_of_range_is_refused(tiny_model, tmp_path, scale):
    from siad import ReferenceBank

    bank = tiny_model.build_references([np.full((32, 32, 3), v, dtype=np.uint8) for v in (90, 110)], "gear")
    tensors_path, sidecar_path = bank.save(tmp_path / "gear")
    _rewrite_bank(tensors_path, sidecar_path, normal_scale=torch.full_like(bank.normal_scale, scale))
    with pytest.raises(ValueError, match=r"gear\.safetensors: invalid ReferenceBank: normal_scale must be"):
        ReferenceBank.load(tensors_path)


# ---------------------------------------------------------------------------------------------
# 4. Dataset index files name paths inside the root only


def _dataset_with_an_outside_image(tmp_path: Path) -> tuple[Path, Path]:
    from PIL import Image

    root, outside = tmp_path / "data", tmp_path / "secret"
    (root / "gear").mkdir(parents=True)
    outside.mkdir()
    for path in (root / "gear" / "good.png", outside / "private.png"):
        Image.new("RGB", (16, 16)).save(path)
    return root, outside / "private.png"


@pytest.mark.parametrize("how", ["absolute", "dotdot"])
def test_meta_json_entries_outside_the_root_are_refused_when_read(tmp_path, how):
    from siad.data import load_dataset

    root, private = _dataset_with_an_outside_image(tmp_path)
    path = str(private) if how == "absolute" else "../secret/private.png"
    entry = {"img_path": path, "mask_path": "", "cls_name": "gear", "specie_name": "good", "anomaly": 0}
    good = {**entry, "img_path": "gear/good.png"}
    (root / "meta.json").write_text(json.dumps({"test": {"gear": [good, entry]}}))
    where = r"meta\.json \[test\]\[gear\]\[1\]: 'img_path'"
    with pytest.raises(ValueError, match=rf"{where}.*not a path inside the dataset root"):
        load_dataset("meta", root, "test")
    entry.update(img_path="gear/good.png", mask_path=path, anomaly=1, specie_name="hole")
    (root / "meta.json").write_text(json.dumps({"test": {"gear": [good, entry]}}))
    with pytest.raises(ValueError, match=r"'mask_path'.*not a path inside the dataset root"):
        load_dataset("meta", root, "test")


def test_visa_split_csv_paths_outside_the_root_are_refused(tmp_path):
    from siad.data import load_dataset

    root, private = _dataset_with_an_outside_image(tmp_path)
    (root / "split_csv").mkdir()
    (root / "split_csv" / "1cls.csv").write_text(f"object,split,label,image,mask\ngear,test,normal,{private},\n")
    with pytest.raises(ValueError, match=r"1cls\.csv line 2: image .* not a path inside the dataset root"):
        load_dataset("visa", root, "test")


def test_a_deeply_nested_meta_json_is_a_value_error(tmp_path):
    from siad.data import load_dataset

    (tmp_path / "meta.json").write_text(_deep(100_000))
    with pytest.raises(ValueError, match=r"meta\.json: JSON nested deeper than"):
        load_dataset("meta", tmp_path, "test")


# ---------------------------------------------------------------------------------------------
# 7. Every loaded tensor is finite


@pytest.mark.parametrize("file, tensor", [
    ("model.safetensors", "llama_proj.weight"),
    ("model.safetensors", "pem.mlp.0.bias"),
    ("llm/model.safetensors", "model.layers.0.mlp.up_proj.weight"),
    ("llm_adapter/adapter_model.safetensors", None),  # the first LoRA matrix
])
def test_non_finite_weights_anywhere_in_a_folder_are_refused_when_it_loads(saved_tiny, tmp_path, file, tensor):
    from safetensors.torch import load_file, save_file

    folder = _copy(saved_tiny, tmp_path)
    path = folder / file
    tensors = load_file(str(path))
    name = tensor or sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("inf") if "adapter" in file else float("nan")
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"loaded tensors hold NaN or infinite values"):
        SIADModel.from_pretrained(folder)


def test_a_nan_buffer_is_refused_but_the_causal_masks_infinities_load(saved_tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    loaded = SIADModel.from_pretrained(saved_tiny)  # the text trunk's causal mask holds -inf: it loads
    assert bool(torch.isinf(loaded.text_encoder.modality_preprocessors.text.mask).any())
    folder = _copy(saved_tiny, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    name = "text_encoder.modality_preprocessors.text.mask"
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"modality_preprocessors\.text\.mask"):
        SIADModel.from_pretrained(folder)


def test_an_external_lm_with_non_finite_weights_is_refused_as_it_loads(monkeypatch):
    import transformers

    from siad.llm import load_language_model

    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=512)

    def model(name, config=None, **kwargs):
        built = transformers.AutoModelForCausalLM.from_config(config)
        with torch.no_grad():
            built.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
        return built

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained",
                        lambda name, **kwargs: transformers.AutoConfig.for_model("llama", **small))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    with pytest.raises(ValueError, match=r"some/llm: 1 loaded tensors .*model\.layers\.1\.mlp\.down_proj\.weight"):
        load_language_model(SIADConfig.tiny(llm=dict(name_or_path="some/llm", architecture=None)))


# ---------------------------------------------------------------------------------------------
# 3. Undefined metrics are reported as undefined


def test_a_class_of_anomalous_images_only_has_undefined_image_metrics_left_out_of_the_mean(tiny_model, tmp_path):
    from PIL import Image

    from siad import evaluate as ev
    from siad.data.readers import Sample

    rng = np.random.default_rng(0)
    samples = []
    for name, labels in (("gear", (1, 1, 1)), ("plate", (0, 0, 1, 1))):
        for i, label in enumerate(labels):
            path = tmp_path / f"{name}_{i}.png"
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
            samples.append(Sample(path, None, name, "hole" if label else "good", label))
    settings = ev.EvalSettings(chat=False, qualitative=0, progress=False)
    with pytest.warns(ev.UndefinedMetricWarning, match=r"gear: 0 normal, 3 anomalous"):
        evaluation = ev.evaluate_samples(tiny_model, samples, dataset="toy", settings=settings)
    gear, plate = evaluation.classes
    assert all(gear.metrics["pass1"][m] is None for m in ("image_auroc", "image_ap", "image_f1_max"))
    for metric in ("image_auroc", "image_ap", "image_f1_max"):
        assert evaluation.mean["pass1"][metric] == plate.metrics["pass1"][metric] is not None
    assert any("AP and F1-max undefined for gear" in note for note in evaluation.notes)
    report = ev.markdown_report(evaluation, "test", plots=False)
    assert "| gear | 3 | - | - | - | - | - |" in report


def test_calibrate_refuses_a_threshold_from_anomalous_images_only():
    from siad import calibrate

    with pytest.raises(ValueError, match="all 3 samples are anomalous"):
        calibrate.threshold_f1_max([1, 1, 1], [0.2, 0.5, 0.9])
