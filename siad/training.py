"""The reusable parts of `train/train.py`: the run settings (YAML + `key=value` overrides), the checks
that run before any model is built, the data order, checkpoints, RNG state and the CSV log.

Nothing here builds a model or touches the network; `import siad.training` imports neither torch
nor transformers (they are imported inside the functions that need them).

Settings (see `train/README.md` for the full schema): four sections, `model`, `data`, `train`,
`output`. `load_settings(path, overrides, base_dir)` reads a YAML file, applies dotted overrides
(`train.lr=5e-4`, `model.map.use_sem=false`; values parsed as YAML scalars), refuses unknown keys by
their dotted name and checks every value's type and range. Relative paths are resolved against
`base_dir` (the repository root for `train/train.py`).

Checkpoints: `OUT/checkpoints/step-000002/` holds `trainable.safetensors` (the trainable
parameters), `optimizer.pt` (under DeepSpeed, the engine's own `deepspeed/` checkpoint instead),
`training_state-rank<r>.pt` (scheduler, grad scaler and the RNG states of python, numpy, torch and
CUDA) and `state.json` (step, epoch, position in the epoch, settings), written last. A checkpoint is
written into `OUT/checkpoints/.tmp-step-000002`, every file and folder fsynced, and renamed when
complete, so a folder without the `.tmp-` prefix is whole even after a power cut. A write that fails
removes its partial folder; a full disk is a `TrainingError` saying so (`writing_folder`). `--resume`
takes the newest checkpoint whose files can all be read and names any it skips (`resume_checkpoint`).
A stop signal (SIGTERM: `docker stop`, Kubernetes, Slurm) ends the run after the current optimizer step,
with that step's checkpoint saved (`StopRequest`, `TrainingStopped`), so `--resume` loses nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import math
import os
import random
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from siad.config import SIADConfig
    from siad.data.readers import Sample

SECTIONS: tuple[str, ...] = ("model", "data", "train", "output")
PRESETS: tuple[str, ...] = ("tiny", "mini", "mini_v2", "siad_llm")
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
MIXED_PRECISION: tuple[str, ...] = ("no", "bf16", "fp16")
QUANTIZATION: tuple[str | None, ...] = (None, "8bit", "4bit")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
CHECKPOINT_DIR = "checkpoints"
FINAL_DIR = "final"
STATE_FILE = "state.json"
WEIGHTS_FILE = "trainable.safetensors"
TMP_PREFIX = ".tmp-"
STATE_KEYS: tuple[str, ...] = ("step", "epoch", "offset", "elapsed_s", "world_size", "settings")
LOG_FIELDS: tuple[str, ...] = ("step", "epoch", "loss", "focal", "dice", "lm", "lr", "images_per_s", "elapsed_s")
# train.* keys that may change between a run and its resumption (they do not change the weights)
RESUMABLE_CHANGES: frozenset[str] = frozenset({
    "train.max_steps", "train.epochs", "train.log_every", "train.ckpt_every", "train.keep_last",
    "train.num_workers", "output.dir", "output.push_to_hub", "output.log_with",
})


class SettingsError(ValueError):
    """A run setting is wrong (unknown key, bad value, missing data, unwritable output, ...)."""


class TrainingError(RuntimeError):
    """A run cannot go on (the loss or the weights became non-finite, the disk is full, ...)."""


class TrainingStopped(Exception):
    """The run was asked to stop (SIGTERM) and stopped after saving the checkpoint of its current step;
    `--resume` goes on from there. `signal_number`: the signal that asked."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number


# What `docker stop`, Kubernetes and Slurm send before they kill a process (after a grace period):
# training stops at the end of the optimizer step it is in, saves that step's checkpoint and exits
# with 128 + the signal's number (143), as a process ended by the signal does.
STOP_SIGNALS: tuple[str, ...] = ("SIGTERM",)


class StopRequest:
    """While installed (`install()` ... `restore()`, or `with StopRequest() as stop:`), a stop signal
    (`STOP_SIGNALS`) does not end the process: it only records itself in `signal_number`, which the
    training loop reads after each optimizer step. Installed only in the main thread (Python delivers
    signals there); `restore()` puts the previous handlers back. Holds its state itself (no
    module-level state)."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopRequest":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._record)
        return self

    def restore(self) -> None:
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def _record(self, signal_number: int, frame: Any) -> None:
        self.signal_number = signal_number


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader `worker_init_fn`: the workers ignore stop signals (Slurm signals every process of a
    job), so that the step in progress finishes and its checkpoint is saved; the main process ends them."""
    import signal

    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass
class ModelSettings:
    """`model:` — what to train.

    preset: "tiny", "mini", "mini_v2" or "siad_llm" (a new model from `SIADConfig.tiny()`, `.mini()`, ...);
    from_pretrained: a saved model folder or Hub id to continue from (e.g. the paper's initialisation
    made by `python -m siad.convert init`). Exactly one of the two.
    dtype: the dtype the model is built or loaded in (float32, bfloat16, float16); with a 16-bit
    dtype the trainable parameters are kept in float32 and `train.mixed_precision` must match.
    config: `SIADConfig` changes, written directly under `model:` in the YAML: a part as a mapping of
        its fields to change (`map: {threshold: 0.6}`, overridden as `model.map.threshold=0.6`) or a
        top-level field (`embed_dim: 64`).
    """

    preset: str | None = None
    from_pretrained: str | None = None
    dtype: str = "float32"
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSettings:
    """`data:` — the normal training images.

    name: a `siad.data.DATASET_NAMES` entry; root: the dataset folder; split: "train" (anomalous
    images of the split are dropped); classes: keep only these (default: every class);
    image_size: must equal the model's (default: the model's); seed: data order and pseudo-anomalies;
    cache_dir: for raw KolektorSDD tiles.
    pseudo_anomalies: "cutpaste" (the paper's CutPaste + Poisson), "mixture" (the generic mixture of
    `siad.data.pseudo`, its default weights) or a mapping kind -> weight; foreign_prob: the probability
    that a pseudo-anomaly's source image is of another class; name_swap_prob: the probability that an
    image's class name (and description) is replaced by a generic word or another class's name (see
    `siad.data.dataset.PseudoAnomalyDataset`). The answers' position grid always follows the model's
    PEM groups (`siad.answers.pem_position_edges`).
    """

    name: str | None = None
    root: str | None = None
    split: str = "train"
    classes: list[str] | None = None
    image_size: int | None = None
    seed: int = 0
    cache_dir: str | None = None
    pseudo_anomalies: str | dict[str, float] = "cutpaste"
    foreign_prob: float = 0.0
    name_swap_prob: float = 0.0


@dataclass
class TrainSettings:
    """`train:` — the optimisation (see train/README.md).

    lm_teacher_maps, lm_teacher_maps_steps: the LLM's curriculum: the probability that an image's map
    tokens come from a teacher map of its ground-truth mask (`SIADModel.forward(teacher_maps=...)`),
    lowered linearly to 0 over the first lm_teacher_maps_steps steps (0: constant).
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float | None = None
    mixed_precision: str = "no"
    grad_checkpointing: bool = False
    llm_quantization: str | None = None
    num_workers: int = 0
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    keep_last: int | None = 2
    lm_teacher_maps: float = 0.0
    lm_teacher_maps_steps: int = 0


@dataclass
class OutputSettings:
    """`output:` — where the run goes. dir: the run folder; push_to_hub: a Hub repo id or null;
    log_with: an Accelerate tracker ("tensorboard") or null (the CSV log is always written)."""

    dir: str | None = None
    push_to_hub: str | None = None
    log_with: str | None = "tensorboard"


@dataclass
class RunSettings:
    """All settings of a training run."""

    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    output: OutputSettings = field(default_factory=OutputSettings)

    def to_dict(self) -> dict[str, Any]:
        """The settings as the nested dict of the YAML schema (model overrides inlined)."""
        model = {k: v for k, v in dataclasses.asdict(self.model).items() if k != "config"}
        model.update(self.model.config)
        return {"model": model, "data": dataclasses.asdict(self.data), "train": dataclasses.asdict(self.train),
                "output": dataclasses.asdict(self.output)}

    def flat(self) -> dict[str, Any]:
        """`{"train.lr": 0.001, "model.map.use_sem": false, ...}`: the settings with dotted keys."""
        return flatten_settings(self.to_dict())


def flatten_settings(nested: Mapping[str, Any]) -> dict[str, Any]:
    """The nested settings dict -> dotted keys; a config part under `model:` (`map: {use_sem: false}`)
    gives one key per field (`model.map.use_sem`)."""
    flat: dict[str, Any] = {}
    for section, values in nested.items():
        for key, value in values.items():
            if section == "model" and key in _siad_config_parts() and isinstance(value, Mapping):
                flat.update({f"model.{key}.{field}": v for field, v in value.items()})
            else:
                flat[f"{section}.{key}"] = value
    return flat


_SECTION_TYPES = {"model": ModelSettings, "data": DataSettings, "train": TrainSettings, "output": OutputSettings}


def _siad_config_fields() -> set[str]:
    from siad.config import SIADConfig

    return {f.name for f in dataclasses.fields(SIADConfig) if f.init}


def _siad_config_parts() -> set[str]:
    return {"vision", "text", "llm", "map"}


def _set_key(raw: dict[str, dict[str, Any]], dotted: str, value: Any, where: str) -> None:
    """Set `section.key` in the raw nested settings, refusing unknown keys by name."""
    parts = dotted.split(".")
    if len(parts) == 3 and parts[0] == "model" and parts[1] in _siad_config_parts() and parts[2]:
        part = raw.setdefault("model", {}).setdefault(parts[1], {})
        if not isinstance(part, dict):
            raise SettingsError(f"{where}: model.{parts[1]} must be a mapping of its fields to set '{dotted}'")
        part[parts[2]] = value  # the field itself is checked when the config is built
        return
    if len(parts) != 2 or not all(parts):
        raise SettingsError(f"{where}: '{dotted}' is not a setting; keys are 'section.name' with section one of "
                            f"{list(SECTIONS)} (e.g. train.lr), or model.<part>.<field> with part one of "
                            f"{sorted(_siad_config_parts())} (e.g. model.map.threshold)")
    section, key = parts
    if section not in SECTIONS:
        raise SettingsError(f"{where}: unknown section '{section}' in '{dotted}'; expected one of {list(SECTIONS)}")
    known = {f.name for f in dataclasses.fields(_SECTION_TYPES[section])} - {"config"}
    if section == "model":
        known |= _siad_config_fields()
    if key not in known:
        hint = " (or a SIADConfig field)" if section == "model" else ""
        raise SettingsError(f"{where}: unknown key '{dotted}'; {section} keys are {sorted(known - _extra(section))}{hint}")
    raw.setdefault(section, {})[key] = value


def _extra(section: str) -> set[str]:
    return _siad_config_fields() if section == "model" else set()


def parse_override(text: str) -> tuple[str, Any]:
    """`"train.lr=5e-4"` -> ("train.lr", 0.0005): the value is parsed as a YAML scalar or flow list."""
    import yaml

    if "=" not in text:
        raise SettingsError(f"override '{text}' is not of the form section.key=value")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise SettingsError(f"override '{text}': the value is not valid YAML ({error})") from error
    return key.strip(), parsed


def load_settings(path: str | Path | None, overrides: Sequence[str] = (), base_dir: str | Path | None = None) -> RunSettings:
    """Read a YAML settings file (or none), apply `key=value` overrides, check and resolve the result."""
    import yaml

    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SettingsError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise SettingsError(f"{path} is not valid YAML: {error}") from error
        loaded = {} if loaded is None else loaded
        if not isinstance(loaded, dict):
            raise SettingsError(f"{path}: the top level must be a mapping of sections {list(SECTIONS)}")
        for section, values in loaded.items():
            if section not in SECTIONS:
                raise SettingsError(f"{path}: unknown section '{section}'; expected {list(SECTIONS)}")
            if values is None:
                continue
            if not isinstance(values, dict):
                raise SettingsError(f"{path}: section '{section}' must be a mapping")
            for key, value in values.items():
                _set_key(raw, f"{section}.{key}", value, str(path))
    for text in overrides:
        key, value = parse_override(text)
        _set_key(raw, key, value, "override")
    settings = _build(raw)
    validate_settings(settings)
    resolve_paths(settings, Path(base_dir) if base_dir is not None else Path.cwd())
    return settings


def _build(raw: Mapping[str, Mapping[str, Any]]) -> RunSettings:
    model_raw = dict(raw.get("model", {}))
    own = {f.name for f in dataclasses.fields(ModelSettings)} - {"config"}
    model = ModelSettings(**{k: v for k, v in model_raw.items() if k in own},
                          config={k: v for k, v in model_raw.items() if k not in own})
    return RunSettings(model=model, data=DataSettings(**raw.get("data", {})), train=TrainSettings(**raw.get("train", {})),
                       output=OutputSettings(**raw.get("output", {})))


# --- value checks ---------------------------------------------------------------------------


def _fail(key: str, value: Any, message: str) -> None:
    raise SettingsError(f"{key}={value!r}: {message}")


def _int(key: str, value: Any, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        _fail(key, value, f"must be an integer >= {minimum}{' or null' if optional else ''}")


def _float(obj: Any, name: str, key: str, minimum: float | None = None, optional: bool = False,
           positive: bool = False) -> None:
    """Check (and coerce: YAML 1.1 reads `1e-3` as a string) a float setting in place."""
    value = getattr(obj, name)
    if value is None and optional:
        return
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            _fail(key, value, "must be a number")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(key, value, "must be a finite number")
    if minimum is not None and value < minimum:
        _fail(key, value, f"must be >= {minimum}")
    if positive and value <= 0:
        _fail(key, value, "must be positive")
    setattr(obj, name, float(value))


def _choice(key: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        _fail(key, value, f"must be one of {list(allowed)}")


def _string(key: str, value: Any, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        _fail(key, value, "must be a non-empty string")


def validate_settings(settings: RunSettings) -> None:
    """Check every value's type and range (no files are looked at); raise `SettingsError` naming the key."""
    from siad.config import SIADConfig

    m, d, t, o = settings.model, settings.data, settings.train, settings.output
    if (m.preset is None) == (m.from_pretrained is None):
        raise SettingsError("model: give exactly one of model.preset (a new model: "
                            f"{list(PRESETS)}) and model.from_pretrained (a saved model folder or Hub id)")
    if m.preset is not None:
        _choice("model.preset", m.preset, PRESETS)
    _string("model.from_pretrained", m.from_pretrained)
    _choice("model.dtype", m.dtype, DTYPES)
    if m.preset is not None:  # build the config now: a bad field fails here, before anything is loaded
        try:
            getattr(SIADConfig, m.preset)(**m.config)
        except (TypeError, ValueError) as error:
            raise SettingsError(f"model: {error}") from error
    _string("data.name", d.name, optional=False)
    from siad.data import DATASET_NAMES, SPLITS

    _choice("data.name", d.name.lower(), DATASET_NAMES)
    _string("data.root", d.root, optional=False)
    _choice("data.split", d.split, SPLITS)
    if d.classes is not None:
        if isinstance(d.classes, str):
            d.classes = [d.classes]
        if not isinstance(d.classes, list) or not d.classes or not all(isinstance(c, str) and c for c in d.classes):
            _fail("data.classes", d.classes, "must be a non-empty list of class names or null")
    _int("data.image_size", d.image_size, 1, optional=True)
    _int("data.seed", d.seed, 0)
    _string("data.cache_dir", d.cache_dir)
    _check_pseudo_anomalies(d.pseudo_anomalies)
    for name in ("foreign_prob", "name_swap_prob"):
        _float(d, name, f"data.{name}", minimum=0.0)
        if getattr(d, name) > 1.0:
            _fail(f"data.{name}", getattr(d, name), "must be a probability in [0, 1]")
    _int("train.epochs", t.epochs, 1)
    _int("train.max_steps", t.max_steps, 1, optional=True)
    _int("train.batch_size", t.batch_size, 1)
    _int("train.grad_accum", t.grad_accum, 1)
    _float(t, "lr", "train.lr", positive=True)
    _float(t, "weight_decay", "train.weight_decay", minimum=0.0)
    _float(t, "eps", "train.eps", positive=True)
    if not isinstance(t.betas, (list, tuple)) or len(t.betas) != 2:
        _fail("train.betas", t.betas, "must be a list of two numbers in [0, 1)")
    betas = []
    for b in t.betas:
        b = float(b) if isinstance(b, str) and b.strip() else b
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 <= b < 1.0:
            _fail("train.betas", t.betas, "must be a list of two numbers in [0, 1)")
        betas.append(float(b))
    t.betas = betas
    _choice("train.lr_schedule", t.lr_schedule, LR_SCHEDULES)
    _int("train.warmup_steps", t.warmup_steps, 0)
    _float(t, "max_grad_norm", "train.max_grad_norm", optional=True, positive=True)
    _choice("train.mixed_precision", t.mixed_precision, MIXED_PRECISION)
    if not isinstance(t.grad_checkpointing, bool):
        _fail("train.grad_checkpointing", t.grad_checkpointing, "must be true or false")
    _choice("train.llm_quantization", t.llm_quantization, QUANTIZATION)
    _int("train.num_workers", t.num_workers, 0)
    _int("train.seed", t.seed, 0)
    _int("train.log_every", t.log_every, 1)
    _int("train.ckpt_every", t.ckpt_every, 0)
    _int("train.keep_last", t.keep_last, 1, optional=True)
    _float(t, "lm_teacher_maps", "train.lm_teacher_maps", minimum=0.0)
    if t.lm_teacher_maps > 1.0:
        _fail("train.lm_teacher_maps", t.lm_teacher_maps, "must be a probability in [0, 1]")
    _int("train.lm_teacher_maps_steps", t.lm_teacher_maps_steps, 0)
    needed = {"bfloat16": "bf16", "float16": "fp16"}.get(m.dtype)
    if needed is not None and t.mixed_precision != needed:
        _fail("train.mixed_precision", t.mixed_precision,
              f"model.dtype={m.dtype} keeps the frozen weights in 16 bits and the trainable ones in float32, "
              f"which needs mixed_precision={needed} (autocast)")
    if t.llm_quantization is not None and m.from_pretrained is None:
        _fail("train.llm_quantization", t.llm_quantization,
              "quantization applies to an external LLM loaded with model.from_pretrained; a preset builds its LLM")
    _string("output.dir", o.dir, optional=False)
    if o.push_to_hub is not None:
        check_repo_id(o.push_to_hub)
    if isinstance(o.log_with, str) and o.log_with.lower() in ("none", "null", ""):
        o.log_with = None
    _string("output.log_with", o.log_with)


def _check_pseudo_anomalies(value: Any) -> None:
    if value in ("cutpaste", "mixture"):
        return
    if not isinstance(value, dict) or not value:
        _fail("data.pseudo_anomalies", value, "must be 'cutpaste', 'mixture' or a mapping of kinds to weights")
    from siad.data.pseudo import KINDS

    unknown = sorted(set(value) - set(KINDS))
    if unknown:
        _fail("data.pseudo_anomalies", value, f"unknown kind(s) {unknown}; kinds are siad.data.pseudo.KINDS")
    if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in value.values()) \
            or not any(w > 0 for w in value.values()):
        _fail("data.pseudo_anomalies", value, "weights must be numbers >= 0, not all 0")


def pseudo_anomaly_options(settings: "DataSettings") -> dict[str, Any]:
    """The `PseudoAnomalyDataset` keyword arguments of the data settings' pseudo-anomalies."""
    choice = settings.pseudo_anomalies
    if choice == "cutpaste":
        mixture: dict[str, Any] = {}
    elif choice == "mixture":
        from siad.data.pseudo import default_weights

        mixture = {"weights": default_weights()}
    else:
        mixture = {"weights": dict(choice)}
    return {**mixture, "foreign_prob": settings.foreign_prob, "name_swap_prob": settings.name_swap_prob}


def check_repo_id(repo_id: Any) -> str:
    """A Hub repo id `org/name` (or `name`), refused early with a clear message otherwise."""
    if not isinstance(repo_id, str) or not repo_id.strip() or repo_id.count("/") > 1 or repo_id.startswith(("/", ".")) \
            or any(c.isspace() for c in repo_id):
        raise SettingsError(f"output.push_to_hub={repo_id!r}: expected a Hub repo id such as 'org/siad-llm'")
    return repo_id


def _looks_like_path(value: str, base_dir: Path) -> bool:
    return value.startswith((".", "/", "~")) or Path(value).is_absolute() or (base_dir / value).exists() \
        or value.count("/") != 1


def resolve_paths(settings: RunSettings, base_dir: Path) -> None:
    """Make relative paths absolute against `base_dir` (model.from_pretrained only when it is not a Hub id)."""
    def resolve(value: str) -> str:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base_dir / path).resolve())

    settings.data.root = resolve(settings.data.root)
    settings.output.dir = resolve(settings.output.dir)
    if settings.data.cache_dir is not None:
        settings.data.cache_dir = resolve(settings.data.cache_dir)
    source = settings.model.from_pretrained
    if source is not None and _looks_like_path(source, base_dir):
        settings.model.from_pretrained = resolve(source)


# ---------------------------------------------------------------------------------------------
# Checks before any model is built


def model_config(settings: RunSettings) -> "SIADConfig":
    """The `SIADConfig` of the model to train: the preset or the saved folder's config, with the
    `model:` overrides applied. Reads at most a config.json (a Hub id is downloaded first)."""
    from siad.config import SIADConfig

    m = settings.model
    folder = model_folder(settings) if m.from_pretrained is not None else None
    try:
        if folder is None:
            config = getattr(SIADConfig, m.preset)(**m.config)
        else:
            config = SIADConfig.load(folder / "config.json")
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
    from siad.hub import resolve_model_folder

    try:
        return resolve_model_folder(settings.model.from_pretrained)
    except (OSError, FileNotFoundError) as error:
        raise SettingsError(f"model.from_pretrained: {error} (the paper's initial model is made by "
                            f"`python -m siad.convert init`, see train/README.md)") from error


def check_environment(settings: RunSettings) -> None:
    """What the hardware or installed packages must provide for these settings."""
    import importlib.util

    import torch

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
    """Class folders of an MVTec-like root (those holding `train/`), to find classes without images."""
    from siad.data import class_folders

    return class_folders(name, root)


def load_training_samples(settings: RunSettings) -> list["Sample"]:
    """The normal training images; a missing root, an unknown class or a class without normal images
    raises `SettingsError` with the reader's explanation."""
    from siad.data.readers import load_dataset

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


def check_images(samples: Sequence["Sample"], max_side: int, max_pixels: int, progress: bool | None = None) -> None:
    """Decode every image as training will (`siad.image.load_rgb` with the model's bounds): a file that
    cannot be read would otherwise stop the run at the step that first draws it. `SettingsError` lists
    every unreadable image by path. progress: a tqdm bar (None: only on a terminal)."""
    from tqdm.auto import tqdm

    from siad.image import load_rgb

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
            raise SettingsError(f"output.dir: the disk holding {out} is full ({_free_space(out)} free); free some "
                                f"space, then run again") from error
        raise SettingsError(f"output.dir: {out} is not a writable folder ({error.strerror or error})") from error
    return out


# ---------------------------------------------------------------------------------------------
# Data order


def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1) -> list[list[int]]:
    """The micro-batches of process `rank` in epoch `epoch`: a permutation drawn from (seed, epoch),
    cut into global batches of batch_size x world_size, each process taking its slice. The last global
    batch may be smaller; with several processes it is padded from the start of the permutation so
    that every process gets the same count. Depends only on the arguments."""
    import numpy as np

    if num_items <= 0 or batch_size <= 0 or world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError("epoch_batches: bad arguments")
    order = [int(i) for i in np.random.default_rng([seed, epoch]).permutation(num_items)]
    step = batch_size * world_size
    batches = []
    for start in range(0, num_items, step):
        chunk = order[start:start + step]
        share = batch_size
        if len(chunk) < step:
            share = -(-len(chunk) // world_size)
            chunk = chunk + [order[i % num_items] for i in range(share * world_size - len(chunk))]
        batches.append(chunk[rank * share:(rank + 1) * share])
    return batches


def teacher_maps_probability(step: int, start: float, steps: int) -> float:
    """The LLM's teacher-map probability at optimizer step `step`: `start`, lowered linearly to 0
    over `steps` steps (constant when steps is 0)."""
    if steps <= 0:
        return start
    return start * max(0.0, 1.0 - step / steps)


def lr_factor(step: int, total_steps: int, schedule: str, warmup_steps: int) -> float:
    """The learning-rate multiplier after `step` optimizer steps (linear warm-up, then constant or cosine)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# RNG state


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch and CUDA generator states, as tensors and numbers only (so that
    `torch.load(weights_only=True)` reads them back)."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    import numpy as np
    import torch

    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(out: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run folder, oldest first: (step, folder)."""
    folder = Path(out) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if path.name.startswith("step-") and path.name[5:].isdigit() and (path / STATE_FILE).is_file():
            found.append((int(path.name[5:]), path))
    return sorted(found)


def latest_checkpoint(out: str | Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def remove_partial_folders(out: str | Path) -> None:
    """Remove the `.tmp-*` folders (checkpoints, final model) left by a run killed while writing them."""
    for folder in (Path(out), Path(out) / CHECKPOINT_DIR):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.name.startswith(TMP_PREFIX) and path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)


def is_disk_full(error: BaseException) -> bool:
    """Whether an error (or one it was raised from) is a full disk or an exceeded quota. torch.save and
    safetensors wrap the OSError: their messages are read too."""
    return _disk_full_cause(error) is not None


def _disk_full_cause(error: BaseException) -> BaseException | None:
    """The error of the chain that says the disk is full (the OSError rather than torch's wrapper)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return current
        if any(sign in str(current) for sign in ("No space left on device", "os error 28", "Disk quota exceeded")):
            return current
        current = current.__cause__ or current.__context__
    return None


def _nearly_full(path: Path) -> bool:
    try:
        return shutil.disk_usage(path).free < 64 * 2**20
    except OSError:
        return False


def _free_space(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 2**20:.1f} MiB"
    except OSError:
        return "no space"


@contextmanager
def writing_folder(folder: Path, what: str) -> Iterator[None]:
    """Guard the writing of a temporary folder: when anything fails the partial folder is removed
    first (a later --resume must not find it, nor the disk stay full of it); a full disk becomes a
    `TrainingError` that says so plainly, naming the folder."""
    try:
        yield
    except BaseException as error:
        # torch.save given a path (DeepSpeed's writers) reports a failed write only as "unexpected pos"
        cause = _disk_full_cause(error) or (error if "unexpected pos" in str(error) and _nearly_full(folder.parent)
                                            else None)
        shutil.rmtree(folder, ignore_errors=True)
        if cause is not None:
            raise TrainingError(f"the disk is full: writing {what} into {folder} failed ({cause}). The partial "
                                f"folder was removed ({_free_space(folder.parent)} free now); free some space, "
                                f"then continue with --resume") from error
        raise


def fsync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then every folder (deepest first), so that their contents are on
    the disk before the folder is renamed into place."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            _fsync_path(Path(root) / name)
        _fsync_path(Path(root))


def _fsync_path(path: Path) -> None:
    if path.is_dir() and os.name == "nt":  # Windows cannot open a folder to fsync it
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_tmp(out: str | Path, step: int) -> Path:
    """The temporary folder a checkpoint is written into (emptied first)."""
    tmp = Path(out) / CHECKPOINT_DIR / f"{TMP_PREFIX}{checkpoint_name(step)}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_folder(tmp: Path, final: Path) -> Path:
    """Rename a fully written folder into place (replacing an older one of the same name), its files and
    folders fsynced before and the parent folder after the rename."""
    fsync_tree(tmp)
    if final.exists():
        old = final.with_name(f"{TMP_PREFIX}old-{final.name}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_path(final.parent)
    return final


def prune_checkpoints(out: str | Path, keep_last: int | None) -> None:
    """Keep only the newest `keep_last` complete checkpoints (all when None)."""
    if keep_last is None:
        return
    for _, path in list_checkpoints(out)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


def save_trainable(named_parameters: Iterable[tuple[str, "torch.Tensor"]], path: Path) -> None:
    """The trainable parameters as safetensors (exact values: no dtype change). Non-finite weights are
    never written: `TrainingError` names them."""
    from safetensors.torch import save_file

    from siad.hub import non_finite

    state = {name: p.detach().contiguous().cpu() for name, p in named_parameters}
    bad = non_finite(state)
    if bad:
        raise TrainingError(f"{len(bad)} of {len(state)} trainable tensors hold NaN or infinite values "
                            f"({bad[:5]}{' ...' if len(bad) > 5 else ''}); the checkpoint is not written")
    save_file(state, str(path), metadata={"format": "pt"})


def load_trainable(model: "torch.nn.Module", path: Path) -> None:
    """Load `save_trainable`'s file into the trainable parameters; the names must match exactly."""
    import torch
    from safetensors.torch import load_file

    state = load_file(str(path))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unknown = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unknown:
        raise ValueError(f"{path} does not match the model's trainable parameters: missing {missing[:5]}, "
                         f"unknown {unknown[:5]}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name].to(device=p.device, dtype=p.dtype))


def save_torch(obj: Any, path: Path) -> None:
    """`torch.save` through a Python file object, so that a failed write keeps its OSError (a path
    gives only "unexpected pos")."""
    import torch

    with open(path, "wb") as handle:
        torch.save(obj, handle)


def read_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's `state.json`; `ValueError` naming the file when it is not a complete state."""
    path = checkpoint / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} cannot be read: {error}") from error
    missing = [key for key in STATE_KEYS if key not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if missing:
        raise ValueError(f"{path} is not a checkpoint state (missing {missing})")
    return state


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (a missing or unreadable file, named), or None. Reads
    state.json, the weights and the training states in full; the optimizer state's structure only."""
    import torch
    from safetensors.torch import load_file

    try:
        state = read_state(checkpoint)
    except ValueError as error:
        return str(error)
    files = [checkpoint / WEIGHTS_FILE]
    files += [checkpoint / f"training_state-rank{r}.pt" for r in range(int(state["world_size"]))]
    if not (checkpoint / "deepspeed").is_dir():
        files.append(checkpoint / "optimizer.pt")
    for path in files:
        try:
            if path.suffix == ".safetensors":
                load_file(str(path))
            else:
                torch.load(path, map_location="cpu", weights_only=True, mmap=path.name == "optimizer.pt")
        except Exception as error:  # noqa: BLE001 - any failure to read the file makes it unusable
            return f"{path} cannot be read: {type(error).__name__}: {error}"
    return None


def resume_checkpoint(out: str | Path, report: Callable[[str], None] = print) -> Path | None:
    """The newest checkpoint of a run folder whose files can all be read (None: there is none at all).
    Each unreadable one is reported by name and skipped; if none can be read, `SettingsError`."""
    found = list_checkpoints(out)
    problems = []
    for _, checkpoint in reversed(found):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            if problems:
                report(f"resuming from the older checkpoint {checkpoint} instead")
            return checkpoint
        problems.append(problem)
        report(f"warning: skipping the checkpoint {checkpoint}: {problem}")
    if found:
        raise SettingsError(f"--resume: none of the {len(found)} checkpoints in {Path(out) / CHECKPOINT_DIR} can be "
                            f"read ({'; '.join(problems)}); start afresh in another output.dir")
    return None


def write_state(folder: Path, state: Mapping[str, Any]) -> None:
    (folder / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def settings_changes(saved: Mapping[str, Any], current: RunSettings) -> list[str]:
    """Dotted keys whose values differ between a checkpoint's settings and the current ones, except
    those that may change on resumption (`RESUMABLE_CHANGES`)."""
    flat_saved = flatten_settings(saved)
    flat_now = json.loads(json.dumps(current.flat()))
    keys = set(flat_saved) | set(flat_now)
    return sorted(k for k in keys if k not in RESUMABLE_CHANGES and flat_saved.get(k) != flat_now.get(k))


# ---------------------------------------------------------------------------------------------
# CSV log


class CSVLog:
    """`OUT/log.csv`, one row per logged step; on resumption the rows after the checkpoint's step
    (written by the killed run) are dropped, so that the file reads like one uninterrupted run."""

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="", encoding="utf-8") as handle:
                rows = [r for r in csv.DictReader(handle) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        self._handle = self.path.open("w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=list(LOG_FIELDS), extrasaction="ignore")
        self._writer.writeheader()
        for row in rows:
            self._writer.writerow(row)
        self._handle.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        self._writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_log(path: str | Path) -> list[dict[str, float]]:
    """The rows of a `CSVLog` file as numbers."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
