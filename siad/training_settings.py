"""The run settings of `train/train.py` (YAML + `key=value` overrides); see `train/README.md` for the
full schema. Four sections, `model`, `data`, `train`, `output`. `load_settings(path, overrides, base_dir)`
reads a YAML file, applies dotted overrides (`train.lr=5e-4`, `model.map.use_sem=false`; values parsed as
YAML scalars), refuses unknown keys by their dotted name and checks every value's type and range
(`validate_settings`). Relative paths are resolved against `base_dir` (the repository root for
`train/train.py`). Imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from siad.config import SIADConfig
from siad.data.pseudo import KINDS, default_weights
from siad.data.registry import dataset_names
from siad.data.sample import SPLITS

SECTIONS: tuple[str, ...] = ("model", "data", "train", "output")
PRESETS: tuple[str, ...] = ("tiny", "mini", "mini_v2", "siad_llm")
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
MIXED_PRECISION: tuple[str, ...] = ("no", "bf16", "fp16")
QUANTIZATION: tuple[str | None, ...] = (None, "8bit", "4bit")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
# train.* keys that may change between a run and its resumption (they do not change the weights)
RESUMABLE_CHANGES: frozenset[str] = frozenset({
    "train.max_steps", "train.epochs", "train.log_every", "train.ckpt_every", "train.keep_last",
    "train.num_workers", "output.dir", "output.push_to_hub", "output.log_with",
})


class SettingsError(ValueError):
    """A run setting is wrong (unknown key, bad value, missing data, unwritable output, ...)."""



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
    import yaml  # deferred: PyYAML is the optional extra [train]

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
    import yaml  # deferred: PyYAML is the optional extra [train]

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
    _choice("data.name", d.name.lower(), dataset_names())
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
