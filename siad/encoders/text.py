"""The text tower: ImageBind's text trunk and its CLIP BPE tokenizer.

`ImageBindTextEncoder` keeps the module names of `imagebind_huge()` for the text modality
(`modality_preprocessors.text`, `modality_trunks.text`, ...), so the official checkpoint's text
entries load key for key. It embeds the stage prompts (learnable vectors written over placeholder
tokens), the frozen prompt ensemble and the LLM's responses (self-improvement).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from siad.config import TextConfig
from siad.encoders.imagebind import build_imagebind_parts, imagebind_bpe_path, import_imagebind_model


class ImageBindTokenizer:
    """ImageBind's CLIP BPE tokenizer, with explicit start/end tokens and truncation.

    `encode(text)` gives the BPE ids of a text without start/end tokens; `pack()` joins pieces
    into one sequence [SOT] pieces... [EOT] of at most the context length.
    """

    def __init__(self, context_length: int = 77) -> None:
        import_imagebind_model()
        # deferred: imagebind's package is registered by import_imagebind_model() first (its own __init__
        # needs dependencies that do not install)
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


class ImageBindTextEncoder(nn.Module):
    """ImageBind's text trunk: B x L token ids -> B x D normalised text features (D = embed_dim)."""

    def __init__(self, config: TextConfig, embed_dim: int) -> None:
        super().__init__()
        build_imagebind_parts(self, "text", embed_dim, config.width, config.num_blocks, config.num_heads)
        self.context_length = config.context_length

    def token_embeddings(self, token_ids: torch.Tensor) -> torch.Tensor:
        """B x L ids -> B x L x Dt token embeddings."""
        return self.modality_preprocessors["text"].token_embedding(token_ids)

    @property
    def token_embedding_weight(self) -> torch.Tensor:
        return self.modality_preprocessors["text"].token_embedding.weight

    def forward(self, token_ids: torch.Tensor, learnable: torch.Tensor | None = None,
                learnable_mask: torch.Tensor | None = None) -> torch.Tensor:
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

    # the name the stage prompts and the self-improvement loop use
    encode_text = forward
