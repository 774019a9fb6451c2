"""Saving, loading (local folder and offline Hub cache) and pushing, all offline."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from siad import SIADConfig, SIADModel
from siad.llm import load_language_model

IMAGES = [np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8),
          np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)]




def _same_detection(a, b):
    for x, y in zip(a, b):
        assert np.array_equal(x.anomaly_map, y.anomaly_map) and np.array_equal(x.initial_map, y.initial_map)
        assert x.score == y.score and x.initial_score == y.initial_score
        assert x.answer == y.answer and x.initial_answer == y.initial_answer


def _tiny(dtype=torch.float32, **overrides):
    torch.manual_seed(0)
    model = SIADModel(SIADConfig.tiny(**overrides), dtype=dtype).eval()
    with torch.no_grad():  # non-zero SEM and LoRA-B so that every part matters in the round trip
        for p in model.sem.convs.parameters():
            p.normal_(0, 0.01)
        for n, p in model.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return model


@pytest.mark.slow
def test_round_trip_fp32_is_bit_identical(tmp_path):
    model = _tiny()
    model.save_pretrained(tmp_path / "m")
    files = sorted(str(p.relative_to(tmp_path / "m")) for p in (tmp_path / "m").rglob("*") if p.is_file())
    assert files == ["README.md", "config.json", "generation_config.json", "llm/config.json", "llm/model.safetensors",
                     "llm/tokenizer.json",
                     "llm/tokenizer_config.json", "llm_adapter/adapter_config.json",
                     "llm_adapter/adapter_model.safetensors", "model.safetensors"]
    loaded = SIADModel.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    _same_detection(model.detect(IMAGES, "bottle"), loaded.detect(IMAGES, "bottle"))
    for (n, p), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n == n2 and torch.equal(p, p2), n


def test_round_trip_bf16(tmp_path):
    model = _tiny(torch.bfloat16)
    model.save_pretrained(tmp_path / "m")
    header = json.loads((tmp_path / "m" / "model.safetensors").read_bytes()[8:8 + int.from_bytes(
        (tmp_path / "m" / "model.safetensors").read_bytes()[:8], "little")])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"BF16"}
    loaded = SIADModel.from_pretrained(tmp_path / "m", dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    _same_detection(model.detect(IMAGES, "bottle"), loaded.detect(IMAGES, "bottle"))


def test_save_as_bf16_from_fp32_and_load_in_fp32(tmp_path):
    model = _tiny()
    model.save_pretrained(tmp_path / "m", dtype=torch.bfloat16)
    loaded = SIADModel.from_pretrained(tmp_path / "m", dtype=torch.float32)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    w = model.llama_proj.weight.to(torch.bfloat16).float()
    assert torch.equal(loaded.llama_proj.weight, w)


def _snapshot(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay `source` out as a Hub cache entry: models--org--name/snapshots/<40 hex>/..., refs/main."""
    org, name = repo_id.split("/")
    root = cache / f"models--{org}--{name}"
    commit = (f"{abs(hash(repo_id)):x}" * 8)[:40]
    shutil.copytree(source, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    return root


def test_from_pretrained_hub_id_offline_from_the_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE  # set by conftest before any import
    cache = tmp_path / "hub"
    # the base LLM lives in its own (cached) repo
    base, tokenizer = load_language_model(SIADConfig.tiny())
    base.save_pretrained(tmp_path / "llm_src")
    tokenizer.save_pretrained(tmp_path / "llm_src")
    _snapshot(cache, "org/tiny-llm", tmp_path / "llm_src")
    torch.manual_seed(0)
    config = SIADConfig.tiny(llm=dict(name_or_path="org/tiny-llm"))
    model = SIADModel(config, llm=base, llm_tokenizer=tokenizer).eval()
    model.save_pretrained(tmp_path / "siad_src")
    assert not (tmp_path / "siad_src" / "llm").exists()  # the base LLM is referenced, not copied
    _snapshot(cache, "org/siad-llm", tmp_path / "siad_src")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    loaded = SIADModel.from_pretrained("org/siad-llm", cache_dir=cache)
    assert loaded.config.llm.name_or_path == "org/tiny-llm"
    _same_detection(model.detect(IMAGES, "wood"), loaded.detect(IMAGES, "wood"))
    with pytest.raises(OSError, match="org/absent"):
        SIADModel.from_pretrained("org/absent", cache_dir=cache)


class FakeHub:
    """HfApi.create_repo and upload_folder replaced: what would be uploaded is recorded, nothing
    leaves the machine."""

    def __init__(self, monkeypatch):
        from huggingface_hub import HfApi

        self.created: list[tuple] = []
        self.uploads: list[dict] = []
        hub = self

        def create_repo(api, repo_id, **kwargs):
            hub.created.append((repo_id, kwargs.get("private"), api.token))
            return SimpleNamespace(repo_id=repo_id)

        def upload_folder(api, *, repo_id, folder_path, **kwargs):
            folder = Path(folder_path)
            files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
            hub.uploads.append(dict(repo_id=repo_id, folder=folder, files=files, **kwargs))
            return f"https://hub.invalid/{repo_id}/commit/{'0' * 40}"  # a commit URL, never reached

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)


def _weights(raw: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(raw)


def _count_saves(monkeypatch) -> list:
    import siad.hub

    saves = []
    real = siad.hub.save_model_folder

    def counting(*args, **kwargs):
        saves.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(siad.hub, "save_model_folder", counting)
    return saves


CARD = "---\nlibrary_name: siad-llm\nlicense: cc-by-nc-sa-4.0\n---\n\n# my card\n"


def _check_bf16_card_no_encoder(upload: dict, model) -> None:
    files = upload["files"]
    assert files["README.md"].decode() == CARD
    weights = _weights(files["model.safetensors"])
    assert weights and not any(k.startswith(("vision_encoder.", "text_encoder.", "encoder.")) for k in weights)
    assert {v.dtype for v in weights.values()} == {torch.bfloat16}
    assert torch.equal(weights["llama_proj.weight"], model.llama_proj.weight.to(torch.bfloat16))
    assert {v.dtype for v in _weights(files["llm_adapter/adapter_model.safetensors"]).values()} == {torch.bfloat16}
    from siad.hub import HUB_PATTERNS

    assert upload["allow_patterns"] == list(HUB_PATTERNS) == upload["delete_patterns"]


def test_save_pretrained_with_push_uploads_exactly_the_folder_it_saved(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch)
    saves = _count_saves(monkeypatch)
    model = _tiny(encoder_checkpoint=str(tmp_path / "imagebind_huge.pth"))
    url = model.save_pretrained(tmp_path / "m", dtype=torch.bfloat16, card=CARD, save_encoder=False,
                                push_to_hub=True, repo_id="org/siad-llm", private=True, token="hf_test")
    assert len(saves) == 1 and len(hub.uploads) == 1
    assert hub.created == [("org/siad-llm", True, "hf_test")]
    upload = hub.uploads[0]
    assert upload["repo_id"] == "org/siad-llm" and upload["folder"] == tmp_path / "m"
    assert url == f"https://hub.invalid/org/siad-llm/commit/{'0' * 40}"
    _check_bf16_card_no_encoder(upload, model)
    on_disk = {str(p.relative_to(tmp_path / "m")): p.read_bytes() for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert upload["files"] == on_disk  # byte for byte what was saved


def test_push_to_hub_saves_once_with_the_save_options(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch)
    saves = _count_saves(monkeypatch)
    model = _tiny(encoder_checkpoint=str(tmp_path / "imagebind_huge.pth"))
    model.push_to_hub("org/siad-llm", dtype=torch.bfloat16, card=CARD, save_encoder=False, branch="dev",
                      commit_message="bf16, no encoder")
    assert len(saves) == 1 and len(hub.uploads) == 1
    upload = hub.uploads[0]
    assert (upload["revision"], upload["commit_message"], upload["create_pr"]) == ("dev", "bf16, no encoder", False)
    _check_bf16_card_no_encoder(upload, model)
    assert not upload["folder"].exists()  # the temporary folder is gone


def test_push_to_hub_defaults_upload_the_whole_model_with_its_card(monkeypatch):
    hub = FakeHub(monkeypatch)
    _tiny().push_to_hub("org/siad-llm", private=True, token="hf_test")
    assert hub.created == [("org/siad-llm", True, "hf_test")]
    files = hub.uploads[0]["files"]
    assert sorted(files) == [
        "README.md", "config.json", "generation_config.json", "llm/config.json", "llm/model.safetensors", "llm/tokenizer.json",
        "llm/tokenizer_config.json", "llm_adapter/adapter_config.json", "llm_adapter/adapter_model.safetensors",
        "model.safetensors"]
    stored = _weights(files["model.safetensors"])
    assert any(k.startswith("vision_encoder.") for k in stored) and any(k.startswith("text_encoder.") for k in stored)
    assert not any(k.startswith("encoder.") for k in stored)
    assert 'SIADModel.from_pretrained("org/siad-llm"' in files["README.md"].decode()  # the card names the repo


def test_the_branch_is_branch_or_as_in_transformers_revision(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch)
    model = _tiny()
    model.push_to_hub("org/siad-llm", revision="dev")
    model.save_pretrained(tmp_path / "m", push_to_hub=True, repo_id="org/siad-llm", revision="v2", create_pr=True)
    model.push_to_hub("org/siad-llm", branch="dev", revision="dev")
    model.push_to_hub("org/siad-llm")
    assert [(u["revision"], u["create_pr"]) for u in hub.uploads] == [("dev", False), ("v2", True), ("dev", False),
                                                                       (None, False)]
    for call in (lambda: model.push_to_hub("org/siad-llm", branch="dev", revision="main"),
                 lambda: model.save_pretrained(tmp_path / "n", push_to_hub=True, branch="dev", revision="main")):
        with pytest.raises(ValueError, match="two branches"):
            call()
    assert len(hub.uploads) == 4 and not (tmp_path / "n").exists()  # refused before anything was saved


def test_from_pretrained_asks_the_hub_for_the_revision_and_the_model_files_only(tmp_path, monkeypatch):
    import siad.model_folder
    from siad.hub import HUB_PATTERNS

    _tiny().save_pretrained(tmp_path / "m")
    asked = []

    def snapshot(repo_id, **kwargs):
        asked.append((repo_id, kwargs))
        return str(tmp_path / "m")

    monkeypatch.setattr(siad.model_folder, "snapshot_download", snapshot)
    loaded = SIADModel.from_pretrained("org/siad-llm", revision="v1", token="hf_test", local_files_only=True)
    ((repo, kwargs),) = asked
    assert repo == "org/siad-llm" and loaded.name == "org/siad-llm"
    assert (kwargs["revision"], kwargs["token"], kwargs["local_files_only"]) == ("v1", "hf_test", True)
    assert kwargs["allow_patterns"] == list(HUB_PATTERNS)


def test_siad_model_does_not_use_the_hub_mixin_and_keeps_one_config():
    """The decision of SIADModel's docstring: save, load and push are SIAD's own (siad.hub)."""
    from huggingface_hub import ModelHubMixin

    model = _tiny()
    assert not isinstance(model, ModelHubMixin) and not hasattr(model, "_hub_mixin_config")
    assert "PyTorchModelHubMixin" in (SIADModel.__doc__ or "")


def test_the_upload_docstring_names_every_file_pattern_it_uploads():
    from siad.hub import HUB_PATTERNS, upload_model_folder

    doc = " ".join((upload_model_folder.__doc__ or "").split())
    assert all(pattern.rstrip("*") in doc for pattern in HUB_PATTERNS), HUB_PATTERNS
    assert "generation_config.json" in HUB_PATTERNS


def test_upload_model_folder_uploads_a_saved_folder_and_refuses_anything_else(tmp_path, monkeypatch):
    from siad.hub import upload_model_folder

    hub = FakeHub(monkeypatch)
    _tiny().save_pretrained(tmp_path / "m", dtype=torch.bfloat16)
    (tmp_path / "m" / "notes.txt").write_text("not part of the model")
    upload_model_folder(tmp_path / "m", "org/siad-llm")
    assert "notes.txt" in hub.uploads[0]["files"]  # in the folder, but the allow patterns leave it out
    from huggingface_hub.utils import filter_repo_objects

    sent = list(filter_repo_objects(hub.uploads[0]["files"], allow_patterns=hub.uploads[0]["allow_patterns"]))
    assert "notes.txt" not in sent and "model.safetensors" in sent and "llm/model.safetensors" in sent
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        upload_model_folder(tmp_path / "m", "org/siad-llm")
    assert len(hub.uploads) == 1 and len(hub.created) == 1  # refused before the repo is created


def test_missing_and_unknown_weights_are_named(tmp_path):
    _tiny().save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "model.safetensors"
    state = load_file(path)
    removed = "sem.convs.2.weight"
    broken = {k: v for k, v in state.items() if k != removed}
    save_file(broken, path)
    with pytest.raises(ValueError, match=removed):
        SIADModel.from_pretrained(tmp_path / "m")
    state["mystery.weight"] = torch.zeros(3)
    save_file(state, path)
    with pytest.raises(ValueError, match="mystery.weight"):
        SIADModel.from_pretrained(tmp_path / "m")


def test_wrong_adapter_and_missing_files(tmp_path):
    _tiny().save_pretrained(tmp_path / "m")
    adapter_config = tmp_path / "m" / "llm_adapter" / "adapter_config.json"
    data = json.loads(adapter_config.read_text())
    data["r"] = 99
    adapter_config.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="LoRA"):
        SIADModel.from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="no SIAD model folder"):
        SIADModel.from_pretrained(tmp_path / "nowhere" / "deeper")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        SIADModel.from_pretrained(tmp_path / "empty")


def test_model_card_parses(tmp_path):
    from huggingface_hub import ModelCard

    _tiny().save_pretrained(tmp_path / "m")
    card = ModelCard.load(tmp_path / "m" / "README.md")
    assert card.data.library_name == "siad-llm"
    assert "anomaly-detection" in card.data.tags


def test_a_folder_saved_by_a_newer_siad_loads_with_a_warning_and_an_older_one_is_upgraded(tmp_path):
    model = _tiny()
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    saved = json.loads(path.read_text())
    from siad.config import CONFIG_FORMAT_VERSION

    assert saved["format_version"] == CONFIG_FORMAT_VERSION
    path.write_text(json.dumps({**saved, "format_version": CONFIG_FORMAT_VERSION + 1, "map_head_dtype": "float32"}))
    with pytest.warns(UserWarning, match=r"newer siad.*\['map_head_dtype'\]"):
        newer = SIADModel.from_pretrained(tmp_path / "m")
    _same_detection(model.detect(IMAGES, "bottle", chat=False), newer.detect(IMAGES, "bottle", chat=False))
    # a folder written before the format version existed: a flat config without "format_version", and
    # the ImageBind trunks stored together as `encoder.*`
    old = _flat_config(saved)
    assert "format_version" not in old and "vision" not in old and old["stage_blocks"] == [0, 1, 2, 3]
    path.write_text(json.dumps(old))
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(weights)
    save_file({("encoder." + k.split("_encoder.", 1)[1] if k.startswith(("vision_encoder.", "text_encoder.")) else k): v
               for k, v in state.items()}, weights)
    assert any(k.startswith("encoder.modality_trunks.text.") for k in load_file(weights))
    upgraded = SIADModel.from_pretrained(tmp_path / "m")
    assert upgraded.config == model.config
    _same_detection(model.detect(IMAGES, "bottle", chat=False), upgraded.detect(IMAGES, "bottle", chat=False))
    path.write_text(json.dumps({**old, "threshold": "0.5"}))
    with pytest.raises(ValueError, match=r"SIADConfig.map.threshold='0.5'"):
        SIADModel.from_pretrained(tmp_path / "m")


def _flat_config(saved: dict) -> dict:
    """A saved config (format 4: in parts) as the flat dict of the formats before it, without a version."""
    from siad.config_format import _FORMAT_3_FIELDS

    flat = {}
    for old_name, (part, name) in _FORMAT_3_FIELDS.items():
        source = saved[part] if part else saved
        if name in source:
            flat[old_name] = source[name]
    assert saved["vision"]["trainable"] == saved["text"]["trainable"]
    flat["train_encoder"] = saved["vision"]["trainable"]
    return flat


def test_saved_generation_config_takes_effect_on_loading(tmp_path):
    """A model folder's generation_config.json (written by save_pretrained, editable by hand) sets how
    the loaded model answers."""
    import json

    model = _tiny()
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "generation_config.json"
    settings = json.loads(path.read_text())
    assert settings["max_new_tokens"] == model.config.llm.max_new_tokens
    settings["max_new_tokens"] = 2
    path.write_text(json.dumps(settings))
    loaded = SIADModel.from_pretrained(tmp_path / "m")
    assert loaded.generation_config.max_new_tokens == 2
    short = loaded.chat(IMAGES[0], "bottle", [], "Where is it?")
    full = model.chat(IMAGES[0], "bottle", [], "Where is it?")  # the same weights with max_new_tokens=16
    assert len(short) < len(full)
