"""SIAD-LLM, the Gradio app (and the Hugging Face Space entry point).

    python app.py [--model FOLDER_OR_HUB_ID] [--device cpu|cuda] [--dtype float32|bfloat16]
                  [--host 127.0.0.1] [--port 7860] [--share] [--concurrency 1]

Upload an image, name its class (suggestions come from the nine datasets of the paper; the class
description is filled in from the paper's tables and can be edited), press Detect: the anomaly map
over the image with its colour scale, the score and the verdict, the LLM's first answer and its
refined (self-improved) answer, and the pass-1 and pass-2 maps side by side. Then ask follow-up
questions about the same image.

Optional "Normal references" (few-shot, beyond the paper): a few good images of the same class. The
session keeps one reference bank per class (built once from the uploaded files, reused while they stay
the same; at most `AppLimits.max_reference_classes` classes, `max_references` images each); the maps of
both passes are then fused with the reference maps and the summary says "k-shot (k references)", else
"zero-shot". Choosing another class shows the references kept for it (or clears those of another class).
Follow-up questions use the same references.

The model comes from --model, else the SIAD_MODEL environment variable, else the bundled
checkpoints/siad-mini. The Detect event is also an API (api_name="detect"; inputs: image, class
name, description and, optionally, references: a list of normal images, default none), for
gradio_client and scripts.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from siad.detection import normalise_class_name  # numpy only: nothing touches torch or CUDA before `spaces`

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = HERE / "checkpoints" / "siad-mini"
EXAMPLES_DIR = HERE / "examples" / "images"
EXAMPLES = [("gear_missing.png", "gear"), ("gear_good.png", "gear"), ("capsule_stain.png", "capsule"),
            ("capsule_good.png", "capsule"), ("connector_crack.png", "connector"), ("wood_scratch.png", "wood"),
            ("gravel_hole.png", "gravel"), ("bracket_contamination.png", "bracket"),
            ("brick_wall_crack.png", "brick_wall"), ("brick_wall_good.png", "brick_wall")]
IMAGEBIND_PIN = "imagebind-unofficial==0.1.1"
APP_MODULES = ("gradio", "matplotlib")  # the [app] extra beyond the library (matplotlib: the colour bar)


def ensure_app_extra() -> None:
    """Stop with the command to run, not a traceback, when the app's own packages are missing (the
    library installs without them: `pip install .`)."""
    missing = [name for name in APP_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise SystemExit(f"The app needs {' and '.join(missing)}, which the library leaves out: "
                         'pip install "siad-llm[app]" (or pip install -r requirements.txt)')


def ensure_imagebind() -> None:
    """ImageBind's model code must be installed with --no-deps (its declared dependencies do not
    install with current torch). On a Space, where requirements.txt cannot say --no-deps, install it
    here; elsewhere say what to run."""
    if importlib.util.find_spec("imagebind") is not None:
        return
    if os.environ.get("SPACE_ID"):
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", IMAGEBIND_PIN], check=True)
        return
    raise SystemExit(f"ImageBind's model code is missing: pip install --no-deps {IMAGEBIND_PIN}")


def on_zero_gpu() -> bool:
    """True on a Hugging Face ZeroGPU Space (the platform sets SPACES_ZERO_GPU)."""
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "t", "true")


def gpu_seconds(max_new_tokens: int, generations: int) -> int:
    """The ZeroGPU time to reserve for one request: 10 s for the encoder, the maps and the prompt
    prefill, plus 0.1 s for every token the LLM may generate (`generations` answers of at most
    `max_new_tokens` tokens; a 7B LM in bf16 decodes a token in a few tens of milliseconds on a ZeroGPU
    slice, so this leaves room for the first call's transfer of the weights to the GPU). Detect runs
    two generations (R and R'), a follow-up one."""
    return int(math.ceil(10 + 0.1 * generations * max_new_tokens))


def gpu_decorator(seconds: int) -> Callable[[Callable], Callable]:
    """`spaces.GPU(duration=seconds)` on a ZeroGPU Space, a no-op elsewhere."""
    if on_zero_gpu():
        import spaces

        return spaces.GPU(duration=seconds)
    return lambda fn: fn


@dataclass(frozen=True)
class AppLimits:
    """What the app accepts: upload size, text lengths (in characters; the model caps them again in
    tokens), normal references (images per class, classes whose bank a session keeps) and how long
    uploads and result pictures stay in Gradio's cache; `generation_seconds` bounds each answer's
    generation in time (transformers' max_time), so that no request holds the queue for long."""

    max_file_size: str = "50mb"
    generation_seconds: float = 60.0
    max_class_name_chars: int = 200
    max_description_chars: int = 2000
    max_message_chars: int = 1000
    max_references: int = 16
    max_reference_classes: int = 4
    cache_max_age_s: int = 24 * 3600
    cache_sweep_every_s: int = 3600


@dataclass
class LoadedModel:
    model: Any
    source: str

    @property
    def label(self) -> str:
        source = Path(self.source)
        shown = source.resolve().relative_to(HERE) if source.is_dir() and source.resolve().is_relative_to(HERE) \
            else self.source
        return f"Model: `{shown}` on {self.model.device} ({str(self.model.dtype).replace('torch.', '')})"


def load_model(source: str, device: str, dtype_name: str) -> LoadedModel:
    """Load the model or stop with a message that names the source and what to do."""
    from siad import SIADModel
    from siad.baseline import parse_dtype

    dtype = parse_dtype(dtype_name)
    try:
        model = SIADModel.from_pretrained(source, dtype=dtype, device=device)
    except Exception as error:  # any failure: the app cannot start without its model
        hint = ("Give a saved SIAD model folder or a Hub id with --model or SIAD_MODEL; the default is the bundled "
                f"{DEFAULT_MODEL.relative_to(HERE)} (train it with `python train/train.py --config train/configs/mini.yaml`).")
        raise SystemExit(f"Cannot load the SIAD model from '{source}': {type(error).__name__}: {error}\n{hint}") from error
    model.eval()
    return LoadedModel(model=model, source=str(source))


def build_demo(loaded: LoadedModel, limits: AppLimits = AppLimits()) -> Any:
    """The Gradio Blocks of the app around a loaded model (launch it with `launch_options(limits)`)."""
    import gradio as gr

    from siad.image import load_rgb
    from siad.prompts import QUESTION, describe, known_classes
    from siad.visualize import colorize, fit_map, overlay_with_scale

    model = loaded.model
    tokens = int(model.generation_config.max_new_tokens)  # what generation uses (a folder's file may change it)
    if model.generation_config.max_time is None:  # a per-request bound, unless the model's folder sets one
        model.generation_config.max_time = limits.generation_seconds
    pictures = Path(gradio_cache_folder()) / "siad-pictures"

    def robust_image(**kwargs: Any) -> Any:
        """An image input that accepts only files uploaded into Gradio's cache (`guarded_upload`) and
        hands unreadable uploads to the model's own loader, which explains the problem, instead of
        failing inside Gradio's preprocessing. (The method is wrapped on this instance: a subclass of
        gr.Image would make Gradio write a .pyi stub next to this file.)"""
        component = gr.Image(**kwargs)
        preprocess = component.preprocess
        component.preprocess = lambda payload: guarded_upload(payload, preprocess, component.GRADIO_CACHE)
        return component

    def robust_files(**kwargs: Any) -> Any:
        """A multi-file input whose files must lie in Gradio's upload cache (`guarded_uploads`)."""
        component = gr.File(file_count="multiple", type="filepath", **kwargs)
        component.preprocess = lambda payload: guarded_uploads(payload, component.GRADIO_CACHE)
        return component

    def text(value: Any, what: str, limit: int) -> str:
        if value is not None and not isinstance(value, str):
            raise gr.Error(f"The {what} must be text.")
        if value is not None and len(value) > limit:
            raise gr.Error(f"The {what} is too long: at most {limit} characters.")
        return value or ""

    def check(image: str | None, class_name: str | None) -> str:
        if image is None:
            raise gr.Error("Upload an image first.")
        name = normalise_class_name(text(class_name, "class name", limits.max_class_name_chars))
        if not name:
            raise gr.Error("Type the class of the part (e.g. 'screw' or 'bottle').")
        return name

    def reference_bank(name: str, files: list[str] | None, session: dict) -> tuple[Any, dict]:
        """The bank of this class's uploaded normal references (None: zero-shot) and the kept banks,
        {class: {"key", "files", "bank"}}: a bank is built once per class and reused while the files'
        content is the same; the least recently used class is dropped beyond the limit."""
        kept = dict(session.get("references") or {})
        if not files:
            return None, kept
        if len(files) > limits.max_references:
            raise gr.Error(f"At most {limits.max_references} normal references.")
        key = files_key(files)
        entry = kept.pop(name, None)
        if entry is None or entry["key"] != key:
            try:
                entry = {"key": key, "files": list(files), "bank": model.build_references(files, name)}
            except ValueError as error:
                message = str(error)
                for path in files:
                    message = message.replace(str(path), Path(path).name)
                raise gr.Error(f"A normal reference cannot be used: {message}") from None
        kept[name] = entry  # the most recently used last
        while len(kept) > limits.max_reference_classes:
            kept.pop(next(iter(kept)))
        return entry["bank"], kept

    # How long an event waits for the turn of its session's conversation in progress (`session_turn`):
    # a follow-up may run the image's two passes and then its own answer, each bounded in time.
    turn_wait = 3 * limits.generation_seconds + 60.0

    @gpu_decorator(gpu_seconds(tokens, generations=2))
    def detect(image: str | None, class_name: str | None, description: str | None,
               references: list[str] | None = None, session: dict | None = None):
        name = check(image, class_name)
        description = text(description, "description", limits.max_description_chars)
        bank, kept = reference_bank(name, references, session or {})
        try:
            # decoded once, for the model and the display
            loaded_image = load_rgb(image, model.config.vision.max_input_side, model.config.vision.max_input_pixels)
            rgb = loaded_image.rgb
            result = model.detect([rgb], [name], [description], references=bank)[0]
        except ValueError as error:
            raise gr.Error(str(error).replace(f"'{image}'", "the uploaded file")) from None
        except FloatingPointError as error:
            raise gr.Error(f"The model cannot score this image: {error}") from None
        verdict = "ANOMALOUS" if result.is_anomalous else "normal"
        mode = "zero-shot" if bank is None else (
            f"{bank.mode} ({bank.num_shots} reference{'s' if bank.num_shots > 1 else ''})")
        upload_notes = [note.replace(f"'{image}'", "the uploaded file") for note in loaded_image.notes]
        summary = (f"### {verdict}\nscore **{result.score:.3f}** (pass 1: {result.initial_score:.3f}); "
                   f"threshold {model.config.map.threshold:.3f}; {mode}" + agreement_note(result)
                   + "".join(f"\n\n**Note:** {note}." for note in upload_notes))
        history = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": result.answer or ""}]
        shown = save_picture(overlay_with_scale(rgb, result.anomaly_map, title=f"{name}: score {result.score:.3f}"),
                             pictures)
        first = save_picture(colorize(fit_map(result.initial_map, *rgb.shape[:2])), pictures)
        second = save_picture(colorize(fit_map(result.anomaly_map, *rgb.shape[:2])), pictures)
        if session and "turns" in session:  # the conversation it replaces: after its turn in progress
            with session_turn(session, turn_wait):
                session["replaced"] = True
        session = new_session(image=image, class_name=name, description=description, history=history, bank=bank,
                              references=kept)
        return (shown, summary, result.initial_answer or "", result.answer or "", first, second, history, session)

    @gpu_decorator(gpu_seconds(tokens, generations=1))
    def follow_up(message: str, session: dict | None):
        """A follow-up turn, streamed into the chat; the conversation lives in the session state (the same
        for the UI and the API)."""
        if not session or "image" not in session:
            raise gr.Error("Run Detect on an image first, then ask about it.")
        message = text(message, "question", limits.max_message_chars)
        if not message.strip():
            raise gr.Error("Type a question.")
        with session_turn(session, turn_wait):  # one turn of a session at a time: none is lost
            if session.get("replaced"):
                raise gr.Error("A new detection replaced this conversation; ask again about the new image.")
            history = list(session["history"])
            try:  # the checks and the image's passes run here; the answer then streams in as it is generated
                stream = model.chat_stream(session["image"], session["class_name"], history, message,
                                           session["description"], references=session.get("bank"))
            except ValueError as error:
                raise gr.Error(str(error)) from None
            asked = history + [{"role": "user", "content": message.strip()}]
            answer = ""
            for answer in stream:
                yield asked + [{"role": "assistant", "content": answer}], "", session
            history = asked + [{"role": "assistant", "content": answer}]
            session["history"] = history  # in place: the next turn of this session reads it
            yield history, "", session

    def fill_description(class_name: str | None) -> str:
        name = normalise_class_name(class_name or "")
        return describe(name) if name else ""

    with gr.Blocks(title="SIAD-LLM", delete_cache=(limits.cache_sweep_every_s, limits.cache_max_age_s)) as demo:
        gr.Markdown("# SIAD-LLM: explainable anomaly detection with a self-improving language model\n"
                    "Upload a part (or a scan), name its class, press **Detect**. Trained on normal images only.")
        gr.Markdown(loaded.label, elem_id="model-line")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                image = robust_image(label="Image", type="filepath", image_mode=None, sources=["upload", "clipboard"])
                suggestions = sorted(set(known_classes()) | {name for _, name in EXAMPLES})
                class_name = gr.Dropdown(choices=suggestions, value=None, allow_custom_value=True,
                                         label="Class name", info="a class of the paper's datasets, or any name")
                description = gr.Textbox(label="Class description (editable)", lines=3,
                                         max_length=limits.max_description_chars)
                references = robust_files(label="Normal references (optional): good images of this class",
                                          file_types=["image"], elem_id="normal-references")
                button = gr.Button("Detect", variant="primary")
            with gr.Column(scale=1):
                heat = gr.Image(label="Anomaly map over the image", type="filepath", interactive=False)
                summary = gr.Markdown()
        with gr.Row():
            first_answer = gr.Textbox(label="Pass 1 answer (R)", interactive=False)
            refined_answer = gr.Textbox(label="Refined answer after self-improvement (R')", interactive=False)
        with gr.Row():
            first_map = gr.Image(label="Pass 1 map (M)", type="filepath", interactive=False)
            second_map = gr.Image(label="Pass 2 map, refined (M')", type="filepath", interactive=False)
        chatbot = gr.Chatbot(label="Ask about this image", height=300)
        with gr.Row():
            message = gr.Textbox(label="Follow-up question", scale=4, placeholder="Where is the defect?",
                                 max_length=limits.max_message_chars)
            send = gr.Button("Ask", scale=1)
        examples = [[str(EXAMPLES_DIR / f), c] for f, c in EXAMPLES if (EXAMPLES_DIR / f).is_file()]
        if examples:
            gr.Examples(examples=examples, inputs=[image, class_name], cache_examples=False,
                        label="Examples: SIAD-Synth classes and a real photograph, none seen in training")
        class_name.change(fill_description, inputs=class_name, outputs=description, api_name=False)
        class_name.change(references_for_class, inputs=[class_name, references, state], outputs=references,
                          api_name=False)
        button.click(detect, inputs=[image, class_name, description, references, state],
                     outputs=[heat, summary, first_answer, refined_answer, first_map, second_map, chatbot, state],
                     api_name="detect")
        send.click(follow_up, inputs=[message, state], outputs=[chatbot, message, state], api_name="chat")
        message.submit(follow_up, inputs=[message, state], outputs=[chatbot, message, state], api_name=False)
    return demo


def new_session(**fields: Any) -> dict:
    """A session's state after Detect: the image, class, description, conversation (`history`), the
    few-shot bank and the banks kept by class, and `turns`, the lock that serialises the session's
    events that read and write the conversation (`session_turn`)."""
    return {**fields, "turns": threading.Lock(), "replaced": False}


@contextmanager
def session_turn(session: dict, timeout: float) -> Iterator[None]:
    """Hold the session's turn: with `--concurrency` above 1, two follow-ups of one session would each
    read the same history and the last would drop the other's turn; a Detect would be overwritten by a
    follow-up of the image it replaces. Waits at most `timeout` seconds (then a gr.Error: the session is
    busy) so that a turn left unfinished can never block its session."""
    import gradio as gr

    lock = session["turns"]
    if not lock.acquire(timeout=timeout):
        raise gr.Error("Another question about this image is still being answered; ask again in a moment.")
    try:
        yield
    finally:
        lock.release()


def agreement_note(result: Any) -> str:
    """A line for the summary when the refined answer R' and the verdict of the score S' disagree (or
    the answer says neither yes nor no), so that the app never shows both without saying so."""
    from siad.prompts import answer_is_anomalous

    if result.answer is None:
        return ""
    says = answer_is_anomalous(result.answer)
    verdict = "anomalous" if result.is_anomalous else "normal"
    if says is None:
        return f"\n\n**Note:** the answer says neither yes nor no; the score says {verdict}."
    if says != result.is_anomalous:
        answer = "there is an anomaly" if says else "there is no anomaly"
        return f"\n\n**Note: the answer and the verdict disagree.** The answer says {answer}; the score says {verdict}."
    return ""


# One message for every file the app refuses to read: it never says whether a server path exists.
UPLOAD_REFUSED = "This image cannot be used. Upload the file again."


def guarded_upload(payload: Any, preprocess: Callable[[Any], Any], cache_folder: str | Path) -> str | None:
    """The path of an uploaded image, for the model's loader.

    Only regular files that resolve (symbolic links and `..` followed) inside Gradio's upload cache are
    accepted: a client can send `{"path": "/any/server/file"}` without Gradio's `meta` field, which
    Gradio passes through unchecked. Anything else raises `gr.Error(UPLOAD_REFUSED)`. Inline `data:`
    images are decoded by Gradio into the cache first. A file Gradio cannot preprocess goes to the
    model's loader, whose message says what is wrong with the upload.
    """
    import gradio as gr

    if payload is None:
        return None
    url = getattr(payload, "url", None)
    if isinstance(url, str) and url.startswith("data:"):
        try:
            resolved = _inside(preprocess(payload), cache_folder)
        except Exception:
            resolved = None
        if resolved is None:
            raise gr.Error(UPLOAD_REFUSED)
        return str(resolved)
    resolved = _inside(getattr(payload, "path", None), cache_folder)
    if resolved is None:
        raise gr.Error(UPLOAD_REFUSED)
    payload.path = str(resolved)
    try:
        return str(preprocess(payload))
    except Exception:  # not an image Gradio can open: the model's loader says why
        return str(resolved)


def guarded_uploads(payload: Any, cache_folder: str | Path) -> list[str]:
    """The paths of the files of a multi-file upload (Gradio's ListFiles, or one FileData), each a
    regular file that resolves inside Gradio's upload cache, as `guarded_upload` requires of an image;
    anything else raises `gr.Error(UPLOAD_REFUSED)`. No payload: an empty list."""
    import gradio as gr
    from gradio.data_classes import ListFiles

    if payload is None:
        return []
    files = list(payload.root) if isinstance(payload, ListFiles) else [payload]
    paths = []
    for item in files:
        resolved = _inside(getattr(item, "path", None), cache_folder)
        if resolved is None:
            raise gr.Error(UPLOAD_REFUSED)
        paths.append(str(resolved))
    return paths


def references_for_class(class_name: str | None, files: list[str] | None, session: dict | None) -> Any:
    """The references upload's new value when the class changes: the files this session keeps for the
    new class (while they are still in the cache), None (cleared) when the upload holds the references
    kept for another class, else `gr.skip()` (left as it is: e.g. references just uploaded for it)."""
    import gradio as gr

    name = normalise_class_name(class_name or "")
    kept = (session or {}).get("references") or {}
    entry = kept.get(name)
    if entry is not None and all(Path(p).is_file() for p in entry["files"]):
        return list(entry["files"])
    if files and any(other != name and e["key"] == files_key(files) for other, e in kept.items()):
        return None
    return gr.skip()


def files_key(paths: list[str]) -> str:
    """A key of the content of some files, whatever their order or names (SHA-256 of their SHA-256s)."""
    import hashlib

    digests = []
    for path in paths:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests.append(digest.hexdigest())
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()


def _inside(path: Any, folder: str | Path) -> Path | None:
    """`path` resolved, when it is a regular file inside `folder` (resolved too); else None."""
    if not isinstance(path, (str, os.PathLike)) or not str(path) or "\x00" in str(path):
        return None
    try:
        resolved = Path(os.path.realpath(path))
        root = Path(os.path.realpath(folder))
        return resolved if resolved.is_relative_to(root) and resolved != root and resolved.is_file() else None
    except (OSError, ValueError):
        return None


def gradio_cache_folder() -> str:
    """Gradio's cache folder (GRADIO_TEMP_DIR, else <tmp>/gradio): files there are served as they are."""
    from gradio.utils import get_upload_folder

    return get_upload_folder()


def save_picture(picture: Any, folder: Path) -> str:
    """An RGB uint8 picture as a PNG file named by its content, written once and atomically.

    Gradio saves a numpy output to a content-named file by rewriting it in place on every request, so
    two requests with the same result (the same image sent twice at once) could truncate a file while
    it is being downloaded. Here an existing file is never rewritten, and a new one appears whole
    (written under a temporary name, then renamed). Reusing a file restarts its age, so that the
    cache sweep (`AppLimits.cache_max_age_s`) never deletes a picture a request has just returned.
    """
    import hashlib
    import io
    import tempfile

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    data = buffer.getvalue()
    target = folder / hashlib.sha256(data).hexdigest() / "picture.png"
    try:
        os.utime(target)  # reused: young again for the sweep (it ages files by their ctime)
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(dir=target.parent, prefix=".picture.", suffix=".png")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(staging, target)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
    return str(target)


def launch_options(limits: AppLimits) -> dict[str, Any]:
    """The `demo.launch` settings that enforce the limits (the upload size; the cache age is set on the Blocks)."""
    return {"max_file_size": limits.max_file_size, "show_error": True}


def parse_args(argv: list[str] | None = None, zero_gpu: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("SIAD_MODEL", str(DEFAULT_MODEL)),
                        help="saved SIAD model folder or Hub id (default: $SIAD_MODEL or the bundled siad-mini)")
    parser.add_argument("--device", default=None, help="default: cuda on a GPU or a ZeroGPU Space, else cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--concurrency", type=int, default=1, help="detections running at once (queue beyond)")
    parser.add_argument("--max-file-size", default=AppLimits.max_file_size,
                        help="largest accepted upload, e.g. 50mb (default %(default)s)")
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if zero_gpu or _cuda_available() else "cpu"
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    return args


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def start(argv: list[str] | None = None) -> tuple[Any, argparse.Namespace, AppLimits]:
    """Everything before launching: on ZeroGPU `spaces` is imported FIRST (before anything asks torch
    about CUDA) and the model is loaded onto "cuda" at start, as ZeroGPU expects; the GPU functions are
    decorated with `spaces.GPU(duration=...)` in `build_demo`."""
    zero_gpu = on_zero_gpu()
    if zero_gpu:
        import spaces  # noqa: F401  (must come before torch touches CUDA)
    ensure_app_extra()
    ensure_imagebind()
    args = parse_args(argv, zero_gpu=zero_gpu)
    if os.environ.get("SPACE_ID"):
        args.host = "0.0.0.0"
    loaded = load_model(args.model, args.device, args.dtype)
    print(loaded.label.replace("`", ""), flush=True)
    limits = AppLimits(max_file_size=args.max_file_size)
    demo = build_demo(loaded, limits)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=256)
    return demo, args, limits


def main(argv: list[str] | None = None) -> None:
    demo, args, limits = start(argv)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_options(limits))


if __name__ == "__main__":
    main()
