"""Saving and loading SIAD-LLM as a folder of parts (diffusers-style), locally or on the Hub: what
`SIADModel.save_pretrained`, `from_pretrained` and `push_to_hub` run (why SIADModel does not use
huggingface_hub's `PyTorchModelHubMixin` for them: `siad.model.SIADModel`'s docstring).

The folder's layout: `siad.model_folder`; the checks of what it declares: `siad.folder_checks`; reading
weight files: `siad.weights`.

- `save_model_folder`: the folder (config.json, model.safetensors, generation_config.json, llm_adapter/,
  llm/ when the LM was built by SIAD, README.md).
- `upload_model_folder`: a saved folder, uploaded as it is; `push_model`: saved once into a temporary
  folder and uploaded; `upload_branch`: the branch, named `branch` (huggingface_hub) or `revision`
  (transformers).
- `resolve_model_folder` (`siad.model_folder`): a local folder or the snapshot of a Hub repo.
- `load_model_folder`: the model, built by the class given, from a folder.
- `save_generation_config`, `read_generation_config`, `load_generation_config`: the folder's
  generation_config.json.

The base LLM is otherwise named in the config (`llm_name_or_path`) and loaded from its own repo or path.
Loading never builds a float32 copy first: the skeleton is built with empty weights and every
tensor is read by the safetensors library, one at a time, straight into the requested dtype
(`siad.weights.load_safetensors`); headers are validated and every shape is checked against the model's
before anything is read; expected keys that are missing and unknown keys that are present are refused
by name.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from accelerate import init_empty_weights
from huggingface_hub import HfApi
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.generation import GenerationConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from siad.config import SIADConfig
from siad.config_format import renamed_weight_keys
from siad.encoders import load_official_checkpoint
from siad.encoders.text import ImageBindTokenizer
from siad.folder_checks import (check_adapter_config, check_adapter_header, check_bundled_llm, check_declared_sizes,
                                check_llm_header)
from siad.generation import check_generation_config
from siad.jsonfile import read_json, short_repr
from siad.llm import NO_REMOTE_CODE, load_language_model
from siad.model_card import parameter_counts, render_model_card
from siad.model_folder import (ADAPTER_DIR, CARD_NAME, CONFIG_NAME, GENERATION_NAME, HUB_PATTERNS,  # noqa: F401
                               LLM_DIR, REQUIRED_FILES, WEIGHTS_NAME, read_folder_config,
                               resolve_model_folder)
from siad.modules import check_stage_phrases_fit
from siad.network import ENCODER_PREFIXES
from siad.weights import (check_keys, check_loaded_finite, load_safetensors, refuse_non_finite,  # noqa: F401
                          safetensors_shapes)

if TYPE_CHECKING:  # pragma: no cover - typing only: siad.model imports this module
    from siad.model import SIADModel
    from siad.network import SIADNetwork

Model = TypeVar("Model", bound="SIADModel")


# ---------------------------------------------------------------------- saving
def save_model_folder(model: "SIADNetwork", save_directory: str | Path, *, save_encoder: bool = True,
                      card: str | None = None, dtype: torch.dtype | None = None, model_id: str | None = None) -> Path:
    """Write the folder of `siad.model_folder`'s docstring. dtype: cast floating weights (e.g. bf16);
    card: the README.md text (default: `render_model_card` for this model; model_id: the Hub id its
    usage example names)."""
    folder = Path(save_directory)
    config = model.config
    if not save_encoder and not config.encoder_checkpoint:
        raise ValueError("save_encoder=False needs config.encoder_checkpoint (the official imagebind_huge.pth path) "
                         "so that the ImageBind encoders can be found again")

    def cast(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t.contiguous().cpu()

    from peft import get_peft_model_state_dict  # deferred: peft takes seconds to import

    state = {k: cast(v) for k, v in model.state_dict().items()
             if not k.startswith("llm.") and (save_encoder or not k.startswith(ENCODER_PREFIXES))}
    # save_embedding_layers=False: peft would otherwise look the base model up on the Hub
    adapter_state = {k: cast(v) for k, v in get_peft_model_state_dict(model.llm, save_embedding_layers=False).items()}
    base = model.llm.get_base_model() if config.llm.name_or_path is None else None  # a base LLM built by SIAD
    base_state = ({k: cast(v) for k, v in base.state_dict().items() if "lora_" not in k and not _is_tied(base, k)}
                  if base is not None else {})
    # weights are checked before anything is written (buffers such as the text trunk's causal mask hold -inf)
    weights = {n for n, _ in model.named_parameters()}
    refuse_non_finite({k: v for k, v in state.items() if k in weights})
    refuse_non_finite(adapter_state)
    if base is not None:
        refuse_non_finite({n: base_state[n] for n, _ in base.named_parameters() if n in base_state})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "siad_encoder": str(save_encoder)})
    (folder / CONFIG_NAME).write_text(config.to_json_string(), encoding="utf-8")
    adapter_dir = folder / ADAPTER_DIR
    adapter_dir.mkdir(exist_ok=True)
    save_file(adapter_state, str(adapter_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    model.llm.peft_config["default"].save_pretrained(str(adapter_dir))
    if base is not None:  # it travels with the model
        llm_dir = folder / LLM_DIR
        llm_dir.mkdir(exist_ok=True)
        base.config.save_pretrained(str(llm_dir))
        save_file(_strip_base_layer(base_state), str(llm_dir / WEIGHTS_NAME), metadata={"format": "pt"})
        model.llm_tokenizer.save_pretrained(str(llm_dir))
    if card is None:
        card = render_model_card(config, model_id=model_id, encoder_saved=save_encoder,
                                 parameters=parameter_counts(model))
    save_generation_config(model, folder)
    (folder / CARD_NAME).write_text(card, encoding="utf-8")
    return folder



def _strip_base_layer(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft wraps LoRA targets: `q_proj.base_layer.weight` is the base model's `q_proj.weight`."""
    return {k.replace(".base_layer.", "."): v for k, v in state.items()}


# ---------------------------------------------------------------------- uploading
def upload_model_folder(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool | None = None,
                        branch: str | None = None, create_pr: bool = False,
                        commit_message: str | None = None) -> str:
    """Upload a saved model folder to the Hub exactly as it is, in one commit; returns the commit URL.

    The repo is created if needed. Only the files of a model folder (`HUB_PATTERNS`: config.json,
    model.safetensors, generation_config.json, llm_adapter/, llm/, README.md) are uploaded, and files of
    those patterns that the folder no longer has are deleted from the repo in the same commit (e.g. an
    llm/ left by an earlier upload, which would otherwise be loaded instead of the LM the config names).
    Nothing is saved again: the dtype, card and encoder are those of the folder.
    """
    folder = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a saved SIAD model folder: {missing} missing")
    SIADConfig.load(folder / CONFIG_NAME)  # a folder whose config does not load is not uploaded
    api = HfApi(token=token)
    repo = api.create_repo(repo_id=repo_id, private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo.repo_id, folder_path=str(folder), repo_type="model", revision=branch,
                             create_pr=create_pr, commit_message=commit_message or "Upload a SIAD-LLM model",
                             allow_patterns=list(HUB_PATTERNS), delete_patterns=list(HUB_PATTERNS))


def upload_branch(branch: str | None, revision: str | None) -> str | None:
    """The branch an upload goes to: huggingface_hub names it `branch`, transformers' `push_to_hub`
    `revision`; either may be given (both only when they agree). None: the repo's main branch."""
    if branch is not None and revision is not None and branch != revision:
        raise ValueError(f"branch={branch!r} and revision={revision!r} name two branches: give one "
                         "(revision is transformers' name for the branch pushed to)")
    return branch if branch is not None else revision


def push_model(model: "SIADNetwork", repo_id: str, *, save_encoder: bool = True, card: str | None = None,
               dtype: torch.dtype | None = None, token: str | None = None, private: bool | None = None,
               branch: str | None = None, create_pr: bool = False, commit_message: str | None = None) -> str:
    """Save the model once into a temporary folder (`save_model_folder`, its card naming `repo_id`) and
    upload that folder (`upload_model_folder`); returns the commit URL. The temporary folder is removed."""
    with tempfile.TemporaryDirectory(prefix="siad-push-") as tmp:
        folder = save_model_folder(model, Path(tmp) / "model", save_encoder=save_encoder, card=card, dtype=dtype,
                                   model_id=repo_id)
        return upload_model_folder(folder, repo_id, token=token, private=private, branch=branch,
                                   create_pr=create_pr, commit_message=commit_message)


# ---------------------------------------------------------------------- loading
def load_model_folder(model_class: type[Model], folder: Path, *, config: SIADConfig | None = None,
                      dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                      cache_dir: str | Path | None = None, local_files_only: bool = False,
                      llm_quantization: str | None = None) -> Model:
    """Build a model of `model_class` (`SIADModel`, what `SIADModel.from_pretrained` passes) from a folder
    written by `save_model_folder`: every check of `siad.model_folder` first, then the LM, the skeleton
    with empty weights, and the weights. config: instead of the folder's (training resumes with its own)."""
    from peft import set_peft_model_state_dict  # deferred: peft takes seconds to import

    folder = Path(folder)
    stored_config, version = read_folder_config(folder / CONFIG_NAME)
    config = config if config is not None else stored_config
    device = torch.device(device)
    weights = folder / WEIGHTS_NAME
    adapter_file = folder / ADAPTER_DIR / "adapter_model.safetensors"
    for needed in (weights, adapter_file):
        if not needed.is_file():
            raise FileNotFoundError(f"{folder} is not a complete SIAD model folder: {needed.name} is missing")
    check_adapter_config(folder / ADAPTER_DIR / "adapter_config.json", config)
    # the sizes the config declares against the weights' headers, before anything is built
    stored_shapes = safetensors_shapes(weights)
    names = renamed_weight_keys(stored_shapes, version)  # stored -> the model's
    check_declared_sizes(config, {names[k]: v for k, v in stored_shapes.items()}, folder / CONFIG_NAME, weights)
    check_adapter_header(adapter_file, config)
    check_stage_phrases_fit(config, ImageBindTokenizer(config.text.context_length))
    read_generation_config(folder)  # its bounds, before the LM is loaded (the context is checked after)
    llm_dir = folder / LLM_DIR
    if config.llm.name_or_path is None:  # the base LLM travels with the model: refuse before building anything
        check_bundled_llm(folder, llm_dir)
    if llm_dir.is_dir():
        llm, tokenizer = _load_bundled_llm(llm_dir, dtype, device)
    else:
        llm, tokenizer = load_language_model(config, dtype=dtype, device=device, local_files_only=local_files_only,
                                             quantization=llm_quantization, cache_dir=cache_dir)
    with init_empty_weights(include_buffers=False):  # the backbone's weights come from the folder, not a package
        model = model_class(config, dtype=dtype, device=device, llm=llm, llm_tokenizer=tokenizer,
                          pretrained_backbone=False)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("llm.")}
    found = set(names.values())
    has_encoder = any(k.startswith(ENCODER_PREFIXES) for k in found)
    if not has_encoder:
        if not config.encoder_checkpoint:
            raise ValueError(f"{weights} holds no encoder weights and config.encoder_checkpoint is not set")
        expected = {k: v for k, v in expected.items() if not k.startswith(ENCODER_PREFIXES)}
    check_keys(set(expected), found, str(weights))
    stored_names = {new: old for old, new in names.items()}
    state = load_safetensors(weights, expected={stored_names[k]: v for k, v in expected.items()}, dtype=dtype,
                             device=device)
    model.load_state_dict({names[k]: v for k, v in state.items()}, strict=False, assign=True)
    del state
    if not has_encoder:
        load_official_checkpoint([model.vision_encoder, model.text_encoder], config.encoder_checkpoint, dtype=dtype,
                                 device=device)
    expected_adapter = _expected_adapter_shapes(model)
    check_keys(set(expected_adapter), set(safetensors_shapes(adapter_file)), str(adapter_file))
    adapter = load_safetensors(adapter_file, expected=expected_adapter, dtype=dtype, device=device)
    result = set_peft_model_state_dict(model.llm, adapter, low_cpu_mem_usage=True)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{adapter_file}: unknown adapter weights {sorted(result.unexpected_keys)[:10]}")
    model.to(device)  # non-persistent buffers were built on the CPU
    meta = [n for n, p in model.named_parameters() if p.is_meta]
    if meta:
        raise ValueError(f"{folder}: weights were never loaded for {meta[:10]}")
    # every part: the folder's weights, the adapter and a bundled LM (an external LM was checked as it loaded)
    external = not llm_dir.is_dir()
    check_loaded_finite(model, str(folder),
                        skip=lambda name: external and name.startswith("llm.") and "lora_" not in name)
    model.vision_encoder.requires_grad_(config.vision.trainable)
    model.text_encoder.requires_grad_(config.text.trainable)
    load_generation_config(model, folder)  # a saved generation_config.json takes effect
    return model



def _expected_adapter_shapes(model: "SIADNetwork") -> dict[str, tuple[int, ...]]:
    from peft import get_peft_model_state_dict  # deferred: peft takes seconds to import

    return {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model.llm, save_embedding_layers=False).items()}



# The JSON files of a bundled LM folder that transformers parses with Python's json, and their size bounds
# (a tokenizer config may hold a long chat template and many added tokens). tokenizer.json is parsed by
# the tokenizers library (Rust, whose parser bounds the nesting itself).
_LLM_JSON_FILES: dict[str, int] = {CONFIG_NAME: 1 << 20, GENERATION_NAME: 1 << 20, "tokenizer_config.json": 16 << 20,
                                   "special_tokens_map.json": 1 << 20}


def _load_bundled_llm(llm_dir: Path, dtype: torch.dtype, device: torch.device) -> tuple[Any, Any]:
    """The base LLM saved inside the model folder, read tensor by tensor into the requested dtype.
    Loaded as data: code named by an `auto_map` is never run."""
    config_path = llm_dir / CONFIG_NAME
    for name in _LLM_JSON_FILES:  # bounded size and nesting before transformers parses them; objects only
        if (llm_dir / name).is_file() and not isinstance(read_json(llm_dir / name, max_bytes=_LLM_JSON_FILES[name]),
                                                         dict):
            raise ValueError(f"{llm_dir / name}: must be a JSON object")
    model_type = read_json(config_path).get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:  # e.g. an auto_map: code we do not run
        raise ValueError(f"{config_path} does not name a transformers architecture (model_type "
                         f"{short_repr(model_type)}) that loads without running code from the folder; SIAD loads "
                         f"model folders as data only and never runs their code")
    try:
        llm_config = AutoConfig.from_pretrained(str(llm_dir), **NO_REMOTE_CODE)
    except Exception as error:  # transformers' own validation of the values
        raise ValueError(f"{config_path}: not a valid {model_type} config ({type(error).__name__}: "
                         f"{short_repr(str(error))})") from error
    try:  # before anything is allocated
        tokenizer = AutoTokenizer.from_pretrained(str(llm_dir), **NO_REMOTE_CODE)
    except Exception as error:
        raise ValueError(f"{llm_dir}: its tokenizer files cannot be read ({type(error).__name__}: "
                         f"{short_repr(str(error))})") from error
    weights = llm_dir / WEIGHTS_NAME
    stored = safetensors_shapes(weights)
    check_llm_header(llm_config, stored, config_path, weights)
    with init_empty_weights(include_buffers=False):
        llm = AutoModelForCausalLM.from_config(llm_config, dtype=dtype, **NO_REMOTE_CODE)
    expected = {k: tuple(v.shape) for k, v in llm.state_dict().items()}
    found = set(stored)
    tied = {k for k in set(expected) - found if _is_tied(llm, k)}
    check_keys(set(expected) - tied, found, str(weights))
    llm.load_state_dict(load_safetensors(weights, expected=expected, dtype=dtype, device=device), strict=False,
                        assign=True)
    if tied:
        llm.tie_weights()
    llm.to(device)
    return llm, tokenizer


def _is_tied(llm: Any, key: str) -> bool:
    return key == "lm_head.weight" and bool(getattr(llm.config, "tie_word_embeddings", False))


# ---------------------------------------------------------------------- generation_config.json
def save_generation_config(model: "SIADNetwork", folder: str | Path) -> Path:
    """Write the model's generation settings (`model.generation_config`) as `generation_config.json`
    into a model folder; returns the file's path."""
    folder = Path(folder)
    model.generation_config.save_pretrained(folder)
    return folder / GENERATION_NAME


def read_generation_config(folder: str | Path) -> GenerationConfig | None:
    """A model folder's `generation_config.json` (None when there is none), its size and nesting bounded
    (`siad.jsonfile.read_json`) and its options within the bounds of `siad.generation.check_generation_config`;
    anything else is a ValueError naming the file (and the option)."""
    path = Path(folder) / GENERATION_NAME
    if not path.is_file():
        return None
    read_json(path)  # bounded before transformers parses it
    try:
        loaded = GenerationConfig.from_pretrained(Path(folder), local_files_only=True)
    except Exception as error:  # malformed JSON, invalid values, ...
        raise ValueError(f"{path}: not a valid generation config ({short_repr(str(error))})") from error
    check_generation_config(loaded, str(path))
    return loaded


def load_generation_config(model: "SIADNetwork", folder: str | Path) -> GenerationConfig | None:
    """Read a model folder's `generation_config.json` (`read_generation_config`) into
    `model.generation_config`, so that every answer of the model follows it. Returns the loaded
    `GenerationConfig`, or None when the folder has no such file (the settings built from the SIADConfig
    stay). A file that transformers refuses, one past the bounds, or one whose max_new_tokens is not below
    the LM's context, is a ValueError naming it."""
    path = Path(folder) / GENERATION_NAME
    loaded = read_generation_config(folder)
    if loaded is None:
        return None
    limit = loaded.max_new_tokens
    context = getattr(model.llm.config, "max_position_embeddings", None)
    if context is not None and limit >= int(context):
        raise ValueError(f"{path}: max_new_tokens={limit} leaves no room for a prompt in the LM's context of "
                         f"{context} positions")
    model.generation_config = loaded
    return loaded

