"""What a saved model folder declares, checked against its files before anything is built
(`siad.hub.load_model_folder` runs these checks; the layout: `siad.model_folder`).

- `check_declared_sizes`: the sizes config.json declares against the shapes in model.safetensors' header.
- `check_llm_header`: a bundled LM's config against its weights' header (a probe skeleton, nothing allocated).
- `check_adapter_config`, `check_adapter_header`: the LoRA adapter against the config.
- `check_bundled_llm`: a folder whose config names no external LM carries its own, whole.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Mapping

from accelerate import init_empty_weights
from transformers import AutoModelForCausalLM

from siad.config import SIADConfig, check_llm_sizes
from siad.jsonfile import read_json, short_repr
from siad.llm import NO_REMOTE_CODE, llm_config_sizes
from siad.model_folder import CONFIG_NAME, LLM_DIR, WEIGHTS_NAME
from siad.weights import safetensors_shapes


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


def check_adapter_config(path: Path, config: SIADConfig) -> None:
    """The adapter's adapter_config.json (a bounded JSON object) has the config's LoRA rank, alpha and targets."""
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


def check_adapter_header(adapter_file: Path, config: SIADConfig) -> None:
    """Every LoRA matrix of the adapter file has the config's rank (from the header, before the LM is
    wrapped): lora_A is r x in, lora_B out x r."""
    rank = config.llm.lora_r
    for name, shape in safetensors_shapes(adapter_file).items():
        dim = 0 if "lora_A" in name else -1 if "lora_B" in name else None
        if dim is not None and (len(shape) != 2 or shape[dim] != rank):
            raise ValueError(f"{adapter_file}: tensor {name} has shape {list(shape)}, not of the rank "
                             f"llm.lora_r={rank} of the config")


def check_bundled_llm(folder: Path, llm_dir: Path) -> None:
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
