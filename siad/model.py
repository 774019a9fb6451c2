"""`SIADModel`: SIAD-LLM, the self-improvement anomaly detector (the paper's figure 3).

One forward pass (DESIGN 3):
  images -> ImageBind vision trunk (stage tokens P_k, image embedding g; computed once)
         -> stage projection -> adapter -> SEM                         (visual features S_emd_k)
  class  -> stage prompts + ensemble -> text features t_{k,s}          (cached per class)
  S_emd, t -> anomaly-map head -> stage maps M_k -> M = mean_k M_k, score = max M
  M_k -> PEM tokens; g -> llama_proj; Vicuna prompt -> LLM -> response R
Self-improvement (Algorithm 1): R is embedded as "R with damaged" / "R without damaged", fused
with t, and a second map M' and response R' come from the same visual features.

Public API: `forward(batch)` (training losses), `detect(...)`, `chat(...)`.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin

from siad.config import SIADConfig
from siad.encoders import ImageBindEncoder, ImageBindTokenizer, VisionFeatures
from siad.image import ImageInput, load_rgb, map_to_original, normalize, resize_for_encoder
from siad.llm import GenerationConfig, PromptBuilder, add_lora, conversation_segments, generate, load_language_model
from siad.losses import dice_loss, focal_loss
from siad.modules import (Adapter, AnomalyMapHead, PatchEnhancementModule, StageEnhancementModule,
                          StagePromptLearner, StageProjection, parameter_version)
from siad.profiling import StageTimer
from siad.prompts import QUESTION, STATE_SUFFIXES, describe

Conversation = Sequence[Any]


@dataclass
class DetectionResult:
    """The result of `SIADModel.detect` for one image.

    anomaly_map: H x W float32 in [0, 1] at the original image's size (the refined map M' when
        self-improvement ran, else M); beyond `config.max_map_pixels` pixels (4.2 MP by default) at
        the largest smaller size of the same aspect ratio (`siad.image.map_size`), so that a huge
        image does not give huge maps; score: its image score in [0, 1]; answer: the refined
        response R' (None when chat=False); initial_*: pass 1 (M, S, R); is_anomalous: score >= the
        model's threshold.
    """

    anomaly_map: np.ndarray
    score: float
    answer: str | None
    initial_map: np.ndarray
    initial_score: float
    initial_answer: str | None
    is_anomalous: bool
    class_name: str


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
class _Pass:
    """What one pass of the map head gives: stage logits B x K x 2 x S x S, stage maps B x K x S x S
    (abnormal probabilities) and the final map B x S x S."""

    logits: torch.Tensor
    stage_maps: torch.Tensor
    anomaly_map: torch.Tensor


class SIADModel(nn.Module, PyTorchModelHubMixin, library_name="siad-llm",
                repo_url="https://github.com/siad-llm/siad-llm",
                tags=["anomaly-detection", "zero-shot", "imagebind", "siad-llm"]):
    """SIAD-LLM. Build it from a `SIADConfig`; `dtype` and `device` apply to every part.

    Saving and loading (a folder of parts, see `siad.hub`): `save_pretrained(dir)`,
    `SIADModel.from_pretrained(folder_or_hub_id, dtype=..., device=...)`, `push_to_hub(repo_id)`.

    llm, llm_tokenizer: an already loaded base LM and its tokenizer (otherwise loaded or built
    from the config). The ImageBind encoder and the base LLM are frozen; trainable are the stage
    projection, adapter, SEM, prompt vectors, PEM, llama_proj and the LoRA adapter.
    """

    def __init__(self, config: SIADConfig, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", llm: nn.Module | None = None,
                 llm_tokenizer: Any = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = ImageBindEncoder(config)
        self.text_tokenizer = ImageBindTokenizer(config.text_context_length)
        self.stage_projection = StageProjection(config.num_stages, config.vision_embed_dim, config.embed_dim)
        self.adapter = Adapter(config.num_stages, config.embed_dim, config.adapter_lambda) if config.use_adapter else None
        self.sem = StageEnhancementModule(config.num_stages, config.embed_dim) if config.use_sem else None
        self.prompt_learner = StagePromptLearner(config)
        self.map_head = AnomalyMapHead(config.image_size, config.logit_scale)
        if llm is None:
            llm, llm_tokenizer = load_language_model(config, dtype=dtype, device=device)
        elif llm_tokenizer is None:
            raise ValueError("an injected llm needs its llm_tokenizer")
        self.llm = add_lora(llm, config)
        self.llm_tokenizer = llm_tokenizer
        hidden = int(self.llm.get_input_embeddings().weight.shape[1])
        self.pem = (PatchEnhancementModule(config.num_stages, config.image_size, config.pem_patch_size,
                                           config.pem_groups, hidden) if config.use_pem else None)
        self.llama_proj = nn.Linear(config.embed_dim, hidden)
        self.encoder.requires_grad_(config.train_encoder)
        if config.train_llm == "full":
            self.llm.requires_grad_(True)
        self.timer: StageTimer | None = None
        self._class_text_cache: dict[tuple, torch.Tensor] = {}
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

    def train(self, mode: bool = True) -> "SIADModel":
        super().train(mode)
        if not self.config.train_encoder:
            self.encoder.eval()  # frozen: always in inference mode
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

    # ------------------------------------------------------------------ saving and loading
    def save_pretrained(self, save_directory: str | Path, *, save_encoder: bool = True, card: str | None = None,
                        dtype: torch.dtype | None = None, push_to_hub: bool = False, repo_id: str | None = None,
                        token: str | None = None, private: bool | None = None, branch: str | None = None,
                        create_pr: bool = False, commit_message: str | None = None) -> str | None:
        """Save the model as a folder of parts (see `siad.hub`); with push_to_hub=True, upload that
        same folder to `repo_id` (default: the folder's name) and return the commit URL. repo_id
        also names the model in the card's usage example.

        save_encoder=False leaves the ImageBind trunks out (config.encoder_checkpoint must then name
        the official checkpoint); card: the README.md text (default: the rendered model card);
        dtype: cast the saved weights (e.g. torch.bfloat16).
        """
        from siad.hub import save_model_folder, upload_model_folder

        repo = repo_id if repo_id is not None or not push_to_hub else Path(save_directory).name
        save_model_folder(self, save_directory, save_encoder=save_encoder, card=card, dtype=dtype, model_id=repo)
        if not push_to_hub:
            return None
        return upload_model_folder(save_directory, repo, token=token, private=private, branch=branch,
                                   create_pr=create_pr, commit_message=commit_message)

    def push_to_hub(self, repo_id: str, *, save_encoder: bool = True, card: str | None = None,
                    dtype: torch.dtype | None = None, token: str | None = None, private: bool | None = None,
                    branch: str | None = None, create_pr: bool = False, commit_message: str | None = None) -> str:
        """Save the model once into a temporary folder, with the options of `save_pretrained`, and
        upload that folder (`siad.hub.upload_model_folder`); returns the commit URL."""
        import tempfile

        from siad.hub import save_model_folder, upload_model_folder

        with tempfile.TemporaryDirectory(prefix="siad-push-") as tmp:
            folder = save_model_folder(self, Path(tmp) / "model", save_encoder=save_encoder, card=card, dtype=dtype,
                                       model_id=repo_id)
            return upload_model_folder(folder, repo_id, token=token, private=private, branch=branch,
                                       create_pr=create_pr, commit_message=commit_message)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu", revision: str | None = None,
                        cache_dir: str | Path | None = None, force_download: bool = False,
                        local_files_only: bool = False, token: str | bool | None = None,
                        llm_quantization: str | None = None) -> "SIADModel":
        """Load a saved model from a local folder or a Hub id ("org/siad-llm"; from the cache when
        offline), straight into `dtype` on `device`. The base LLM comes from the folder's `llm/` or
        from the id in the config. llm_quantization: None, "8bit" or "4bit" (bitsandbytes, GPU)."""
        from siad.hub import load_model_folder, resolve_model_folder

        folder = resolve_model_folder(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
                                      force_download=force_download, local_files_only=local_files_only, token=token)
        return load_model_folder(folder, dtype=dtype, device=device, cache_dir=cache_dir,
                                 local_files_only=local_files_only, llm_quantization=llm_quantization)

    # ------------------------------------------------------------------ inputs
    def prepare_images(self, images: Sequence[ImageInput]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Images of any kind -> B x 3 x S x S normalised pixels and the original sizes."""
        config = self.config
        loaded = [load_rgb(image, config.max_input_side, config.max_input_pixels) for image in images]
        resized = np.stack([resize_for_encoder(item.rgb, config.image_size, config.resize_mode) for item in loaded])
        pixels = normalize(resized, config.image_mean, config.image_std)
        return pixels.to(device=self.device, dtype=self.dtype), [item.original_size for item in loaded]

    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        """A batch tensor: uint8 B x 3 x S x S (normalised here) or float (already normalised)."""
        if images.dtype == torch.uint8:
            images = normalize(images, self.config.image_mean, self.config.image_std)
        return images.to(device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ the pipeline
    def encode_images(self, pixels: torch.Tensor) -> VisionFeatures:
        """The vision trunk (B x 3 x S x S): stage tokens and image embedding (no gradient unless
        the encoder trains)."""
        grad = self.config.train_encoder and torch.is_grad_enabled()
        with self._timed("vision"), torch.set_grad_enabled(grad):
            return self.encoder.encode_image(pixels)

    def visual_features(self, vision: VisionFeatures) -> list[torch.Tensor]:
        """Stage projection, adapter (eq. 5-6) and SEM (eq. 7): K x (B x N x D)."""
        with self._timed("visual_modules"):
            stages = self.stage_projection(vision.stage_tokens)
            stages = self.adapter(stages) if self.adapter is not None else [F.normalize(s, dim=-1) for s in stages]
            return self.sem(stages) if self.sem is not None else stages

    def class_text_features(self, class_names: Sequence[str]) -> torch.Tensor:
        """B x K x 2 x D text features of each image's class (stage prompts + ensemble).

        Without gradient the features of a class are cached; the cache is keyed by the version
        counters of the prompt vectors and the text encoder, so it is dropped whenever they change.
        """
        unique = list(dict.fromkeys(class_names))
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.prompt_learner.parameters()):
            with self._timed("class_text"):
                features = self.prompt_learner(self.encoder, self.text_tokenizer, unique)
        else:
            features = torch.stack([self._cached_class_text(name) for name in unique])
        index = torch.tensor([unique.index(name) for name in class_names], device=features.device)
        return features[index]

    def _cached_class_text(self, class_name: str) -> torch.Tensor:
        key = (class_name, self.device, self.dtype, parameter_version(self.prompt_learner),
               parameter_version(self.encoder))
        cached = self._class_text_cache.get(key)
        if cached is None:
            with self._timed("class_text"), torch.no_grad():
                cached = self.prompt_learner(self.encoder, self.text_tokenizer, [class_name])[0]
            self._class_text_cache = {k: v for k, v in self._class_text_cache.items() if k[1:] == key[1:]}
            self._class_text_cache[key] = cached
        return cached

    def anomaly_maps(self, features: list[torch.Tensor], text: torch.Tensor) -> _Pass:
        with self._timed("maps"):
            logits = self.map_head.logits(features, text)
            stage_maps = self.map_head.probabilities(logits)
            return _Pass(logits=logits, stage_maps=stage_maps, anomaly_map=self.map_head.combine(stage_maps))

    def map_tokens(self, stage_maps: torch.Tensor) -> torch.Tensor | None:
        """PEM tokens B x Kg x H for the LLM (None when PEM is switched off)."""
        if self.pem is None:
            return None
        with self._timed("pem"):
            return self.pem(stage_maps.to(self.dtype))

    def image_tokens(self, vision: VisionFeatures) -> torch.Tensor:
        """llama_proj(g): B x 1 x H."""
        return self.llama_proj(vision.image_embedding.to(self.dtype))[:, None]

    def _conversations(self, image_tokens: torch.Tensor, map_tokens: torch.Tensor | None,
                       descriptions: Sequence[str], turns: Sequence[list[tuple[str, str | None]]]) -> list[list]:
        return [conversation_segments(image_tokens[b], None if map_tokens is None else map_tokens[b],
                                      descriptions[b], list(turns[b])) for b in range(image_tokens.shape[0])]

    def respond(self, image_tokens: torch.Tensor, map_tokens: torch.Tensor | None, descriptions: Sequence[str],
                turns: Sequence[list[tuple[str, str | None]]] | None = None, max_new_tokens: int | None = None) -> list[str]:
        """Generate one answer per image (greedy unless the config samples)."""
        if turns is None:
            turns = [[(QUESTION, None)] for _ in descriptions]
        builder = PromptBuilder(self.llm_tokenizer, self.llm.get_input_embeddings())
        with self._timed("llm_prompt"), torch.no_grad():
            inputs = builder.build(self._conversations(image_tokens, map_tokens, descriptions, turns), padding_side="left")
        config = self.config
        limit = max_new_tokens or config.max_new_tokens
        settings = GenerationConfig(max_new_tokens=limit, min_new_tokens=min(config.min_new_tokens, limit),
                                    do_sample=config.do_sample, temperature=config.temperature, top_p=config.top_p)
        with self._llm_eval():
            return generate(self.llm, self.llm_tokenizer, inputs, settings, timer=self.timer)

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
            return self.encoder.encode_text(ids).view(len(responses), 2, -1)

    def refine_text(self, text: torch.Tensor, response_features: torch.Tensor) -> torch.Tensor:
        """Algorithm 1, line 9: t' = norm(t + t_res) ("add") or t_res ("replace"); B x K x 2 x D."""
        response = response_features[:, None].to(text.dtype).expand_as(text)
        if self.config.si_fusion == "replace":
            return response
        return F.normalize(text + response, dim=-1)

    def _passes(self, vision: VisionFeatures, class_names: Sequence[str], descriptions: Sequence[str],
                chat: bool, self_improve: bool) -> tuple[_Pass, list[str] | None, _Pass, list[str] | None]:
        """Algorithm 1: pass 1 (M, R), then pass 2 (M', R') from the same visual features."""
        features = self.visual_features(vision)
        text = self.class_text_features(class_names)
        first = self.anomaly_maps(features, text)
        if not chat:
            return first, None, first, None
        image_tokens = self.image_tokens(vision)
        # R feeds the text encoder, which reads at most 77 tokens: longer generation is wasted.
        cap = min(self.config.max_new_tokens, self.config.text_context_length)
        response = self.respond(image_tokens, self.map_tokens(first.stage_maps), descriptions, max_new_tokens=cap)
        if not (self_improve and self.config.use_self_improvement):
            return first, response, first, response
        refined_text = self.refine_text(text, self.response_text_features(response))
        second = self.anomaly_maps(features, refined_text)
        refined = self.respond(image_tokens, self.map_tokens(second.stage_maps), descriptions)
        return first, response, second, refined

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict[str, Any]) -> SIADOutput:
        """Training losses for a batch (see `siad.data.collate_pairs`):
        images B x 3 x S x S (uint8, or float normalised), masks B x S x S, class_names, descriptions,
        answers (target texts). Returns the total loss and its parts (focal, dice, lm) over both passes.
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
        passes = [self.anomaly_maps(features, text)]
        if config.use_self_improvement:
            if config.si_train_response == "generated":
                with torch.no_grad():
                    cap = min(config.max_new_tokens, config.text_context_length)
                    tokens = self.map_tokens(passes[0].stage_maps)
                    responses = self.respond(image_tokens.detach(), None if tokens is None else tokens.detach(),
                                             descriptions, max_new_tokens=cap)
            else:
                responses = answers
            refined_text = self.refine_text(text, self.response_text_features(responses))
            passes.append(self.anomaly_maps(features, refined_text))
        zero = torch.zeros((), device=self.device)
        focal, dice, lm = zero, zero, zero
        builder = PromptBuilder(self.llm_tokenizer, self.llm.get_input_embeddings())
        for one in passes:
            for k in range(one.stage_maps.shape[1]):
                focal = focal + focal_loss(one.logits[:, k], masks, config.focal_gamma)
                dice = dice + dice_loss(one.stage_maps[:, k], masks)
            turns = [[(QUESTION, None)] for _ in class_names]
            inputs = builder.build(self._conversations(image_tokens, self.map_tokens(one.stage_maps), descriptions,
                                                       turns), targets=answers, padding_side="right")
            with self._timed("llm_train"):
                out = self.llm(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                               labels=inputs.labels)
            lm = lm + out.loss.float()
        total = config.focal_weight * focal + config.dice_weight * dice + config.lm_weight * lm
        return SIADOutput(loss=total, focal=focal, dice=dice, lm=lm)

    # ------------------------------------------------------------------ inference
    def _scores(self, maps: torch.Tensor, sigma: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.map_head.smooth(maps, self.config.score_smoothing_sigma if sigma is None else sigma)
        return maps, self.map_head.score(maps)

    @torch.no_grad()
    def detect(self, images: ImageInput | Sequence[ImageInput], class_names: str | Sequence[str],
               descriptions: str | Sequence[str] | None = None, chat: bool = True, self_improve: bool = True,
               batch_size: int = 8, progress: bool = False,
               score_smoothing_sigma: float | None = None) -> list[DetectionResult]:
        """Detect anomalies: one `DetectionResult` per image.

        images: paths, PIL images or numpy arrays (any mode, any size); class_names: one per image
        (or a single string for all); descriptions: default from the paper's tables (generic for unknown classes).
        chat=False: no LLM runs at all (map and score of pass 1). self_improve=False: pass 1 only.
        score_smoothing_sigma: Gaussian sigma on the maps before scoring, for this call (None: the config's;
        the verdict still compares the score with the config's threshold).
        """
        if score_smoothing_sigma is not None and not score_smoothing_sigma >= 0:
            raise ValueError(f"score_smoothing_sigma must be >= 0, got {score_smoothing_sigma!r}")
        images_list, names, descs = detection_inputs(images, class_names, descriptions)
        descs = [d or describe(n) for d, n in zip(descs, names)]
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        results: list[DetectionResult] = []
        starts = range(0, len(images_list), batch_size)
        if progress and len(images_list) > batch_size:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc="detect", unit="batch")
        for start in starts:
            chunk = slice(start, start + batch_size)
            results.extend(self._detect_batch(images_list[chunk], names[chunk], descs[chunk], chat, self_improve,
                                              score_smoothing_sigma))
        return results

    def _detect_batch(self, images: list, names: list[str], descs: list[str], chat: bool,
                      self_improve: bool, sigma: float | None = None) -> list[DetectionResult]:
        with self._timed("preprocess"):
            pixels, sizes = self.prepare_images(images)
        vision = self.encode_images(pixels)
        first, response, second, refined = self._passes(vision, names, descs, chat, self_improve)
        maps1, scores1 = self._scores(first.anomaly_map, sigma)
        maps2, scores2 = (maps1, scores1) if second is first else self._scores(second.anomaly_map, sigma)
        results = []
        with self._timed("postprocess"):
            mode, cap = self.config.resize_mode, self.config.max_map_pixels
            for b, size in enumerate(sizes):
                initial_map = map_to_original(maps1[b], size, mode, cap)
                final_map = initial_map if second is first else map_to_original(maps2[b], size, mode, cap)
                score = float(scores2[b])
                results.append(DetectionResult(
                    anomaly_map=final_map, score=score, answer=None if refined is None else refined[b],
                    initial_map=initial_map, initial_score=float(scores1[b]),
                    initial_answer=None if response is None else response[b],
                    is_anomalous=score >= self.config.threshold, class_name=names[b]))
        return results

    @torch.no_grad()
    def chat(self, image: ImageInput, class_name: str, history: Conversation | None, message: str,
             description: str | None = None, self_improve: bool = True) -> str:
        """A follow-up answer about the same image, grounded in its image token and (refined) map.

        history: earlier turns, as Gradio-style messages ({"role": "user"|"assistant", "content": ...})
        or (question, answer) pairs; message: the new question.
        """
        name = _check_class_name(class_name)
        if not isinstance(message, str) or not message.strip():
            raise ValueError("the message is empty")
        desc = description if description and description.strip() else describe(name)
        turns = _history_turns(history) + [(message.strip(), None)]
        pixels, _ = self.prepare_images([image])
        vision = self.encode_images(pixels)
        _, _, final, _ = self._passes(vision, [name], [desc], chat=True, self_improve=self_improve)
        return self.respond(self.image_tokens(vision), self.map_tokens(final.stage_maps), [desc], [turns])[0]


def detection_inputs(images: Any, class_names: Any, descriptions: Any = None
                     ) -> tuple[list, list[str], list[str]]:
    """The arguments of `detect` as three lists of one entry per image.

    One image may be given alone; a single class name or description given as a plain string applies
    to every image; lists must have one entry per image. Class names are checked and their whitespace
    normalised; a missing or blank description is returned as "".
    """
    items = list(images) if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ValueError("images is empty")
    names = _per_image(class_names, len(items), "class_names")
    descs = _per_image("" if descriptions is None else descriptions, len(items), "descriptions")
    for desc in descs:
        if desc is not None and not isinstance(desc, str):
            raise ValueError(f"a description must be a string, got {type(desc).__name__}")
    return items, [_check_class_name(n) for n in names], [(d or "").strip() for d in descs]


def _per_image(value: Any, count: int, name: str) -> list:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        return [value] * count
    if len(value) != count:
        entries = "1 entry" if len(value) == 1 else f"{len(value)} entries"
        raise ValueError(f"{name} has {entries} for {count} images; give one per image "
                         "(or a single string for all)")
    return list(value)


def _check_class_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"the class name must be a non-empty string, got {name!r}")
    return " ".join(name.split())


def _message_text(content: Any) -> str:
    """The text of a chat message's content: a string, or Gradio's list of parts ({"type": "text", ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, (list, tuple)):
        return " ".join(_message_text(part) for part in content if not isinstance(part, dict)
                        or part.get("type", "text") == "text").strip()
    return "" if content is None else str(content)


def _history_turns(history: Conversation | None) -> list[tuple[str, str | None]]:
    """Gradio messages or (question, answer) pairs -> (question, answer) pairs."""
    turns: list[tuple[str, str | None]] = []
    if not history:
        return turns
    pending: str | None = None
    for item in history:
        if isinstance(item, dict):
            role, text = item.get("role"), _message_text(item.get("content"))
            if role == "user":
                if pending is not None:
                    turns.append((pending, ""))
                pending = text
            elif role == "assistant":
                turns.append((pending if pending is not None else QUESTION, text))
                pending = None
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            turns.append((str(item[0]), None if item[1] is None else str(item[1])))
        else:
            raise ValueError(f"history items must be messages or (question, answer) pairs, got {item!r}")
    if pending is not None:
        turns.append((pending, ""))
    return turns
