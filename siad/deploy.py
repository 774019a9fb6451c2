"""Run an exported SIAD detector without PyTorch: numpy, Pillow and onnxruntime (or OpenVINO) only.

`siad export` (`siad.export`) writes pass 1 of a model for one class, map and score, as one ONNX graph:
uint8 RGB images B x S x S x 3 (S = the model's input size, B dynamic) -> `anomaly_map` B x S x S and
`score` B, with the class's text features, the self-reference and, when exported with references, the
few-shot bank inside. Its metadata (`ExportInfo`) names the class, the mode, the input size, the
normalisation, the threshold, the model's fingerprint, the siad version and the whole model config.

`ExportedDetector(path)` loads such a file (`.onnx` with onnxruntime; `.xml`, its OpenVINO IR, with
OpenVINO) and `detect(images)` gives the `DetectionResult`s of `SIADModel.detect(images, name,
chat=False)`: the images are read and resized by `siad.image` (`encoder_inputs`: EXIF orientation,
pixel budget, modes, downscaling to max_input_side, bicubic squash or centre crop) and the maps brought
back to each image's size (`map_to_original`), the very code the model runs, which imports no torch.
`run(pixels)` is the graph alone on a prepared uint8 batch.

Refused or warned about when a file is loaded: a file without SIAD metadata, one written in a newer
export format (refused: upgrade siad), one whose graph input does not take the S x S x 3 images its
metadata says (refused), one exported by another siad version (a warning naming both versions).

Importing this module imports no torch (a test checks it); onnxruntime or openvino are imported when a
file is loaded.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from siad import __version__
from siad.config import SIADConfig
from siad.detection import (DetectionResult, batch_results, check_finite_maps, detect_arguments, detect_in_batches,
                            normalise_class_name, shot_mode)
from siad.image import ImageInput, PreparedImage, encoder_inputs

EXPORT_FORMAT = "siad-map-and-score"
EXPORT_FORMAT_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAMES = ("anomaly_map", "score")
METADATA_PREFIX = "siad."
ONNX_INSTALL_HINT = 'pip install onnxruntime (or "siad-llm[export]")'
OPENVINO_INSTALL_HINT = "pip install openvino"


@dataclass(frozen=True)
class ExportInfo:
    """What an exported file says about itself (its metadata, each key prefixed "siad.").

    class_name: the class whose text features the graph holds; num_shots: the few-shot references
    inside it (0: zero-shot); config: the model's `SIADConfig` (input size, normalisation, resize mode,
    input and map limits, threshold); model_fingerprint: `siad.references.model_fingerprint(model,
    "visual")` of the exported model; text_sha256: SHA-256 of the class's text features;
    bank_fingerprint, bank_sha256: the bank's fingerprint and content digest ("" without one);
    siad_version: the siad that wrote it; format_version: `EXPORT_FORMAT_VERSION` of its writer.
    """

    class_name: str
    num_shots: int
    config: SIADConfig
    model_fingerprint: str
    text_sha256: str
    bank_fingerprint: str = ""
    bank_sha256: str = ""
    siad_version: str = __version__
    format_version: int = EXPORT_FORMAT_VERSION

    @property
    def mode(self) -> str:
        """"zero-shot" or "k-shot"."""
        return shot_mode(self.num_shots)

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    @property
    def threshold(self) -> float:
        return self.config.map.threshold

    def to_metadata(self) -> dict[str, str]:
        """The file's metadata: readable keys for other runtimes (class, mode, input, normalisation,
        threshold, fingerprints, versions) and the whole config as JSON (what this runtime reads)."""
        vision = self.config.vision
        fields: dict[str, Any] = {
            "format": EXPORT_FORMAT, "format_version": self.format_version, "version": self.siad_version,
            "class_name": self.class_name, "mode": self.mode, "num_shots": self.num_shots,
            "input": f"{INPUT_NAME}: uint8 RGB, batch x {vision.image_size} x {vision.image_size} x 3",
            "outputs": f"{OUTPUT_NAMES[0]}: float32 batch x {vision.image_size} x {vision.image_size} in [0, 1]; "
                       f"{OUTPUT_NAMES[1]}: float32 batch (the maximum of the map)",
            "image_size": vision.image_size, "resize_mode": vision.resize_mode,
            "normalisation": f"(pixel / 255 - mean) / std, mean {list(vision.image_mean)}, std {list(vision.image_std)}",
            "image_mean": json.dumps(list(vision.image_mean)), "image_std": json.dumps(list(vision.image_std)),
            "threshold": repr(self.threshold), "score_smoothing_sigma": repr(self.config.map.score_smoothing_sigma),
            "model_fingerprint": self.model_fingerprint, "text_sha256": self.text_sha256,
            "bank_fingerprint": self.bank_fingerprint, "bank_sha256": self.bank_sha256,
            "config": self.config.to_json_string(),
        }
        return {METADATA_PREFIX + key: str(value) for key, value in fields.items()}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source: str = "the file") -> "ExportInfo":
        """Read a file's metadata. A file without SIAD metadata or of a newer export format is a
        ValueError; one written by another siad version loads with a warning naming both versions."""
        meta = {k[len(METADATA_PREFIX):]: v for k, v in metadata.items() if k.startswith(METADATA_PREFIX)}
        if meta.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{source} is not a SIAD export (its metadata has no {METADATA_PREFIX}format = "
                             f"{EXPORT_FORMAT!r}); export a model with: siad export --model FOLDER --class NAME --out FILE")
        try:
            version = int(meta.get("format_version", ""))
            num_shots = int(meta.get("num_shots", "0"))
        except ValueError:
            raise ValueError(f"{source}: {METADATA_PREFIX}format_version and {METADATA_PREFIX}num_shots must be integers, "
                             f"got {meta.get('format_version')!r} and {meta.get('num_shots')!r}") from None
        if version > EXPORT_FORMAT_VERSION:
            raise ValueError(f"{source} was exported by siad {meta.get('version', '?')} in export format {version}; this "
                             f"siad ({__version__}) reads format {EXPORT_FORMAT_VERSION} and older: upgrade siad")
        missing = [k for k in ("version", "class_name", "num_shots", "config", "model_fingerprint") if k not in meta]
        if missing:
            raise ValueError(f"{source}: the SIAD metadata lacks {[METADATA_PREFIX + k for k in missing]}")
        written_by = meta["version"]
        if written_by != __version__:
            warnings.warn(f"{source} was exported by siad {written_by}; this is siad {__version__}. The graph runs as "
                          f"exported, but image preparation is this version's: export the model again with this "
                          f"version if its results must match SIADModel.detect here", UserWarning, stacklevel=3)
        config = SIADConfig.from_json_string(meta["config"], source=f"{source} ({METADATA_PREFIX}config)")
        return cls(class_name=meta["class_name"], num_shots=num_shots, config=config,
                   model_fingerprint=meta["model_fingerprint"], text_sha256=meta.get("text_sha256", ""),
                   bank_fingerprint=meta.get("bank_fingerprint", ""), bank_sha256=meta.get("bank_sha256", ""),
                   siad_version=written_by, format_version=version)


class _OnnxRuntimeGraph:
    """An exported .onnx file in an onnxruntime session (CPU by default)."""

    def __init__(self, path: Path, threads: int | None, providers: Sequence[str] | None) -> None:
        try:
            import onnxruntime as ort  # deferred: the optional extra [export] (or onnxruntime alone)
        except ImportError as error:
            raise ImportError(f"running {path} needs onnxruntime: {ONNX_INSTALL_HINT}") from error
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as error:  # onnxruntime's own exception types: not a model, unsupported opset, ...
            raise ValueError(f"{path} cannot be loaded by onnxruntime: {error}") from error
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.input_shape = tuple(inputs[0].shape) if inputs else ()
        self.input_type = inputs[0].type if inputs else ""
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: pixels})
        return maps, scores


class _OpenVINOGraph:
    """An exported graph converted to OpenVINO IR (.xml + .bin, `siad export --openvino`), compiled for
    the CPU; its metadata is in the IR's rt_info under "siad"."""

    def __init__(self, path: Path, threads: int | None) -> None:
        try:
            import openvino as ov  # deferred: the optional extra [openvino]
        except ImportError as error:
            raise ImportError(f"running {path} needs OpenVINO: {OPENVINO_INSTALL_HINT}") from error
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as error:  # OpenVINO's own exception types
            raise ValueError(f"{path} cannot be read by OpenVINO: {error}") from error
        section = model.get_rt_info()["siad"] if model.has_rt_info(["siad"]) else {}
        self.metadata = {METADATA_PREFIX + key: value.astype(str) for key, value in dict(section).items()}
        config = {"INFERENCE_NUM_THREADS": threads} if threads is not None else {}
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", **config})
        self.input_names = [i.get_any_name() for i in model.inputs]
        first = model.inputs[0] if model.inputs else None
        self.input_shape = tuple(d.get_length() if d.is_static else "batch" for d in first.get_partial_shape()) \
            if first is not None else ()
        self.input_type = "tensor(uint8)" if first is not None and first.get_element_type() == ov.Type.u8 else \
            str(first.get_element_type()) if first is not None else ""
        self.output_names = [o.get_any_name() for o in model.outputs]

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.compiled(pixels)
        return (np.asarray(result[self.compiled.output(OUTPUT_NAMES[0])]),
                np.asarray(result[self.compiled.output(OUTPUT_NAMES[1])]))


class ExportedDetector:
    """An exported SIAD graph (see the module docstring) with the model's image preparation around it.

    path: a `.onnx` file (onnxruntime) or its OpenVINO IR `.xml` (OpenVINO); threads: the runtime's
    intra-op threads (None: its default, every core); providers: onnxruntime's execution providers
    (default CPU). `detect` mirrors `SIADModel.detect(..., chat=False)`; `config`, `class_name`, `mode`,
    `threshold` and `info` describe the file.
    """

    device = "cpu"

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no exported model at {self.path}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        self.graph = (_OpenVINOGraph(self.path, threads) if self.path.suffix.lower() == ".xml"
                      else _OnnxRuntimeGraph(self.path, threads, providers))
        self.info = ExportInfo.from_metadata(self.graph.metadata, source=str(self.path))
        self._check_signature()

    def _check_signature(self) -> None:
        side = self.info.image_size
        expected = (side, side, 3)
        if self.graph.input_names != [INPUT_NAME] or list(self.graph.output_names) != list(OUTPUT_NAMES):
            raise ValueError(f"{self.path}: the graph's inputs {self.graph.input_names} and outputs "
                             f"{self.graph.output_names} are not a SIAD export's [{INPUT_NAME!r}] and {list(OUTPUT_NAMES)}")
        if len(self.graph.input_shape) != 4 or tuple(self.graph.input_shape[1:]) != expected:
            raise ValueError(f"{self.path}: its metadata says {side} x {side} input images, but the graph takes "
                             f"{list(self.graph.input_shape)} (expected [batch, {side}, {side}, 3]): the file was "
                             "changed after export")
        if self.graph.input_type != "tensor(uint8)":
            raise ValueError(f"{self.path}: the graph takes {self.graph.input_type}, not uint8 images")

    # ------------------------------------------------------------------ description
    @property
    def config(self) -> SIADConfig:
        return self.info.config

    @property
    def class_name(self) -> str:
        return self.info.class_name

    @property
    def mode(self) -> str:
        return self.info.mode

    @property
    def threshold(self) -> float:
        return self.info.threshold

    def __repr__(self) -> str:
        side = self.info.image_size
        return (f"ExportedDetector({str(self.path)!r}: class {self.class_name!r}, {self.mode}, {side} x {side} input, "
                f"threshold {self.threshold})")

    # ------------------------------------------------------------------ inference
    def run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph on a prepared batch: uint8 B x S x S x 3 (`siad.image.encoder_inputs`) -> maps
        B x S x S float32 and scores B float32. A batch of another size or type is a ValueError saying
        what the file takes; non-finite maps a FloatingPointError (never a score)."""
        side = self.info.image_size
        array = np.asarray(pixels)
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (side, side, 3) or array.shape[0] < 1:
            raise ValueError(f"{self.path} takes uint8 RGB batches of shape (batch, {side}, {side}, 3) (exported for "
                             f"{side} x {side} input), got {array.dtype} {array.shape}; give images to detect() to "
                             "have them prepared")
        maps, scores = self.graph(np.ascontiguousarray(array))
        check_finite_maps(maps)
        return maps, scores

    def detect(self, images: ImageInput | PreparedImage | Sequence[ImageInput | PreparedImage],
               class_names: str | Sequence[str] | None = None, *, batch_size: int = 8, chat: bool = False,
               self_improve: bool = False, descriptions: str | Sequence[str] | None = None,
               references: Any = None) -> list[DetectionResult]:
        """`SIADModel.detect(images, class_names, chat=False)` on the exported graph: one `DetectionResult`
        per image (maps at the images' own sizes, pass 1 only, no answers; `mode` is the file's).

        class_names: default the file's class; any other class is a ValueError (export once per
        class). chat=True and references are ValueErrors (the graph has no language model; its
        references, if any, are inside it); self_improve and descriptions change nothing without chat
        (accepted so that the same calls work on both detectors). Unreadable images raise ValueError
        as `SIADModel.detect` does."""
        if chat:
            raise ValueError("an exported graph has no language model: it gives the map and score of pass 1 "
                             "(chat=False); run SIADModel.detect for answers")
        if references is not None:
            raise ValueError(f"references cannot be given to an exported graph: {self.path} is {self.mode}, and a "
                             "bank goes into the graph when it is exported (siad export --references ...)")
        items, names, _ = detect_arguments(images, self.class_name if class_names is None else class_names,
                                           descriptions, batch_size=batch_size, score_smoothing_sigma=None)
        for name in dict.fromkeys(names):
            if name != normalise_class_name(self.class_name):
                raise ValueError(f"{self.path} was exported for class {self.class_name!r}, not {name!r}: export the "
                                 "model once per class (siad export --class NAME)")

        def detect_batch(chunk: slice) -> list[DetectionResult]:
            pixels, sizes = encoder_inputs(items[chunk], self.config)
            maps, scores = self.run(pixels)
            return batch_results(self.config, sizes, names[chunk], [self.mode] * len(sizes), maps, scores)

        return detect_in_batches(len(items), batch_size, detect_batch)
