"""The contract between a vision backbone and the rest of SIAD-LLM.

A backbone turns a batch of normalised images into per-stage feature maps, each stage with its
channels and stride declared (as transformers' `BackboneMixin` declares `out_feature_channels` and
anomalib's `TimmFeatureExtractor` its layers' dimensions), and one global image embedding (what the
LLM reads through `llama_proj`). Everything downstream (stage projection, adapter, SEM, the map
head, PEM, the self-reference and the few-shot banks) reads the maps with their own grids: no grid
is ever re-derived from a token count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class VisionFeatures:
    """What a vision backbone gives for a batch of B images.

    stage_maps: K tensors B x C_k x H_k x W_k, the feature maps of the stages (C_k the stage's channels,
        H_k x W_k its grid: the image size divided by the stage's stride, rounded up).
    image_embedding: B x E, the L2-normalised global image embedding; None when only the maps were
        computed (`VisionBackbone.stage_maps`: map-only detection needs no embedding).
    """

    stage_maps: list[torch.Tensor]
    image_embedding: torch.Tensor | None

    @property
    def batch_size(self) -> int:
        """B (a symbolic size while the map path is exported: never turned into a Python int here)."""
        return self.stage_maps[0].shape[0]

    @property
    def stage_tokens(self) -> list[torch.Tensor]:
        """K tensors B x N_k x C_k (N_k = H_k W_k, row by row): the maps as patch tokens."""
        return [m.flatten(2).transpose(1, 2) for m in self.stage_maps]

    @property
    def grids(self) -> list[tuple[int, int]]:
        """(H_k, W_k) of every stage."""
        return [(int(m.shape[-2]), int(m.shape[-1])) for m in self.stage_maps]


class VisionBackbone(nn.Module):
    """The base of every vision backbone (`siad.encoders.BACKBONES`).

    A subclass sets, in its constructor, `stage_channels` (C_k of each configured stage), `stage_strides`
    (the input pixels per grid cell of each stage) and `embedding_dim` (E), and implements `forward`:
    B x 3 x S x S normalised pixels -> `VisionFeatures`; `stage_maps` gives the maps alone.
    """

    stage_channels: tuple[int, ...]
    stage_strides: tuple[int, ...]
    embedding_dim: int

    def stage_grids(self, image_size: int) -> list[tuple[int, int]]:
        """(H_k, W_k) of every stage for S x S inputs (ceil(S / stride): TF "same" padding and ViT patches agree)."""
        return [(-(-image_size // s), -(-image_size // s)) for s in self.stage_strides]

    def forward(self, pixels: torch.Tensor) -> VisionFeatures:  # pragma: no cover - abstract
        raise NotImplementedError

    def stage_maps(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        """Only the stage feature maps (what the anomaly maps need), the same tensors as `forward`'s; a
        backbone that can stop early (skip its head) overrides this."""
        return self.forward(pixels).stage_maps
