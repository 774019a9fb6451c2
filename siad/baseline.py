"""Detectors without training, that the trained model must beat, run by the same evaluation code.

- `ZeroShotBaseline` (`zero-shot:`): ImageBind with the prompt ensemble (WinCLIP-style). For every stage
  k the patch tokens of the frozen vision trunk go through the vision head's own LayerNorm and Linear
  (ImageBind's `modality_heads["vision"]` without its CLS selection: the projection into the joint
  space, applied to every patch token, as WinCLIP / April-GAN do with CLIP), and are compared with the
  frozen ensemble text features e_normal / e_abnormal of the class (`PromptEnsemble`, appendix D):
  softmax(100 * cos) -> stage maps, mean over stages, bilinear upsampling; all by `AnomalyMapHead`.
- `BackboneBaseline` on any vision backbone (`siad.encoders`), from its stage features alone:
  `self-reference:` the zero-shot self-reference maps (`siad.reference_maps.self_reference_maps`, the
  image compared with its own patches outside each patch's neighbourhood), and `patchcore:` the
  nearest-neighbour distance of every patch to a bank of k normal references of the class (PatchCore:
  3 x 3-aggregated features, greedy coreset, `siad.references`); each stage's map scaled as SIAD's are,
  mean over stages. `patchcore:` needs references (`evaluate --shots K`).

Nothing is trained and no LLM runs: a report of a baseline has pass 1 only. Every baseline's
`detect(images, class_names, ...)` returns `DetectionResult`s like `SIADModel.detect`, so evaluation,
calibration and prediction treat all detectors alike.

Model specs (`load_detector(spec)`, the `--model` option of the command lines):

- a SIAD model folder or Hub id: `SIADModel.from_pretrained`;
- `zero-shot:<folder or Hub id>`: the zero-shot baseline with the ImageBind trunks stored in that SIAD
  model (its trained modules and its LLM are not loaded); `zero-shot:<path>.pth`: with the official
  `imagebind_huge.pth` (ImageBind-Huge); `zero-shot:tiny`: on the tiny random preset (seeded), for tests;
- `self-reference:<source>` and `patchcore:<source>`, source a SIAD model folder or Hub id (its vision
  backbone, read alone from its safetensors), or a backbone name (`efficientnet_lite0`, ... with its
  pretrained weights, the stages and input of `SIADConfig.mini()`), or `tiny` (tests).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
from accelerate import init_empty_weights

from siad.config import VISION_CONFIGS, MapConfig, SIADConfig
from siad.config_format import renamed_weight_keys
from siad.detection import (PATCHCORE_PREFIX, SELF_REFERENCE_PREFIX, ZERO_SHOT,  # noqa: F401 (re-exported)
                            ZERO_SHOT_PREFIX, DetectionResult, Detector, batch_results, detect_arguments,
                            detect_in_batches)
from siad.encoders import VisionBackbone, build_vision_backbone
from siad.encoders.imagebind import ImageBindVision, load_official_checkpoint
from siad.encoders.text import ImageBindTextEncoder, ImageBindTokenizer
from siad.image import ImageInput, encoder_inputs, normalize
from siad.jsonfile import short_repr
from siad.model import SIADModel
from siad.model_folder import CONFIG_NAME, WEIGHTS_NAME, read_folder_config, resolve_model_folder
from siad.modules import AnomalyMapHead, PromptEnsemble
from siad.reference_bank import ReferenceBank
from siad.reference_maps import reference_distances, reference_maps, self_reference_distances, self_reference_maps
from siad.references import banks_for_images, build_reference_bank, model_fingerprint
from siad.weights import check_loaded_finite, load_safetensors, safetensors_shapes

ZERO_SHOT_LOGIT_SCALE = 100.0  # CLIP's: softmax(100 * cos)
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    """"float32" / "bfloat16" / "float16" -> the torch dtype (ValueError otherwise)."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


class _MapDetector(nn.Module):
    """What the baselines share: the `siad.detection.Detector` protocol with `detect` on the detect loop
    of every detector (`siad.detection.detect_in_batches`), maps and scores as `SIADModel.detect` gives
    them, no answers. A subclass implements `anomaly_maps(pixels, class_names, banks)` -> B x S x S maps;
    one that takes references overrides `takes_references`, `build_references` and `reference_banks`."""

    config: SIADConfig
    name: str
    method: str  # what the messages call the baseline: "zero-shot", "self-reference", "patchcore"

    @property
    def can_answer(self) -> bool:
        """No LLM runs: no answers and no self-improvement pass."""
        return False

    @property
    def takes_references(self) -> bool:
        return False

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(p for p in self.parameters() if p.is_floating_point()).dtype

    def anomaly_maps(self, pixels: torch.Tensor, class_names: Sequence[str],
                     banks: Sequence[ReferenceBank | None]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_references(self, images: Sequence[ImageInput], class_name: str, *, seed: int = 0,
                         batch_size: int = 8) -> ReferenceBank:
        """A detector that takes no references: a ValueError saying so."""
        raise self._no_references()

    def reference_banks(self, references: Any, class_names: Sequence[str]) -> list[ReferenceBank | None]:
        """One bank per image; a detector that takes no references: None only."""
        if references is None:
            return [None] * len(class_names)
        raise self._no_references()

    def _no_references(self) -> ValueError:
        return ValueError(f"the {self.method} baseline ({self.name}) takes no references "
                          "(a SIAD model or patchcore:... does)")

    def prepare_images(self, images: Sequence[Any]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        resized, sizes = encoder_inputs(images, self.config)
        vision = self.config.vision
        return normalize(resized, vision.image_mean, vision.image_std).to(device=self.device, dtype=self.dtype), sizes

    @torch.no_grad()
    def detect(self, images: ImageInput | Sequence[ImageInput], class_names: str | Sequence[str],
               descriptions: str | Sequence[str] | None = None, chat: bool = False, self_improve: bool = False,
               batch_size: int = 8, progress: bool = False, score_smoothing_sigma: float | None = None,
               references: Any = None) -> list[DetectionResult]:
        """Like `SIADModel.detect`: one `DetectionResult` per image; answers are None and pass 2 is
        pass 1 (no LLM). `descriptions`, `chat` and `self_improve` are accepted and ignored."""
        items, names, _ = detect_arguments(images, class_names, descriptions, batch_size=batch_size,
                                           score_smoothing_sigma=score_smoothing_sigma)
        banks = self.reference_banks(references, names)
        return detect_in_batches(len(items), batch_size, lambda chunk: self._detect_batch(
            items[chunk], names[chunk], banks[chunk], score_smoothing_sigma), progress=progress)

    def _detect_batch(self, images: list, names: list[str], banks: Sequence[ReferenceBank | None],
                      sigma: float | None = None) -> list[DetectionResult]:
        config = self.config
        pixels, sizes = self.prepare_images(images)
        maps = AnomalyMapHead.smooth(self.anomaly_maps(pixels, names, banks),
                                     config.map.score_smoothing_sigma if sigma is None else sigma)
        modes = [ZERO_SHOT if bank is None else bank.mode for bank in banks]
        return batch_results(config, sizes, names, modes, maps, AnomalyMapHead.score(maps))


class ZeroShotBaseline(_MapDetector):
    """ImageBind + the prompt ensemble, no training (see the module docstring).

    vision, text: ImageBind's vision trunk and text trunk with their weights; config: the SIADConfig that
    describes them (its image size, normalisation, resize mode and stages are used; its threshold and
    smoothing sigma apply to the scores, as for SIADModel); name: what the reports call it.
    """

    method = "zero-shot"

    def __init__(self, vision: ImageBindVision, text: ImageBindTextEncoder, config: SIADConfig,
                 name: str = "zero-shot") -> None:
        super().__init__()
        self.config = config
        self.name = name
        self.vision_encoder = vision.eval().requires_grad_(False)
        self.text_encoder = text.eval().requires_grad_(False)
        self.text_tokenizer = ImageBindTokenizer(config.text.context_length)
        self.prompts = PromptEnsemble()  # the frozen ensemble only: nothing learnable
        self.map_head = AnomalyMapHead(config.vision.image_size, ZERO_SHOT_LOGIT_SCALE)
        self.timer = None
        head = vision.modality_heads["vision"]
        norms = [m for m in head if isinstance(m, nn.LayerNorm)]
        linears = [m for m in head if isinstance(m, nn.Linear)]
        if len(norms) != 1 or len(linears) != 1:
            raise ValueError("the ImageBind vision head must hold one LayerNorm and one Linear")
        self._head_norm, self._head_proj = norms[0], linears[0]

    @classmethod
    def from_spec(cls, spec: str, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> "ZeroShotBaseline":
        """`tiny`, a path to `imagebind_huge.pth`, or a SIAD model folder / Hub id (see the module doc)."""
        source = spec.strip()
        if not source:
            raise ValueError(f"'{ZERO_SHOT_PREFIX}' needs an encoder: {ZERO_SHOT_PREFIX}tiny, "
                             f"{ZERO_SHOT_PREFIX}<SIAD model folder or Hub id> or {ZERO_SHOT_PREFIX}<imagebind_huge.pth>")
        if source == "tiny":
            config = SIADConfig.tiny()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                vision, text = _imagebind_towers(config)
        elif source.endswith((".pth", ".pt")):
            config = SIADConfig.siad_llm(encoder_checkpoint=source)
            if not Path(source).is_file():
                raise FileNotFoundError(f"ImageBind checkpoint not found: {source}")
            vision, text = _imagebind_towers(config, empty=True)
            load_official_checkpoint([vision, text], source, dtype=dtype, device=device)
        else:
            config, modules = _encoders_from_model_folder(source, dtype, device, text=True)
            vision, text = modules
        if config.vision.backbone != "imagebind":
            raise ValueError(f"{ZERO_SHOT_PREFIX}{source}: the zero-shot baseline needs ImageBind's aligned vision and "
                             f"text trunks, and this model's backbone is {config.vision.backbone!r} (try "
                             f"{SELF_REFERENCE_PREFIX}{source})")
        baseline = cls(vision, text, _baseline_config(config), name=f"{ZERO_SHOT_PREFIX}{source}")
        return baseline.to(device=device, dtype=dtype)

    def project_tokens(self, stage_tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        """K x (B x N x Dv) patch tokens -> K x (B x N x D) in the joint space (LayerNorm + Linear
        of the vision head, applied to every token), L2-normalised."""
        return [torch.nn.functional.normalize(self._head_proj(self._head_norm(t)), dim=-1) for t in stage_tokens]

    def text_features(self, class_names: Sequence[str], num_stages: int) -> torch.Tensor:
        """B x K x 2 x D: each image's class ensemble (e_normal, e_abnormal), the same for every stage."""
        unique = list(dict.fromkeys(class_names))
        table = {c: self.prompts.features(self.text_encoder, self.text_tokenizer, c) for c in unique}
        rows = torch.stack([table[c] for c in class_names])  # B x 2 x D
        return rows[:, None].expand(-1, num_stages, -1, -1)

    @torch.no_grad()
    def anomaly_maps(self, pixels: torch.Tensor, class_names: Sequence[str],
                     banks: Sequence[ReferenceBank | None] = ()) -> torch.Tensor:
        """B x 3 x S x S normalised pixels -> B x S x S maps (before smoothing)."""
        vision = self.vision_encoder(pixels)
        features = self.project_tokens(vision.stage_tokens)
        text = self.text_features(class_names, len(features))
        return self.map_head.combine(self.map_head(features, text, vision.grids))


class BackboneBaseline(_MapDetector):
    """A vision backbone alone (see the module docstring): method "self-reference" (zero-shot) or
    "patchcore" (k-shot: the nearest-neighbour distance to a bank of normal references).

    config: the SIADConfig that describes the backbone (vision part) and the maps (map part: the
    self-reference radius, the coreset bound; its threshold and smoothing apply to the scores)."""

    METHODS = ("self-reference", "patchcore")

    def __init__(self, vision: VisionBackbone, config: SIADConfig, method: str, name: str | None = None) -> None:
        super().__init__()
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {method!r}")
        self.config = config
        self.method = method
        self.name = name or method
        self.vision_encoder = vision.eval().requires_grad_(False)
        self.timer = None

    @classmethod
    def from_spec(cls, method: str, spec: str, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> "BackboneBaseline":
        """`tiny`, a backbone name (with its pretrained weights) or a SIAD model folder / Hub id."""
        prefix = f"{method}:"
        source = spec.strip()
        if not source:
            raise ValueError(f"'{prefix}' needs a backbone: {prefix}<SIAD model folder or Hub id>, "
                             f"{prefix}<backbone name: one of {sorted(VISION_CONFIGS)}> or {prefix}tiny")
        if source == "tiny":
            config = SIADConfig.tiny()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                vision = build_vision_backbone(config)
        elif source in VISION_CONFIGS and not Path(source).exists():
            config = SIADConfig.mini(vision={"backbone": source, "stages": SIADConfig.mini().vision.stages})
            vision = build_vision_backbone(config)
        else:
            config, modules = _encoders_from_model_folder(source, dtype, device, text=False)
            vision = modules[0]
        baseline = cls(vision, _baseline_config(config), method, name=f"{prefix}{source}")
        return baseline.to(device=device, dtype=dtype)

    def encode_images(self, pixels: torch.Tensor) -> Any:
        return self.vision_encoder(pixels)

    @property
    def takes_references(self) -> bool:
        """patchcore: True (it compares images with references); self-reference: False."""
        return self.method == "patchcore"

    def build_references(self, images: Sequence[ImageInput], class_name: str, *, seed: int = 0,
                         batch_size: int = 8) -> ReferenceBank:
        """patchcore: the bank of k normal images of one class (the backbone's stage features: the bank
        `SIADModel.build_references` makes with "trunk" features); self-reference: a ValueError."""
        if not self.takes_references:
            return super().build_references(images, class_name, seed=seed, batch_size=batch_size)
        return build_reference_bank(self, images, class_name, features="trunk",
                                    max_bank_patches=self.config.map.max_bank_patches, seed=seed,
                                    batch_size=batch_size)

    def reference_banks(self, references: Any, class_names: Sequence[str]) -> list[ReferenceBank | None]:
        """patchcore: one bank per image, from `references` as `SIADModel.detect` takes them
        (`siad.references.banks_for_images`); self-reference: None only."""
        if not self.takes_references:
            return super().reference_banks(references, class_names)
        return banks_for_images(references, class_names, fingerprint=lambda: model_fingerprint(self, "trunk"),
                                device=self.device, build=self.build_references)

    @torch.no_grad()
    def anomaly_maps(self, pixels: torch.Tensor, class_names: Sequence[str],
                     banks: Sequence[ReferenceBank | None]) -> torch.Tensor:
        """B x 3 x S x S normalised pixels -> B x S x S maps (before smoothing): the mean over stages of
        the self-reference maps, or of the reference maps of each image's bank."""
        vision = self.vision_encoder(pixels)
        size = self.config.vision.image_size
        if self.method == "self-reference":
            distances = self_reference_distances(vision.stage_tokens, vision.grids, self.config.map.self_reference_radius)
            return AnomalyMapHead.combine(self_reference_maps(distances, size))
        if any(bank is None for bank in banks):
            raise ValueError(f"{self.name} compares images with normal references of their class: give references "
                             "(evaluate --shots K, predict --references)")
        out = torch.empty(pixels.shape[0], size, size, device=pixels.device)
        tokens = vision.stage_tokens
        for bank in {id(b): b for b in banks}.values():
            rows = torch.tensor([i for i, b in enumerate(banks) if b is bank], device=pixels.device)
            distances = reference_distances([t[rows] for t in tokens], vision.grids, bank)
            out[rows] = AnomalyMapHead.combine(reference_maps(distances, bank.normal_scale, size)).to(out.dtype)
        return out


def _baseline_config(config: SIADConfig) -> SIADConfig:
    """The encoder's config with the verdict settings reset: a trained model's threshold and
    smoothing do not belong to the baseline."""
    return config.replace(map={"threshold": MapConfig.threshold, "score_smoothing_sigma": MapConfig.score_smoothing_sigma})


def _imagebind_towers(config: SIADConfig, empty: bool = False) -> tuple[ImageBindVision, ImageBindTextEncoder]:
    with init_empty_weights(include_buffers=False) if empty else nullcontext():
        vision = build_vision_backbone(config, pretrained=False)
        text = ImageBindTextEncoder(config.text, config.embed_dim)
    assert isinstance(vision, ImageBindVision)
    return vision, text


def _encoders_from_model_folder(model_id: str, dtype: torch.dtype, device: torch.device | str,
                                text: bool) -> tuple[SIADConfig, list[nn.Module]]:
    """The vision backbone (and, with text=True, the text trunk) stored in a SIAD model folder (or Hub
    id), read alone: only their tensors of model.safetensors (or the official ImageBind checkpoint the
    config names)."""
    folder = resolve_model_folder(model_id)
    config, version = read_folder_config(folder / CONFIG_NAME)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} is not a complete SIAD model folder: {WEIGHTS_NAME} is missing")
    with init_empty_weights(include_buffers=False):
        modules: dict[str, nn.Module] = {"vision_encoder": build_vision_backbone(config, pretrained=False)}
        if text:
            modules["text_encoder"] = ImageBindTextEncoder(config.text, config.embed_dim)
    names = renamed_weight_keys(safetensors_shapes(weights), version)  # stored key -> current key
    stored = {new: old for old, new in names.items() if new.split(".")[0] in modules}
    if not stored:
        if not config.encoder_checkpoint:
            raise ValueError(f"{weights} holds no encoder weights and config.encoder_checkpoint is not set")
        load_official_checkpoint(list(modules.values()), config.encoder_checkpoint, dtype=dtype, device=device)
        for prefix, module in modules.items():
            check_loaded_finite(module, f"{config.encoder_checkpoint} ({prefix})")
        return config, list(modules.values())
    expected = {f"{prefix}.{k}": tuple(v.shape) for prefix, module in modules.items()
                for k, v in module.state_dict().items()}
    if set(stored) != set(expected):
        missing, unknown = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
        raise ValueError(f"{weights}: the stored encoders do not match their config (missing {missing[:5]}, "
                         f"unknown {unknown[:5]})")
    tensors = load_safetensors(weights, expected={stored[k]: v for k, v in expected.items()}, keys=set(stored.values()),
                               dtype=dtype, device=device)
    for prefix, module in modules.items():
        state = {k[len(prefix) + 1:]: tensors[stored[k]] for k in expected if k.startswith(prefix + ".")}
        module.load_state_dict(state, strict=True, assign=True)
        module.to(device)
        check_loaded_finite(module, f"{weights} ({prefix})")
    return config, list(modules.values())


class ModelLoadError(ValueError):
    """A model that cannot be built or loaded for a reason other than a missing or refused file (torch,
    transformers or the allocator failed): what the commands report as an error (exit status 2)."""


def load_detector(spec: str | Path, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> Any:
    """A detector from a model spec: `zero-shot:...`, `self-reference:...`, `patchcore:...` (see the
    module docstring) or a SIAD model folder / Hub id (`SIADModel.from_pretrained`), in eval mode.
    Missing or refused files raise FileNotFoundError, OSError or ValueError as the loaders do; any other
    failure to build the model is a `ModelLoadError` (a ValueError) naming the spec."""
    try:
        return _load_detector(str(spec), dtype, device)
    except (FileNotFoundError, ValueError, OSError):
        raise
    except Exception as error:  # torch, transformers, an allocator: the model cannot be built here
        raise ModelLoadError(f"cannot load the model '{spec}': {type(error).__name__}: {short_repr(str(error))}") \
            from error


def _load_detector(text: str, dtype: torch.dtype, device: torch.device | str) -> Any:
    if text.startswith(ZERO_SHOT_PREFIX):
        return ZeroShotBaseline.from_spec(text[len(ZERO_SHOT_PREFIX):], dtype=dtype, device=device).eval()
    for prefix in (SELF_REFERENCE_PREFIX, PATCHCORE_PREFIX):
        if text.startswith(prefix):
            return BackboneBaseline.from_spec(prefix[:-1], text[len(prefix):], dtype=dtype, device=device).eval()
    return SIADModel.from_pretrained(text, dtype=dtype, device=device).eval()


def detector_name(detector: Any, spec: str | Path) -> str:
    """What the reports call a detector: the spec it was loaded from."""
    return getattr(detector, "name", None) or str(spec)
