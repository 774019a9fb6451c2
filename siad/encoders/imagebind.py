"""ImageBind: its model code, its vision trunk as a backbone, and the official checkpoint.

ImageBind's model code comes from the PyPI package `imagebind-unofficial==0.1.1`, installed with
`--no-deps`. Its package `__init__` imports `imagebind.data`, which needs torchaudio, pytorchvideo
and decord; we never run it: `import_imagebind_model()` registers a bare `imagebind` package whose
`__path__` is the installed folder, then imports `imagebind.models.imagebind_model` (DESIGN 2).

`build_imagebind_parts` builds ImageBind's modules for one modality ("vision" or "text") with the
module names of `imagebind_huge()` (`modality_preprocessors.vision`, `modality_trunks.vision`, ...), so
that each part's state-dict keys are the official checkpoint's keys for that modality.
`ImageBindVision` is the vision trunk as a `VisionBackbone`; the text trunk is in `siad.encoders.text`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from siad.config import ImageBindVisionConfig
from siad.encoders.base import VisionBackbone, VisionFeatures
from siad.weights import safe_torch_load  # noqa: F401 (re-exported: its old home)

IMAGEBIND_INSTALL_HINT = "pip install --no-deps imagebind-unofficial==0.1.1"
KEPT_MODALITIES = ("vision", "text")
MODULE_GROUPS = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")


def _imagebind_package_dir() -> Path:
    loaded = sys.modules.get("imagebind")
    if loaded is not None and getattr(loaded, "__path__", None):
        return Path(list(loaded.__path__)[0])
    spec = importlib.util.find_spec("imagebind")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"ImageBind's model code is not installed; install it with: {IMAGEBIND_INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def import_imagebind_model() -> ModuleType:
    """`imagebind.models.imagebind_model`, imported without running `imagebind/__init__.py`."""
    if "imagebind" not in sys.modules:
        package_dir = _imagebind_package_dir()
        package = types.ModuleType("imagebind")
        package.__spec__ = importlib.util.find_spec("imagebind")
        package.__path__ = [str(package_dir)]
        package.__file__ = str(package_dir / "__init__.py")
        sys.modules["imagebind"] = package
    return importlib.import_module("imagebind.models.imagebind_model")


def imagebind_bpe_path() -> Path:
    """The CLIP BPE vocabulary shipped with the ImageBind package."""
    path = _imagebind_package_dir() / "bpe" / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"ImageBind's BPE vocabulary is missing at {path}; reinstall with: {IMAGEBIND_INSTALL_HINT}")
    return path


def build_imagebind_parts(module: nn.Module, modality: str, embed_dim: int, width: int, num_blocks: int,
                          num_heads: int, patch_size: int = 14) -> None:
    """Give `module` ImageBind's four module groups for one modality (each an `nn.ModuleDict` holding
    only that modality), built by ImageBind's own constructor; the other modalities are built as small
    as possible and dropped at once."""
    imagebind_model = import_imagebind_model()
    small = dict(num_blocks=0, num_heads=1, embed_dim=8)
    dims = {m: dict(small) for m in ("vision", "text", "audio", "depth", "thermal", "imu")}
    dims[modality] = dict(num_blocks=num_blocks, num_heads=num_heads, embed_dim=width)
    full = imagebind_model.ImageBindModel(
        kernel_size=(2, patch_size, patch_size), out_embed_dim=embed_dim,
        **{f"{m}_{k}": v for m, values in dims.items() for k, v in values.items()})
    for group in MODULE_GROUPS:
        setattr(module, group, nn.ModuleDict({modality: getattr(full, group)[modality]}))


class ImageBindVision(VisionBackbone):
    """ImageBind's vision trunk (a ViT) as a backbone: B x 3 x 224 x 224 (CLIP-normalised) -> the patch
    tokens after each stage block (CLS dropped) as G x G maps (G = 224 / patch size; stride = patch
    size; channels = the trunk's width) and the vision head's normalised image embedding (embed_dim).

    The module tree mirrors `ImageBindModel` for the vision modality, so the official checkpoint's
    `modality_*.vision.*` entries load key for key.
    """

    def __init__(self, config: ImageBindVisionConfig, embed_dim: int) -> None:
        super().__init__()
        build_imagebind_parts(self, "vision", embed_dim, config.width, config.num_blocks, config.num_heads,
                              config.patch_size)
        self.stages = tuple(config.stages)
        self.grid = config.image_size // config.patch_size
        self.stage_channels = (config.width,) * len(self.stages)
        self.stage_strides = (config.patch_size,) * len(self.stages)
        self.embedding_dim = embed_dim

    def forward(self, pixels: torch.Tensor) -> VisionFeatures:
        prepared = self.modality_preprocessors["vision"](vision=pixels)
        tokens = prepared["trunk"]["tokens"]  # B x (1 + N) x Dv
        trunk = self.modality_trunks["vision"]
        x = trunk.pre_transformer_layer(tokens)  # (1 + N) x B x Dv
        wanted = set(self.stages)
        batch, side = pixels.shape[0], self.grid
        maps: list[torch.Tensor] = []
        for index, block in enumerate(trunk.blocks):
            x = block(x, attn_mask=None)
            if index in wanted:  # (1 + N) x B x Dv -> B x Dv x G x G, a view (CLS dropped)
                patches = x[1:].permute(1, 0, 2)
                maps.append(patches.reshape(batch, side, side, -1).permute(0, 3, 1, 2))
        x = trunk.post_transformer_layer(x)  # B x (1 + N) x Dv
        embedding = self.modality_heads["vision"](x)
        return VisionFeatures(stage_maps=maps, image_embedding=F.normalize(embedding, dim=-1))


# ------------------------------------------------------------------------------- the official checkpoint
def filter_official_state_dict(state_dict: dict[str, torch.Tensor],
                               modalities: tuple[str, ...] = KEPT_MODALITIES) -> dict[str, torch.Tensor]:
    """The entries of an official ImageBind state dict for `modalities` (the others dropped)."""
    prefixes = tuple(f"{group}.{m}." for group in MODULE_GROUPS for m in modalities)
    return {k: v for k, v in state_dict.items() if k.startswith(prefixes)}


def read_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The vision and text entries of the official `imagebind_huge.pth` layout, read with
    `torch.load(weights_only=True)` (memory-mapped when possible)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ImageBind checkpoint not found: {path}")
    state: Any = safe_torch_load(path, "an ImageBind checkpoint (imagebind_huge.pth)")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold an ImageBind state dict (a mapping of names to tensors)")
    return filter_official_state_dict(state)


def load_official_checkpoint(modules: list[nn.Module], path: str | Path, dtype: torch.dtype | None = None,
                             device: torch.device | str | None = None) -> None:
    """Load the official `imagebind_huge.pth` into ImageBind modules (`ImageBindVision`,
    `ImageBindTextEncoder`: strict on each). Tensors are cast to `dtype` and moved to `device` one by
    one and assigned (the modules may have been built with empty weights)."""
    kept = read_official_checkpoint(path)
    for module in modules:
        expected = set(module.state_dict().keys())
        missing = sorted(expected - set(kept))
        if missing:
            raise ValueError(f"{path} is not an ImageBind checkpoint of this architecture: {len(missing)} expected "
                             f"keys are missing, e.g. {missing[:5]}")
        own = module.state_dict()
        wrong = [k for k in expected if tuple(own[k].shape) != tuple(kept[k].shape)]
        if wrong:
            k = sorted(wrong)[0]
            raise ValueError(f"{path}: shape mismatch for {len(wrong)} keys, e.g. {k}: checkpoint "
                             f"{tuple(kept[k].shape)} vs model {tuple(own[k].shape)} (is the config the "
                             f"ImageBind-Huge preset?)")

        def convert(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            return t.to(device) if device is not None else t

        module.load_state_dict({k: convert(kept[k]) for k in expected}, strict=True, assign=True)
