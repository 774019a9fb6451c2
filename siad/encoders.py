"""The ImageBind encoder of SIAD-LLM: its vision and text trunks only.

ImageBind's model code comes from the PyPI package `imagebind-unofficial==0.1.1`, installed with
`--no-deps`. Its package `__init__` imports `imagebind.data`, which needs torchaudio, pytorchvideo
and decord; we never run it: `import_imagebind_model()` registers a bare `imagebind` package whose
`__path__` is the installed folder, then imports `imagebind.models.imagebind_model` (DESIGN 2).

`ImageBindEncoder` keeps the same module names as `imagebind_huge()` for the kept parts, so its
state-dict keys are the official checkpoint's keys for the vision and text trunks (with their
preprocessors, heads and postprocessors).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
import torch.nn as nn
import torch.nn.functional as F

from siad.config import SIADConfig

IMAGEBIND_INSTALL_HINT = "pip install --no-deps imagebind-unofficial==0.1.1"
KEPT_MODALITIES = ("vision", "text")
_MODULE_GROUPS = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")


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


class ImageBindTokenizer:
    """ImageBind's CLIP BPE tokenizer, with explicit start/end tokens and truncation.

    `encode(text)` gives the BPE ids of a text without start/end tokens; `pack()` joins pieces
    into one sequence [SOT] pieces... [EOT] of at most the context length.
    """

    def __init__(self, context_length: int = 77) -> None:
        import_imagebind_model()
        from imagebind.models.multimodal_preprocessors import SimpleTokenizer

        self._bpe = SimpleTokenizer(str(imagebind_bpe_path()), context_length=context_length)
        self.context_length = context_length
        self.sot_id: int = self._bpe.encoder["<|startoftext|>"]
        self.eot_id: int = self._bpe.encoder["<|endoftext|>"]
        # Any ordinary token works as the placeholder of a learnable vector: its embedding is
        # replaced, and its id is below the end token, so EOS pooling (argmax of ids) is unchanged.
        self.placeholder_id: int = self._bpe.encode("x")[0]

    def encode(self, text: str) -> list[int]:
        return list(self._bpe.encode(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` (in BPE tokens) with at most `max_tokens` tokens."""
        ids = self.encode(text)
        if len(ids) <= max_tokens:
            return text
        return self._bpe.decode(ids[:max_tokens]).strip()

    def batch(self, texts: list[str]) -> torch.Tensor:
        """Plain texts -> B x L token ids, L = the longest sequence (at most the context length)."""
        return pad_token_ids([self.pack([self.encode(t)]) for t in texts])

    def pack(self, pieces: list[list[int]], shrink: int | None = None) -> list[int]:
        """[SOT] + pieces + [EOT], cut to the context length by shortening piece `shrink` first
        (or the end of the sequence when `shrink` is None)."""
        budget = self.context_length - 2
        total = sum(len(p) for p in pieces)
        pieces = [list(p) for p in pieces]
        if total > budget and shrink is not None:
            excess = total - budget
            keep = max(1, len(pieces[shrink]) - excess)
            pieces[shrink] = pieces[shrink][:keep]
        ids = [i for piece in pieces for i in piece][:budget]
        return [self.sot_id, *ids, self.eot_id]


def pad_token_ids(sequences: list[list[int]]) -> torch.Tensor:
    """Right-pad id lists with 0 into a B x L tensor (L = the longest one)."""
    length = max(len(s) for s in sequences)
    out = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


@dataclass
class VisionFeatures:
    """What the vision trunk gives for a batch of B images.

    stage_tokens: K tensors of B x N x Dv, the patch tokens (CLS dropped) after each stage block.
    image_embedding: B x D, ImageBind's normalised global image embedding (the vision head's output).
    """

    stage_tokens: list[torch.Tensor]
    image_embedding: torch.Tensor


class ImageBindEncoder(nn.Module):
    """ImageBind's vision and text trunks, built from a `SIADConfig`.

    The module tree mirrors `ImageBindModel` for the kept modalities (`modality_preprocessors.vision`,
    `modality_trunks.text`, ...), so the official checkpoint loads key for key.
    """

    def __init__(self, config: SIADConfig) -> None:
        super().__init__()
        imagebind_model = import_imagebind_model()
        patch = config.vision_patch_size
        # The other modalities are built as small as possible and dropped at once.
        unused = dict(num_blocks=0, num_heads=1, embed_dim=8)
        full = imagebind_model.ImageBindModel(
            kernel_size=(2, patch, patch),
            out_embed_dim=config.embed_dim,
            vision_embed_dim=config.vision_embed_dim,
            vision_num_blocks=config.vision_num_blocks,
            vision_num_heads=config.vision_num_heads,
            text_embed_dim=config.text_embed_dim,
            text_num_blocks=config.text_num_blocks,
            text_num_heads=config.text_num_heads,
            **{f"{m}_{k}": v for m in ("audio", "depth", "thermal", "imu") for k, v in unused.items()},
        )
        for group in _MODULE_GROUPS:
            kept = nn.ModuleDict({m: getattr(full, group)[m] for m in KEPT_MODALITIES})
            setattr(self, group, kept)
        self.stage_blocks = tuple(config.stage_blocks)
        if config.image_size != 224:
            raise ValueError("SIADConfig.image_size: ImageBind's vision preprocessor is built for 224 x 224")

    # ------------------------------------------------------------------ vision
    def encode_image(self, pixels: torch.Tensor) -> VisionFeatures:
        """pixels: B x 3 x 224 x 224 (normalised) -> stage patch tokens and the image embedding."""
        prepared = self.modality_preprocessors["vision"](vision=pixels)
        tokens = prepared["trunk"]["tokens"]  # B x (1 + N) x Dv
        trunk = self.modality_trunks["vision"]
        x = trunk.pre_transformer_layer(tokens)  # (1 + N) x B x Dv
        wanted = set(self.stage_blocks)
        stage_tokens: list[torch.Tensor] = []
        for index, block in enumerate(trunk.blocks):
            x = block(x, attn_mask=None)
            if index in wanted:
                stage_tokens.append(x[1:].permute(1, 0, 2))  # B x N x Dv, CLS dropped
        x = trunk.post_transformer_layer(x)  # B x (1 + N) x Dv
        embedding = self.modality_heads["vision"](x)
        return VisionFeatures(stage_tokens=stage_tokens, image_embedding=F.normalize(embedding, dim=-1))

    # ------------------------------------------------------------------ text
    def token_embeddings(self, token_ids: torch.Tensor) -> torch.Tensor:
        """B x L ids -> B x L x Dt token embeddings."""
        return self.modality_preprocessors["text"].token_embedding(token_ids)

    def encode_text(
        self,
        token_ids: torch.Tensor,
        learnable: torch.Tensor | None = None,
        learnable_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text features, normalised: B x L ids -> B x D.

        learnable: B x L x Dt vectors written at the positions where learnable_mask (B x L bool)
        is set (the placeholders of the stage prompts); EOS pooling is unchanged.
        Sequences may be shorter than the context (the mask is causal, so padding after the end
        token does not change the end token's feature).
        """
        preprocessor = self.modality_preprocessors["text"]
        length = token_ids.shape[1]
        if length > preprocessor.context_length:
            raise ValueError(f"text of {length} tokens exceeds the context of {preprocessor.context_length}")
        embeddings = preprocessor.token_embedding(token_ids)
        if learnable is not None:
            if learnable_mask is None:
                raise ValueError("learnable vectors need learnable_mask")
            embeddings = torch.where(learnable_mask[..., None], learnable.to(embeddings.dtype), embeddings)
        tokens = embeddings + preprocessor.pos_embed[:, :length]
        attn_mask = preprocessor.mask[:length, :length]
        hidden = self.modality_trunks["text"](tokens, attn_mask=attn_mask)
        features = self.modality_heads["text"](hidden, seq_len=token_ids.argmax(dim=-1))
        return F.normalize(features, dim=-1)

    # ------------------------------------------------------------------ weights
    def kept_state_dict_keys(self) -> list[str]:
        return list(self.state_dict().keys())


def filter_official_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vision and text entries of an official ImageBind state dict (other modalities dropped)."""
    prefixes = tuple(f"{group}.{m}." for group in _MODULE_GROUPS for m in KEPT_MODALITIES)
    return {k: v for k, v in state_dict.items() if k.startswith(prefixes)}


def safe_torch_load(path: Path, expected: str) -> object:
    """`torch.load(weights_only=True)`, memory-mapped when the file allows it; any failure becomes
    a ValueError naming the file and what was expected."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not a zip-format file: mmap is impossible, read it whole
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors, zip errors, unsafe content, ...
        raise ValueError(f"{path} cannot be read as {expected} with torch.load(weights_only=True): "
                         f"{str(error).splitlines()[0]}") from error


def load_official_checkpoint(encoder: ImageBindEncoder, path: str | Path, dtype: torch.dtype | None = None,
                             device: torch.device | str | None = None) -> None:
    """Load the official `imagebind_huge.pth` layout (strict on the kept trunks).

    The file is read with `torch.load(weights_only=True)` (memory-mapped when possible); tensors
    are cast to `dtype` and moved to `device` one by one and assigned (the encoder may have been
    built with empty weights).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ImageBind checkpoint not found: {path}")
    state = safe_torch_load(path, "an ImageBind checkpoint (imagebind_huge.pth)")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold an ImageBind state dict (a mapping of names to tensors)")
    kept = filter_official_state_dict(state)
    expected = set(encoder.state_dict().keys())
    missing = sorted(expected - set(kept))
    if missing:
        raise ValueError(
            f"{path} is not an ImageBind checkpoint of this architecture: {len(missing)} expected "
            f"vision/text keys are missing, e.g. {missing[:5]}"
        )
    own = encoder.state_dict()
    wrong = [k for k in expected if tuple(own[k].shape) != tuple(kept[k].shape)]
    if wrong:
        k = sorted(wrong)[0]
        raise ValueError(
            f"{path}: shape mismatch for {len(wrong)} keys, e.g. {k}: checkpoint {tuple(kept[k].shape)} "
            f"vs model {tuple(own[k].shape)} (is the config the ImageBind-Huge preset?)"
        )
    def convert(t: torch.Tensor) -> torch.Tensor:
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t.to(device) if device is not None else t

    encoder.load_state_dict({k: convert(v) for k, v in kept.items()}, strict=True, assign=True)
