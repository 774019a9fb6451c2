"""The zero-shot reference: ImageBind with the prompt ensemble and no training (WinCLIP-style).

For every stage k the patch tokens P_k of the frozen vision trunk go through the vision head's own
LayerNorm and Linear (ImageBind's `modality_heads["vision"]` without its CLS selection: the
projection into the joint space, applied to every patch token, as WinCLIP / April-GAN do with
CLIP), and are compared with the frozen ensemble text features e_normal / e_abnormal of the class
(`PromptEnsemble`, appendix D): softmax(100 * cos) -> stage maps, mean over
stages, bilinear upsampling; all by `AnomalyMapHead`, the one place that turns features and text
into maps. Nothing is trained and no LLM runs: a report of this baseline has pass 1 only.

`ZeroShotBaseline.detect(images, class_names, ...)` returns `DetectionResult`s like
`SIADModel.detect`, so evaluation, calibration and prediction treat both alike.

Model specs (`load_detector(spec)`, the `--model` option of the command lines):

- a SIAD model folder or Hub id: `SIADModel.from_pretrained`;
- `zero-shot:<folder or Hub id>`: the baseline with the ImageBind encoder stored in that SIAD model
  (its trained modules and its LLM are not loaded);
- `zero-shot:<path>.pth`: the baseline with the official `imagebind_huge.pth` (ImageBind-Huge);
- `zero-shot:tiny`: the baseline on the tiny random preset (seeded), for tests.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
import torch.nn as nn

from siad.config import SIADConfig
from siad.encoders import ImageBindEncoder, ImageBindTokenizer
from siad.image import ImageInput, encoder_inputs, map_to_original, normalize
from siad.model import DetectionResult, detection_inputs
from siad.modules import AnomalyMapHead, PromptEnsemble

ZERO_SHOT_PREFIX = "zero-shot:"
ZERO_SHOT_LOGIT_SCALE = 100.0  # CLIP's: softmax(100 * cos)
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@runtime_checkable
class Detector(Protocol):
    """What evaluation, calibration and prediction need: a SIADModel or a ZeroShotBaseline."""

    config: SIADConfig

    def detect(self, images: Any, class_names: Any, descriptions: Any = None, chat: bool = True,
               self_improve: bool = True, batch_size: int = 8, progress: bool = False,
               score_smoothing_sigma: float | None = None) -> list[DetectionResult]:
        ...


def has_llm(detector: Any) -> bool:
    """Whether the detector can answer in words (and so run the self-improvement pass)."""
    return not isinstance(detector, ZeroShotBaseline)


def parse_dtype(name: str) -> torch.dtype:
    """"float32" / "bfloat16" / "float16" -> the torch dtype (ValueError otherwise)."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


class ZeroShotBaseline(nn.Module):
    """ImageBind + the prompt ensemble, no training (see the module docstring).

    encoder: an ImageBind encoder with its weights; config: the SIADConfig that describes it (its
    image size, normalisation, resize mode and stage blocks are used; its threshold and smoothing
    sigma apply to the scores, as for SIADModel); name: what the reports call it.
    """

    def __init__(self, encoder: ImageBindEncoder, config: SIADConfig, name: str = "zero-shot") -> None:
        super().__init__()
        self.config = config
        self.name = name
        self.encoder = encoder.eval().requires_grad_(False)
        self.text_tokenizer = ImageBindTokenizer(config.text_context_length)
        self.prompts = PromptEnsemble()  # the frozen ensemble only: nothing learnable
        self.map_head = AnomalyMapHead(config.image_size, ZERO_SHOT_LOGIT_SCALE)
        self.timer = None
        head = encoder.modality_heads["vision"]
        norms = [m for m in head if isinstance(m, nn.LayerNorm)]
        linears = [m for m in head if isinstance(m, nn.Linear)]
        if len(norms) != 1 or len(linears) != 1:
            raise ValueError("the ImageBind vision head must hold one LayerNorm and one Linear")
        self._head_norm, self._head_proj = norms[0], linears[0]

    # ------------------------------------------------------------------ construction
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
                encoder = ImageBindEncoder(config)
        elif source.endswith((".pth", ".pt")):
            config = SIADConfig.siad_llm(encoder_checkpoint=source)
            encoder = _official_encoder(config, Path(source), dtype, device)
        else:
            encoder, config = _encoder_from_model_folder(source, dtype, device)
        baseline = cls(encoder, _baseline_config(config), name=f"{ZERO_SHOT_PREFIX}{source}")
        return baseline.to(device=device, dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self._head_proj.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self._head_proj.weight.dtype

    # ------------------------------------------------------------------ maps
    def project_tokens(self, stage_tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        """K x (B x N x Dv) patch tokens -> K x (B x N x D) in the joint space (LayerNorm + Linear
        of the vision head, applied to every token), L2-normalised."""
        return [torch.nn.functional.normalize(self._head_proj(self._head_norm(t)), dim=-1) for t in stage_tokens]

    def text_features(self, class_names: Sequence[str], num_stages: int) -> torch.Tensor:
        """B x K x 2 x D: each image's class ensemble (e_normal, e_abnormal), the same for every stage."""
        unique = list(dict.fromkeys(class_names))
        table = {c: self.prompts.features(self.encoder, self.text_tokenizer, c) for c in unique}
        rows = torch.stack([table[c] for c in class_names])  # B x 2 x D
        return rows[:, None].expand(-1, num_stages, -1, -1)

    @torch.no_grad()
    def anomaly_maps(self, pixels: torch.Tensor, class_names: Sequence[str]) -> torch.Tensor:
        """B x 3 x S x S normalised pixels -> B x S x S maps (before smoothing)."""
        vision = self.encoder.encode_image(pixels)
        features = self.project_tokens(vision.stage_tokens)
        text = self.text_features(class_names, len(features))
        return self.map_head.combine(self.map_head(features, text))

    # ------------------------------------------------------------------ detection
    @torch.no_grad()
    def detect(self, images: ImageInput | Sequence[ImageInput], class_names: str | Sequence[str],
               descriptions: str | Sequence[str] | None = None, chat: bool = False, self_improve: bool = False,
               batch_size: int = 8, progress: bool = False,
               score_smoothing_sigma: float | None = None) -> list[DetectionResult]:
        """Like `SIADModel.detect`: one `DetectionResult` per image; answers are None and pass 2 is
        pass 1 (no LLM). `descriptions`, `chat` and `self_improve` are accepted and ignored."""
        if score_smoothing_sigma is not None and not score_smoothing_sigma >= 0:
            raise ValueError(f"score_smoothing_sigma must be >= 0, got {score_smoothing_sigma!r}")
        items, names, _ = detection_inputs(images, class_names, descriptions)
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        starts: Any = range(0, len(items), batch_size)
        if progress and len(items) > batch_size:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc="detect", unit="batch")
        results: list[DetectionResult] = []
        for start in starts:
            results.extend(self._detect_batch(items[start:start + batch_size], names[start:start + batch_size],
                                              score_smoothing_sigma))
        return results

    def _detect_batch(self, images: list, names: list[str], sigma: float | None = None) -> list[DetectionResult]:
        config = self.config
        resized, sizes = encoder_inputs(images, config)
        pixels = normalize(resized, config.image_mean, config.image_std).to(device=self.device, dtype=self.dtype)
        maps = self.map_head.smooth(self.anomaly_maps(pixels, names),
                                    config.score_smoothing_sigma if sigma is None else sigma)
        scores = self.map_head.score(maps)
        results = []
        for b, size in enumerate(sizes):
            full = map_to_original(maps[b], size, config.resize_mode, config.max_map_pixels)
            score = float(scores[b])
            results.append(DetectionResult(anomaly_map=full, score=score, answer=None, initial_map=full,
                                           initial_score=score, initial_answer=None,
                                           is_anomalous=score >= config.threshold, class_name=names[b]))
        return results


def _baseline_config(config: SIADConfig) -> SIADConfig:
    """The encoder's config with the verdict settings reset: a trained model's threshold and
    smoothing do not belong to the baseline."""
    defaults = {f.name: f.default for f in dataclasses.fields(SIADConfig)}
    return config.replace(threshold=defaults["threshold"], score_smoothing_sigma=defaults["score_smoothing_sigma"])


def _official_encoder(config: SIADConfig, path: Path, dtype: torch.dtype,
                      device: torch.device | str) -> ImageBindEncoder:
    from accelerate import init_empty_weights

    from siad.encoders import load_official_checkpoint

    if not path.is_file():
        raise FileNotFoundError(f"ImageBind checkpoint not found: {path}")
    with init_empty_weights(include_buffers=False):
        encoder = ImageBindEncoder(config)
    load_official_checkpoint(encoder, path, dtype=dtype, device=device)
    return encoder


def _encoder_from_model_folder(model_id: str, dtype: torch.dtype,
                               device: torch.device | str) -> tuple[ImageBindEncoder, SIADConfig]:
    """The ImageBind encoder stored in a SIAD model folder (or Hub id), read alone: only the
    `encoder.*` tensors of model.safetensors (or the official checkpoint the config names)."""
    from accelerate import init_empty_weights

    from siad.hub import CONFIG_NAME, WEIGHTS_NAME, load_safetensors, resolve_model_folder, safetensors_shapes

    folder = resolve_model_folder(model_id)
    config = SIADConfig.load(folder / CONFIG_NAME)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} is not a complete SIAD model folder: {WEIGHTS_NAME} is missing")
    with init_empty_weights(include_buffers=False):
        encoder = ImageBindEncoder(config)
    stored = {k for k in safetensors_shapes(weights) if k.startswith("encoder.")}
    if not stored:
        if not config.encoder_checkpoint:
            raise ValueError(f"{weights} holds no encoder weights and config.encoder_checkpoint is not set")
        return _official_encoder(config, Path(config.encoder_checkpoint), dtype, device), config
    expected = {f"encoder.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    if stored != set(expected):
        missing, unknown = sorted(set(expected) - stored), sorted(stored - set(expected))
        raise ValueError(f"{weights}: the stored encoder does not match its config (missing {missing[:5]}, "
                         f"unknown {unknown[:5]})")
    state = {k[len("encoder."):]: v for k, v in load_safetensors(weights, expected=expected, keys=stored, dtype=dtype,
                                                                 device=device).items()}
    encoder.load_state_dict(state, strict=True, assign=True)
    return encoder.to(device), config


def load_detector(spec: str | Path, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str = "cpu") -> Any:
    """A detector from a model spec: `zero-shot:...` (see the module docstring) or a SIAD model
    folder / Hub id (`SIADModel.from_pretrained`), in eval mode."""
    text = str(spec)
    if text.startswith(ZERO_SHOT_PREFIX):
        return ZeroShotBaseline.from_spec(text[len(ZERO_SHOT_PREFIX):], dtype=dtype, device=device).eval()
    from siad.model import SIADModel

    return SIADModel.from_pretrained(text, dtype=dtype, device=device).eval()


def detector_name(detector: Any, spec: str | Path) -> str:
    """What the reports call a detector: the spec it was loaded from."""
    return getattr(detector, "name", None) or str(spec)
