"""The checks of a training run before any model is built: the model's config, the environment, the
training images (every one decoded as training will), the output folder. Imports no torch.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from siad.checkpoints import FINAL_DIR, free_space, is_disk_full, list_checkpoints, remove_partial_folders
from siad.config import SIADConfig
from siad.data.readers import load_dataset
from siad.data.registry import class_folders
from siad.data.sample import Sample
from siad.image import load_rgb
from siad.model_folder import CONFIG_NAME, resolve_model_folder
from siad.training_settings import RunSettings, SettingsError

# ---------------------------------------------------------------------------------------------
# Checks before any model is built


def model_config(settings: RunSettings) -> SIADConfig:
    """The `SIADConfig` of the model to train: the preset or the saved folder's config, with the
    `model:` overrides applied. Reads at most a config.json (a Hub id is downloaded first)."""
    m = settings.model
    folder = model_folder(settings) if m.from_pretrained is not None else None
    try:
        if folder is None:
            config = getattr(SIADConfig, m.preset)(**m.config)
        else:
            config = SIADConfig.load(folder / CONFIG_NAME)
            if m.config:
                config = config.replace(**m.config)
    except (TypeError, ValueError) as error:
        raise SettingsError(f"model: {error}") from error
    size = settings.data.image_size
    if size is not None and size != config.vision.image_size:
        raise SettingsError(f"data.image_size={size} differs from the model's image_size={config.vision.image_size}; "
                            f"leave data.image_size out (null) or set model.vision.image_size too (new models only)")
    if settings.train.llm_quantization is not None and config.llm.name_or_path is None:
        raise SettingsError("train.llm_quantization: this model's LLM is built by SIAD (llm.name_or_path is null); "
                            "only an external LLM can be loaded quantized")
    return config


def model_folder(settings: RunSettings) -> Path:
    """The local folder of `model.from_pretrained` (a Hub id is resolved through the Hub or its cache)."""
    try:
        return resolve_model_folder(settings.model.from_pretrained)
    except (OSError, FileNotFoundError) as error:
        raise SettingsError(f"model.from_pretrained: {error} (the paper's initial model is made by "
                            f"`python -m siad.convert init`, see train/README.md)") from error


def check_environment(settings: RunSettings) -> None:
    """What the hardware or installed packages must provide for these settings."""
    import torch  # deferred: torch (siad.training imports none)

    if settings.train.llm_quantization is not None:
        if not torch.cuda.is_available():
            raise SettingsError(f"train.llm_quantization={settings.train.llm_quantization}: 8/4-bit loading "
                                "(bitsandbytes) needs a CUDA GPU, and none is available")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise SettingsError(f"train.llm_quantization={settings.train.llm_quantization}: install bitsandbytes "
                                "(`pip install bitsandbytes`)")
    if settings.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise SettingsError("train.mixed_precision=fp16 needs a GPU; on the CPU use bf16 or no")


def _class_folders(name: str, root: Path) -> list[str]:
    """Class folders of a dataset root (those holding `train/`), to find classes without images: the
    dataset registry's (`siad.data.registry.class_folders`)."""
    return class_folders(name, root)


def load_training_samples(settings: RunSettings) -> list[Sample]:
    """The normal training images; a missing root, an unknown class or a class without normal images
    raises `SettingsError` with the reader's explanation."""
    d = settings.data
    root = Path(d.root)
    if not root.exists():
        raise SettingsError(f"data.root: the dataset folder {root} does not exist")
    try:
        samples = load_dataset(d.name, root, d.split, cache_dir=d.cache_dir, classes=d.classes)
    except FileNotFoundError as error:
        raise SettingsError(f"data: {error}") from error
    except ValueError as error:
        empty = [c for c in d.classes or [] if c in _class_folders(d.name, root)]
        if empty:
            raise SettingsError(f"data: class(es) {empty} have no normal images in the {d.split} split of {root}; "
                                f"training needs normal images of every class") from error
        raise SettingsError(f"data: {error}") from error
    normal = {s.class_name for s in samples if s.label == 0}
    expected = set(d.classes) if d.classes else set(normal) | set(_class_folders(d.name, root))
    empty = sorted(expected - normal)
    if empty:
        raise SettingsError(f"data: class(es) {empty} have no normal images in the {d.split} split of {root}; "
                            f"training needs normal images of every class (remove the folder or list "
                            f"data.classes)")
    if not normal:
        raise SettingsError(f"data: no normal images in the {d.split} split of {root}")
    return [s for s in samples if s.label == 0]


def check_images(samples: Sequence[Sample], max_side: int, max_pixels: int, progress: bool | None = None) -> None:
    """Decode every image as training will (`siad.image.load_rgb` with the model's bounds): a file that
    cannot be read would otherwise stop the run at the step that first draws it. `SettingsError` lists
    every unreadable image by path. progress: a tqdm bar (None: only on a terminal)."""
    bad = []
    disable = None if progress is None else not progress
    for sample in tqdm(samples, desc="decoding the training images", unit="image", disable=disable):
        try:
            load_rgb(sample.image_path, max_side, max_pixels)
        except Exception as error:  # noqa: BLE001 - whatever the decoder raises, the image is unusable
            text = str(error)
            named = str(sample.image_path) in text
            bad.append(text if named else f"{sample.image_path}: {type(error).__name__}: {text}")
    if bad:
        listing = "\n  ".join(bad)
        raise SettingsError(f"data: {len(bad)} of {len(samples)} training images cannot be used:\n  {listing}")


def check_output(settings: RunSettings, resume: bool, clean: bool = True) -> Path:
    """Create the output folder and prove it writable; refuse to overwrite a former run unless resuming.
    clean: first remove the partial `.tmp-*` folders a failed or killed run left (they may be what
    fills the disk); `--check` leaves them."""
    out = Path(settings.output.dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SettingsError(f"output.dir: {out} is not a writable folder ({error.strerror or error})") from error
    if not resume and (list_checkpoints(out) or (out / FINAL_DIR).exists()):
        raise SettingsError(f"output.dir: {out} already holds a training run; pass --resume to continue it, or "
                            f"choose another output.dir")
    if clean:
        remove_partial_folders(out)
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-", delete=True) as probe:
            probe.write(b"ok")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        if is_disk_full(error):
            raise SettingsError(f"output.dir: the disk holding {out} is full ({free_space(out)} free); free some "
                                f"space, then run again") from error
        raise SettingsError(f"output.dir: {out} is not a writable folder ({error.strerror or error})") from error
    return out
