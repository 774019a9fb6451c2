"""The trainable modules of SIAD-LLM, named as in the paper.

Notation: B images, K stages, stage k with C_k channels on an H_k x W_k grid of N_k = H_k W_k patch
tokens (ImageBind-Huge: C_k = 1280 on 16 x 16; EfficientNet-Lite0 at 224 px: 40 on 28 x 28 and 112 on
14 x 14), D the joint embedding width, Dt the text width, H the LLM width, S the image size. Grids are
always given explicitly (`grids`: K pairs (H_k, W_k), `VisionFeatures.grids`), never derived from N_k.

- `StageProjection`: S_k = Linear_k(P_k), one per stage, into the joint space.
- `Adapter` (eq. 5-6): S^_k = lam * norm(LeakyReLU(Linear(S_k))) + (1 - lam) * norm(S_k).
- `StageEnhancementModule` (SEM, eq. 7): S_emd_k = S^_k + Conv3x3(Proj(S*)), S* = S^_K.
- `PromptEnsemble` (appendix D): the frozen compositional ensemble of a class.
- `StagePromptLearner` (eq. 3-4): the stage prompts, combined with the ensemble.
- `AnomalyMapHead`: the one and only place that turns features and text into anomaly maps.
- `PatchEnhancementModule` (PEM, eq. 8-11): the stage maps as K grouped tokens for the LLM.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from siad.answers import group_edges
from siad.config import SIADConfig
from siad.detection import NON_FINITE_MAP
from siad.encoders.text import ImageBindTextEncoder, ImageBindTokenizer, pad_token_ids
from siad.prompts import STATE_SUFFIXES, STATES, ensemble_sentences, prompt_class_name


class StageProjection(nn.Module):
    """One Linear per stage, from the stage's own width: K x (B x N_k x C_k) -> K x (B x N_k x D)."""

    def __init__(self, stage_channels: Sequence[int], embed_dim: int) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(channels, embed_dim) for channels in stage_channels)

    def forward(self, stage_tokens: list[torch.Tensor]) -> list[torch.Tensor]:
        return [linear(tokens) for linear, tokens in zip(self.linears, stage_tokens, strict=True)]


def tokens_to_map(tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """B x N x C patch tokens (row by row) on an H x W grid -> B x C x H x W (N must be H W)."""
    batch, count, channels = tokens.shape
    height, width = int(grid[0]), int(grid[1])
    if count != height * width:
        raise ValueError(f"{count} patch tokens do not fill a {height} x {width} grid")
    return tokens.transpose(1, 2).reshape(batch, channels, height, width)


class Adapter(nn.Module):
    """Eq. 5-6 for every stage: K x (B x N_k x D) -> K x (B x N_k x D).

    S'_k = L2norm(LeakyReLU(Linear_k(S_k))); S^_k = lam * S'_k + (1 - lam) * L2norm(S_k).
    """

    def __init__(self, num_stages: int, embed_dim: int, lam: float) -> None:
        super().__init__()
        self.lam = lam
        self.linears = nn.ModuleList(nn.Linear(embed_dim, embed_dim) for _ in range(num_stages))
        self.activation = nn.LeakyReLU()

    def forward(self, stages: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for linear, s in zip(self.linears, stages, strict=True):
            adapted = F.normalize(self.activation(linear(s)), dim=-1)
            out.append(self.lam * adapted + (1.0 - self.lam) * F.normalize(s, dim=-1))
        return out


class StageEnhancementModule(nn.Module):
    """SEM, eq. 7: K x (B x N_k x D) with their grids -> K x (B x N_k x D).

    S* = the last stage S^_K on its H_K x W_K grid; for stage k, Proj_k = 1x1 conv then bilinear resize
    to stage k's grid, Conv_k = 3x3 conv (zero-initialised, so training starts from S^_k).
    """

    def __init__(self, num_stages: int, embed_dim: int) -> None:
        super().__init__()
        self.projections = nn.ModuleList(nn.Conv2d(embed_dim, embed_dim, 1) for _ in range(num_stages))
        self.convs = nn.ModuleList(nn.Conv2d(embed_dim, embed_dim, 3, padding=1) for _ in range(num_stages))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default init for the projections; the last convs start at zero (training starts from S^_k)."""
        for projection in self.projections:
            projection.reset_parameters()
        for conv in self.convs:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, stages: list[torch.Tensor], grids: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        last = tokens_to_map(stages[-1], grids[-1])  # B x D x H_K x W_K
        out = []
        for projection, conv, s, grid in zip(self.projections, self.convs, stages, grids, strict=True):
            context = projection(last)
            if tuple(context.shape[-2:]) != tuple(grid):
                context = F.interpolate(context, size=tuple(grid), mode="bilinear", align_corners=False)
            context = conv(context).flatten(2).transpose(1, 2)  # B x N x D
            out.append(s + context)
        return out


class PromptEnsemble:
    """The frozen compositional ensemble of appendix D: e_s = norm(mean of norm(T(sentence))) over the
    sentences of state s ("a photo of a [state] [class]." ...), 2 x D per class (e_normal, e_abnormal),
    cached while the encoder's weights are unchanged. Used by the stage prompts and, alone, by the
    zero-shot baseline (siad.baseline)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, torch.Tensor] = {}

    def clear(self) -> None:
        self._cache.clear()

    def features(self, encoder: ImageBindTextEncoder, tokenizer: ImageBindTokenizer, class_name: str) -> torch.Tensor:
        """2 x D: e_normal, e_abnormal for one class."""
        weight = encoder.token_embedding_weight
        key = (class_name, weight.device, weight.dtype, _version(encoder))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        with torch.no_grad():
            rows = []
            for state in STATES:
                ids = tokenizer.batch(ensemble_sentences(class_name, state)).to(weight.device)
                features = encoder.encode_text(ids)  # J x D, normalised
                rows.append(F.normalize(features.mean(dim=0), dim=-1))
            value = torch.stack(rows)
        self._cache = {k: v for k, v in self._cache.items() if k[1:] == key[1:]}
        self._cache[key] = value
        return value


def check_stage_phrases_fit(config: SIADConfig, tokenizer: ImageBindTokenizer) -> None:
    """Refuse stage phrases that leave a stage prompt no room in the text context: each phrase's BPE
    tokens, the learnable vectors, at least one token of the class name, the state words (and, in
    "concat" mode, one token of an ensemble sentence) must fit the context between its start and end
    tokens. ValueError naming SIADConfig.text.stage_phrases (the config bounds a phrase's characters;
    this is the exact check, with the text encoder's own tokenizer)."""
    if not config.text.use_stage_prompts:
        return
    suffix = max(len(tokenizer.encode(text)) for text in STATE_SUFFIXES.values())
    room = (tokenizer.context_length - 2 - config.text.num_prompt_vectors - 1 - suffix
            - (1 if config.text.stage_prompt_mode == "concat" else 0))
    for index, phrase in enumerate(config.resolved_stage_phrases):
        count = len(tokenizer.encode(phrase))
        if count > room:
            raise ValueError(f"SIADConfig.text.stage_phrases[{index}] has {count} tokens; with "
                             f"{config.text.num_prompt_vectors} prompt vectors a stage phrase may have at most {room} "
                             f"(the text encoder reads {tokenizer.context_length} tokens)")


class StagePromptLearner(nn.Module):
    """The stage prompts of eq. 3-4 with the compositional ensemble of appendix D (`PromptEnsemble`).

    g_{k,s} = [stage phrase k][E learnable vectors: V (normal) / W (abnormal)][class][state words];
    the vectors replace placeholder tokens at the text trunk's token-embedding level.

    `forward(encoder, tokenizer, class_names)` -> C x K x 2 x D text features (channel 0 normal,
    1 abnormal), for the C given class names:
    - mode "sum" (default): t_{k,s} = norm(norm(T(g_{k,s})) + e_s);
    - mode "concat": t_{k,s} = norm(mean_j norm(T(g_{k,s} + sentence_{s,j})));
    - use_stage_prompts=False (ablation "w/o SP", the paper's Table 3): only the stage phrase goes,
      g_s = [E learnable vectors][class][state words], the same for every stage (computed once);
      the learnable vectors, the ensemble and the mode are unchanged.
    """

    def __init__(self, config: SIADConfig) -> None:
        super().__init__()
        self.num_vectors = config.text.num_prompt_vectors
        self.stage_phrases = config.resolved_stage_phrases
        self.mode = config.text.stage_prompt_mode
        self.use_stage_prompts = config.text.use_stage_prompts
        self.normal_vectors = nn.Parameter(torch.empty(self.num_vectors, config.text.width))
        self.abnormal_vectors = nn.Parameter(torch.empty(self.num_vectors, config.text.width))
        self.reset_parameters()
        self.ensemble = PromptEnsemble()

    def reset_parameters(self) -> None:
        """The learnable prompt vectors start as small random word embeddings (std 0.02)."""
        nn.init.normal_(self.normal_vectors, std=0.02)
        nn.init.normal_(self.abnormal_vectors, std=0.02)

    # ------------------------------------------------------------------ stage prompts
    def _stage_prompt_ids(self, tokenizer: ImageBindTokenizer, class_name: str, stage: int, state: str,
                          tail: list[int] | None = None) -> tuple[list[int], list[bool]]:
        """The token ids of g_{stage,state} (followed by `tail`, mode "concat") and the mask of the
        placeholder positions that take the learnable vectors. Without stage prompts, no phrase."""
        phrase = tokenizer.encode(self.stage_phrases[stage]) if self.use_stage_prompts else []
        placeholders = [tokenizer.placeholder_id] * self.num_vectors
        name = tokenizer.encode(prompt_class_name(class_name))
        suffix = tokenizer.encode(STATE_SUFFIXES[state])
        pieces = [phrase, placeholders, name, suffix] + ([tail] if tail else [])
        ids = tokenizer.pack(pieces, shrink=2 if not tail else 4)
        start = 1 + len(phrase)
        learnable = [start <= i < start + self.num_vectors for i in range(len(ids))]
        return ids, learnable

    def forward(self, encoder: ImageBindTextEncoder, tokenizer: ImageBindTokenizer,
                class_names: list[str]) -> torch.Tensor:
        # without stage phrases every stage has the same prompts: compute them once, expand below
        num_stages = len(self.stage_phrases) if self.use_stage_prompts else 1
        ensembles = torch.stack([self.ensemble.features(encoder, tokenizer, c) for c in class_names])  # C x 2 x D
        device = ensembles.device
        sequences: list[list[int]] = []
        masks: list[list[bool]] = []
        groups: list[int] = []  # (class, stage, state) of each prompt, as one index
        for c_index, class_name in enumerate(class_names):
            for stage in range(num_stages):
                for s_index, state in enumerate(STATES):
                    tails = ([tokenizer.encode(t) for t in ensemble_sentences(class_name, state)]
                             if self.mode == "concat" else [None])
                    for tail in tails:
                        ids, learnable = self._stage_prompt_ids(tokenizer, class_name, stage, state, tail)
                        sequences.append(ids)
                        masks.append(learnable)
                        groups.append((c_index * num_stages + stage) * 2 + s_index)
        token_ids = pad_token_ids(sequences).to(device)
        learnable_mask = torch.zeros(token_ids.shape, dtype=torch.bool, device=device)
        for row, m in enumerate(masks):
            learnable_mask[row, : len(m)] = torch.tensor(m, device=device)
        group_index = torch.tensor(groups, device=device)
        vectors = torch.stack([self.normal_vectors, self.abnormal_vectors])  # 2 x E x Dt
        rows, cols = learnable_mask.nonzero(as_tuple=True)  # E positions per row, in order
        order = torch.arange(self.num_vectors, device=device).repeat(len(sequences))
        learnable = torch.zeros(*token_ids.shape, vectors.shape[-1], dtype=vectors.dtype, device=device)
        learnable = learnable.index_put((rows, cols), vectors[group_index[rows] % 2, order])
        features = encoder.encode_text(token_ids, learnable, learnable_mask)  # R x D
        num_groups = len(class_names) * num_stages * 2
        summed = torch.zeros(num_groups, features.shape[-1], dtype=features.dtype, device=device)
        summed = summed.index_add(0, group_index, features)
        counts = torch.bincount(group_index, minlength=num_groups).to(features.dtype)
        stage_features = (summed / counts[:, None]).view(len(class_names), num_stages, 2, -1)
        if self.mode == "concat":
            stage_features = F.normalize(stage_features, dim=-1)
        else:
            stage_features = F.normalize(stage_features + ensembles[:, None].to(stage_features.dtype), dim=-1)
        return stage_features.expand(-1, len(self.stage_phrases), -1, -1)


def _version(module: nn.Module) -> tuple[int, ...]:
    """Version counters of a module's parameters: they change on every in-place update
    (optimizer steps, `load_state_dict`), so a cache keyed by them is never stale."""
    return tuple(p._version for p in module.parameters())


def parameter_version(module: nn.Module) -> tuple[int, ...]:
    return _version(module)


class AnomalyMapHead(nn.Module):
    """The one and only place that turns features and text into anomaly maps.

    features: K x (B x N_k x D) on their grids (H_k, W_k); text: B x K x 2 x D (normalised; channel 1 is
    abnormal). logits_k = scale * norm(features_k) @ text_k^T on stage k's grid, bilinear upsampling to S x S
    (align_corners=True), softmax over the two states.
    `logits()` gives B x K x 2 x S x S (what the loss needs: it stays well-conditioned when the
    softmax saturates); `forward()` gives B x K x S x S, the abnormal probability of each stage (M_k[:, 1]).

    center_patches (`SIADConfig.map.center_patch_features`, beyond the paper): each stage's patch features
    minus the image's mean patch feature before the cosine, so that a patch is compared with the
    text as far as it departs from the rest of its own image. An encoder trained from scratch gives
    patches that share one dominant direction, and its maps never start to localise without this
    (a mini model fitting one batch: dice 0.95 flat over 120 steps; centred, 0.68 after 60).
    """

    def __init__(self, image_size: int, logit_scale: float, center_patches: bool = False) -> None:
        super().__init__()
        self.image_size = image_size
        self.logit_scale = logit_scale
        self.center_patches = center_patches

    def logits(self, features: list[torch.Tensor], text: torch.Tensor,
               grids: Sequence[tuple[int, int]]) -> torch.Tensor:
        """B x K x 2 x S x S float32 logits, whatever the dtype of the features and text.

        The cosine similarity runs in float32: in bfloat16 a logit of scale * cos (scale 100) would be
        rounded to steps of up to 0.5, i.e. up to a few hundredths in probability."""
        out = []
        for k, (f, grid) in enumerate(zip(features, grids, strict=True)):
            batch = f.shape[0]
            f = f.float()
            if self.center_patches:
                f = f - f.mean(dim=1, keepdim=True)
            similarity = torch.einsum("bnd,bsd->bsn", F.normalize(f, dim=-1), text[:, k].float())
            logits = (self.logit_scale * similarity).reshape(batch, 2, *grid)
            out.append(F.interpolate(logits, size=(self.image_size, self.image_size), mode="bilinear",
                                     align_corners=True))
        return torch.stack(out, dim=1)

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        """B x K x 2 x S x S logits -> B x K x S x S abnormal probabilities: the softmax over the two states,
        computed as sigmoid(abnormal - normal) (the same function; a softmax over a middle axis of two
        entries costs a full extra pass over the maps, a fifth of the exported graph's time)."""
        return torch.sigmoid(logits[:, :, 1] - logits[:, :, 0])

    @staticmethod
    def upsample(grids: torch.Tensor, image_size: int) -> torch.Tensor:
        """B x C x H x W -> B x C x S x S: how every patch grid becomes a map (bilinear,
        align_corners=True), the text logits' and the few-shot reference distances' (siad.references)."""
        return F.interpolate(grids, size=(image_size, image_size), mode="bilinear", align_corners=True)

    def forward(self, features: list[torch.Tensor], text: torch.Tensor,
                grids: Sequence[tuple[int, int]]) -> torch.Tensor:
        return self.probabilities(self.logits(features, text, grids))

    @staticmethod
    def combine(stage_maps: torch.Tensor) -> torch.Tensor:
        """B x K x S x S -> the final map M = mean over stages, B x S x S."""
        return stage_maps.mean(dim=1)

    @staticmethod
    def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
        """Gaussian smoothing of B x S x S maps (kernel truncated at 4 sigma, reflected borders);
        sigma <= 0 returns the maps unchanged."""
        if sigma <= 0:
            return maps
        radius = max(1, int(4.0 * sigma + 0.5))
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=maps.device)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = (kernel / kernel.sum()).to(maps.dtype)
        x = maps[:, None]
        pad = min(radius, maps.shape[-1] - 1, maps.shape[-2] - 1)
        if pad < radius:
            kernel = kernel[radius - pad: radius + pad + 1]
            kernel = kernel / kernel.sum()
        x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="reflect"), kernel.view(1, 1, -1, 1))
        return x[:, 0]

    @staticmethod
    def peak(maps: torch.Tensor) -> torch.Tensor:
        """B x S x S maps -> their maxima, B values: the image score without the check of `score` (what an
        exported graph computes; its runtime checks the maps, `siad.detection.check_finite_maps`)."""
        return maps.flatten(1).max(dim=1).values

    @staticmethod
    def score(maps: torch.Tensor) -> torch.Tensor:
        """The image score of B x S x S maps: their maximum (`peak`), B values in [0, 1].

        A non-finite map (NaN or infinite weights) raises `FloatingPointError`: such a score must
        never be read as "normal" (NaN >= threshold is False)."""
        scores = AnomalyMapHead.peak(maps)
        if not bool(torch.isfinite(maps).all()):
            raise FloatingPointError(NON_FINITE_MAP)
        return scores


class _CenterProbabilities(nn.Module):
    """Probabilities in [0, 1] -> [-1, 1]: a fixed normalisation that keeps the level of a map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) * 2.0


class PatchEnhancementModule(nn.Module):
    """PEM, eq. 8-11: B x C x S x S stage maps -> B x Kg x H tokens for the LLM.

    The maps are cut into P x P patches (N = (S/P)^2 patches of P*P*C values), normalised (eq. 9's
    "Norm", `norm`: "center" maps the probabilities [0, 1] to [-1, 1] and keeps each patch's level;
    "layer" is a per-patch LayerNorm, which removes it: every constant map gives the same tokens), an
    MLP to the LLM width H, then the (S/P) x (S/P) patch grid is split into a g x g grid of groups
    (Kg = g^2 = 9 by default, matching the 3 x 3 position words) and each group is averaged.
    """

    def __init__(self, num_channels: int, image_size: int, patch_size: int, num_groups: int,
                 out_dim: int, norm: str = "center") -> None:
        super().__init__()
        self.patch_size = patch_size
        in_dim = patch_size * patch_size * num_channels
        if norm not in ("center", "layer"):
            raise ValueError(f"PEM norm must be 'center' or 'layer', got {norm!r}")
        self.norm = nn.LayerNorm(in_dim) if norm == "layer" else _CenterProbabilities()
        self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
        per_side = image_size // patch_size
        groups_side = math.isqrt(num_groups)
        edges = group_edges(per_side, groups_side)
        averaging = torch.zeros(num_groups, per_side * per_side)
        for gy in range(groups_side):
            for gx in range(groups_side):
                cells = [y * per_side + x for y in range(edges[gy], edges[gy + 1])
                         for x in range(edges[gx], edges[gx + 1])]
                averaging[gy * groups_side + gx, cells] = 1.0 / len(cells)
        self.register_buffer("group_averaging", averaging, persistent=False)

    def patches(self, maps: torch.Tensor) -> torch.Tensor:
        """B x C x S x S -> B x N x (C*P*P): the P x P patches, row by row, each flattened channel by
        channel (what `F.unfold(maps, P, stride=P).transpose(1, 2)` gives, by a reshape: no im2col copy)."""
        batch, channels, height, width = maps.shape
        p = self.patch_size
        grid = maps.reshape(batch, channels, height // p, p, width // p, p)
        return grid.permute(0, 2, 4, 1, 3, 5).reshape(batch, (height // p) * (width // p), channels * p * p)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        tokens = self.mlp(self.norm(self.patches(maps)))  # B x N x H
        return torch.einsum("gn,bnh->bgh", self.group_averaging.to(tokens.dtype), tokens)
