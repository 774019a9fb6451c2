"""Export a SIAD model's map and score for one class to ONNX (and OpenVINO IR), for inference without PyTorch.

    siad export --model FOLDER --class NAME [--references DIR_OR_BANK ...] --out FILE.onnx [--openvino]
    python -m siad.export ...                                     (the same)

What is exported is pass 1 of `SIADModel.detect(images, NAME, chat=False)`, the map and score before
the maps go back to the images' sizes (`SIADModel.map_and_score`, the model's own code): the text side
of a known class is a constant and the language model is only needed for answers (pass 2 depends on
them). One graph: `images`, uint8 RGB B x S x S x 3 (S the model's input size, B dynamic) ->
`anomaly_map` B x S x S and `score` B, with

- the class's text features, computed once and stored as a constant;
- the normalisation, the backbone up to its last stage, the visual modules and the map head;
- the zero-shot self-reference (when the model has it on), computed inside the graph;
- with `--references` (normal images of the class, or a bank saved by `ReferenceBank.save`), the
  few-shot bank as a constant (k-shot), searched in one block.

The file's metadata (`siad.deploy.ExportInfo`) says the class, the mode, the input size, the
normalisation, the model's threshold, its fingerprint and the siad version, and holds the whole config.
`siad.deploy.ExportedDetector` runs it with numpy, Pillow and onnxruntime alone (`siad predict --onnx`).
After writing, the file is run once with onnxruntime on a random batch and compared with the model: a
difference above `CHECK_TOLERANCE` is an error (the file is removed).

`--openvino` also writes the graph as OpenVINO IR (`FILE.xml` + `FILE.bin`, float32 weights, the metadata
in its rt_info), which `ExportedDetector` runs with OpenVINO.

Errors: an operator that does not export (a backbone's, or a function's) is an `UnsupportedOperatorError`
naming the operator, the module it comes from and the source line; a model in another dtype or on
another device than float32 on the CPU, or a bank that does not serve the model or the class, a
ValueError. Export needs `onnx` and `onnxscript` (`pip install "siad-llm[export]"`).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import inspect
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

from siad.deploy import INPUT_NAME, OUTPUT_NAMES, ExportedDetector, ExportInfo
from siad.detection import check_class_name
from siad.model import SIADModel
from siad.predict import collect_images
from siad.reference_bank import ReferenceBank, bank_paths
from siad.references import check_bank, model_fingerprint

EXPORT_INSTALL_HINT = 'pip install "siad-llm[export]" (onnx, onnxscript, onnxruntime)'
# The export's own check refuses a graph whose maps or scores differ from the model's by more than this
# on its random check batch: a wrong graph differs by far more. (The tests hold the bundled model to
# 1e-4 on real images; siad-mini v2's maps on random noise differ by ~1e-4 between the model's own float32
# and float64 arithmetic, so a tighter check would refuse correct graphs of such a model.)
CHECK_TOLERANCE = 1e-3
EXAMPLE_BATCH = 2  # the batch size the graph is traced with (any batch size runs; 1 would be specialised)


class UnsupportedOperatorError(RuntimeError):
    """An operator of the model has no ONNX translation: the message names it, the module it comes from
    and the source line."""


class ExportMismatchError(RuntimeError):
    """The exported graph does not compute what the model computes (beyond `CHECK_TOLERANCE`)."""


class MapAndScoreGraph(nn.Module):
    """The exported module: `SIADModel.map_and_score` for one class, the class's text features a buffer
    and its bank (if any) a constant. forward(uint8 B x S x S x 3) -> (maps B x S x S, scores B)."""

    def __init__(self, model: SIADModel, class_name: str, bank: ReferenceBank | None = None) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            text = model.class_text_features([class_name])
        self.register_buffer("text", text.detach().clone())
        self.bank = bank

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.map_and_score(images, self.text, self.bank)


@dataclass(frozen=True)
class ExportReport:
    """What `export_onnx` wrote: the ONNX file, the OpenVINO IR (None unless asked for), the file's
    `ExportInfo`, and the largest differences of onnxruntime's maps and scores from the model's on the
    check batch (None when onnxruntime is not installed)."""

    path: Path
    openvino_path: Path | None
    info: ExportInfo
    max_map_difference: float | None
    max_score_difference: float | None


def check_export_dependencies() -> None:
    """ImportError with the pip command when the exporter's packages are missing."""
    missing = [name for name in ("onnx", "onnxscript", "onnx_ir") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"exporting to ONNX needs {', '.join(missing)}: {EXPORT_INSTALL_HINT}")


def export_onnx(model: SIADModel, class_name: str, out: str | Path, *, bank: ReferenceBank | None = None,
                opset: int | None = None, openvino: bool = False, check: bool = True) -> ExportReport:
    """Write pass 1 of `model` for `class_name` (map and score; with `bank`, k-shot) as an ONNX graph at
    `out` (see the module docstring); openvino=True also writes the OpenVINO IR beside it (`out` with
    ".xml"). check: run the file with onnxruntime (when installed) on a random batch and compare it
    with the model (ExportMismatchError beyond CHECK_TOLERANCE; the files are removed)."""
    check_export_dependencies()
    name = check_class_name(class_name)
    if model.dtype != torch.float32 or model.device.type != "cpu":
        raise ValueError(f"export a float32 model on the CPU (this one is {model.dtype} on {model.device}): "
                         "SIADModel.from_pretrained(folder) loads it so")
    if bank is not None:
        check_bank(bank, model_fingerprint(model, bank.features), name)
    model.eval()
    module = MapAndScoreGraph(model, name, bank).eval()
    side = model.config.vision.image_size
    example = torch.randint(0, 256, (EXAMPLE_BATCH, side, side, 3), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0))
    program = _export_program(module, example)
    onnx_program = _to_onnx(module, program, example, opset)
    info = ExportInfo(class_name=name, num_shots=0 if bank is None else bank.num_shots, config=model.config,
                      model_fingerprint=model_fingerprint(model, "visual"),
                      text_sha256=_sha256(module.text), bank_fingerprint="" if bank is None else bank.fingerprint,
                      bank_sha256="" if bank is None else bank.digest())
    metadata = info.to_metadata()
    onnx_program.model.metadata_props.update(metadata)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_program.save(str(path))  # weights beyond 2 GB (ImageBind-Huge) go to an external data file beside it
    written = [path, *[p for p in (path.with_name(path.name + ".data"),) if p.is_file()]]
    try:
        openvino_path = None
        if openvino:
            written += [path.with_suffix(".xml"), path.with_suffix(".bin")]
            openvino_path = _write_openvino(path, metadata)
        differences = _check_parity(module, path, example) if check else (None, None)
    except BaseException:
        for file in written:
            file.unlink(missing_ok=True)
        raise
    return ExportReport(path=path, openvino_path=openvino_path, info=info, max_map_difference=differences[0],
                        max_score_difference=differences[1])


def _sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()


def _export_program(module: MapAndScoreGraph, example: torch.Tensor) -> torch.export.ExportedProgram:
    """torch.export with a dynamic batch; a code path that fixes the batch size is an error (whose message
    says how to find the line)."""
    batch = torch.export.Dim("batch", min=1)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # lifted constants (the bank) are intended
            return torch.export.export(module, (example,), dynamic_shapes={"images": {0: batch}}, strict=False)
    except Exception as error:  # torch.export's UserError and friends
        raise RuntimeError(f"the model's map path cannot be captured with a dynamic batch size by torch.export "
                           f"({type(error).__name__}): {_first_lines(str(error), 3)} (run with TORCH_LOGS=\"+dynamic\" "
                           "to see the line that fixes the batch size)") from error


def _to_onnx(module: MapAndScoreGraph, program: torch.export.ExportedProgram, example: torch.Tensor,
             opset: int | None) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(program, (example,), dynamo=True, input_names=[INPUT_NAME],
                                             output_names=list(OUTPUT_NAMES), opset_version=opset, optimize=True,
                                             verbose=False)
    except Exception as error:  # torch.onnx's ConversionError / DispatchError
        operator = unsupported_operator(error)
        if operator is None:
            raise
        places = "; ".join(locate_operator(module, example, operator)) or "a decomposition of the graph"
        raise UnsupportedOperatorError(
            f"operator {operator} has no ONNX translation, so this model cannot be exported: it is called in {places}. "
            "Replace it with operators ONNX has (as siad.reference_maps.lower_median does for torch.median), or use a "
            "backbone that exports") from error
    assert onnx_program is not None
    import onnx_ir as ir  # deferred: the optional extra [export]

    graph = onnx_program.model.graph
    for value in (*graph.inputs, *graph.outputs):  # the symbolic batch size torch.export named "s.." -> "batch"
        value.shape = ir.Shape(["batch", *list(value.shape)[1:]])
    return onnx_program


def unsupported_operator(error: BaseException) -> str | None:
    """The ATen operator ("aten.median.dim") an ONNX export error says has no ONNX function, if it says so."""
    seen: BaseException | None = error
    while seen is not None:
        found = re.search(r"op='([\w.]+)', overload='(\w+)'", str(seen))
        if found and "No ONNX function" in str(seen):
            return f"{found.group(1)}.{found.group(2)}"
        seen = seen.__cause__ or seen.__context__
    return None


def locate_operator(module: nn.Module, example: torch.Tensor, operator: str) -> list[str]:
    """Where `operator` ("aten.median.dim") is called when `module` runs on `example`, each place once:
    "module 'model.vision_encoder.blocks.2' (timm's ...), at siad/reference_maps.py:180 in lower_median". The
    module is the innermost `nn.Module` whose method is on the Python stack at the call (a function's
    caller counts: a function called by SIADModel's methods comes from 'model'), the line the innermost
    frame outside torch."""
    names = {id(m): name or "(root)" for name, m in module.named_modules()}
    places: dict[str, None] = {}

    class Finder(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if str(func) == operator:
                places[_call_site(inspect.currentframe(), names)] = None
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Finder():
        module(example)
    return list(places)


def _call_site(frame: Any, names: dict[int, str]) -> str:
    line = owner = None
    while frame is not None:
        filename = frame.f_code.co_filename
        outside_torch = f"{os.sep}torch{os.sep}" not in filename
        if line is None and outside_torch and not filename.endswith(f"{os.sep}export.py"):
            line = f"{_short_path(filename)}:{frame.f_lineno} in {frame.f_code.co_name}"
        candidate = frame.f_locals.get("self")
        if owner is None and isinstance(candidate, nn.Module) and id(candidate) in names:
            owner = f"module '{names[id(candidate)]}' ({type(candidate).__module__}.{type(candidate).__qualname__})"
        if line is not None and owner is not None:
            break
        frame = frame.f_back
    return ", ".join(part for part in (owner, f"at {line}" if line else None) if part) or "an unknown place"


def _short_path(file: str) -> str:
    """A source file as "siad/reference_maps.py" or "timm/layers/...py" (the package onwards)."""
    parts = Path(file).parts
    for anchor in ("siad", "site-packages"):
        if anchor in parts:
            index = len(parts) - 1 - parts[::-1].index(anchor)
            return "/".join(parts[index + (1 if anchor == "site-packages" else 0):])
    return file


def _first_lines(text: str, count: int) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines()[:count])


def _write_openvino(path: Path, metadata: dict[str, str]) -> Path:
    """The ONNX graph as OpenVINO IR beside it (float32 weights), the metadata in rt_info["siad"]."""
    try:
        import openvino as ov  # deferred: the optional extra [openvino]
    except ImportError as error:
        raise ImportError("--openvino needs OpenVINO: pip install openvino") from error
    model = ov.convert_model(str(path))
    for key, value in metadata.items():
        model.set_rt_info(value, ["siad", key.split(".", 1)[1]])
    target = path.with_suffix(".xml")
    ov.save_model(model, str(target), compress_to_fp16=False)
    return target


def _check_parity(module: MapAndScoreGraph, path: Path, example: torch.Tensor) -> tuple[float | None, float | None]:
    """Run the file with onnxruntime on `example` and compare with the module (None, None without
    onnxruntime); ExportMismatchError beyond CHECK_TOLERANCE."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None, None
    with torch.no_grad():
        maps, scores = module(example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got_maps, got_scores = ExportedDetector(path).run(example.numpy())
    map_difference = float(np.abs(got_maps - maps.numpy()).max())
    score_difference = float(np.abs(got_scores - scores.numpy()).max())
    if max(map_difference, score_difference) > CHECK_TOLERANCE:
        raise ExportMismatchError(f"the exported graph differs from the model by up to {map_difference:.2e} in the "
                                  f"maps and {score_difference:.2e} in the scores (tolerance {CHECK_TOLERANCE}); "
                                  "the file was removed")
    return map_difference, score_difference


# ------------------------------------------------------------------------------------ command line
def load_references(model: SIADModel, paths: Sequence[str], class_name: str) -> ReferenceBank:
    """`--references`: one saved bank (its .safetensors or .json, or the name both share) or normal images
    of the class (files and/or folders), made into a bank by the model. ValueError when nothing is found."""
    if len(paths) == 1:
        candidate = Path(paths[0])
        base = candidate.with_suffix("") if candidate.suffix in (".safetensors", ".json") else candidate
        tensors, sidecar = bank_paths(base)
        if candidate.suffix in (".safetensors", ".json") or (tensors.is_file() and sidecar.is_file()):
            return ReferenceBank.load(tensors, device=model.device)
    images, missing = collect_images(paths)
    if missing:
        raise ValueError(f"references not found: {', '.join(str(p) for p in missing)}")
    if not images:
        raise ValueError(f"no image files among the references {' '.join(paths)}")
    return model.build_references(images, class_name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siad export",
        description="Export a SIAD model's anomaly map and score for one class to ONNX: one graph from uint8 RGB "
                    "images (the model's input size, any batch) to the map and the score of the first pass, for "
                    "inference without PyTorch (siad predict --onnx, siad.deploy).",
        epilog="Examples:\n  siad export --model checkpoints/siad-mini --class bottle --out runs/bottle.onnx\n"
               "  siad export --model checkpoints/siad-mini --class bottle --references good/ --out runs/bottle-4shot.onnx\n"
               "  siad export --model checkpoints/siad-mini --class bottle --out runs/bottle.onnx --openvino",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="SIAD model folder or Hub id")
    parser.add_argument("--class", dest="class_name", default=None,
                        help="the class whose text features go into the graph (required: one graph per class)")
    parser.add_argument("--references", nargs="+", default=None, metavar="DIR_OR_BANK",
                        help="few-shot: normal images of the class (files and/or folders), or one saved reference bank "
                             "(ReferenceBank.save); the bank goes into the graph (default: zero-shot)")
    parser.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--openvino", action="store_true", help="also write OpenVINO IR (<out>.xml + .bin)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`siad export`: 0 when the file was written and checked; bad arguments, a model that does not load
    or export, exit with status 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.class_name is None or not args.class_name.strip():
        parser.error("--class NAME is required: the graph holds the text features of one class (export once per class)")
    if args.out.suffix.lower() != ".onnx":
        parser.error(f"--out must name a .onnx file, got {args.out}")
    try:
        check_export_dependencies()
        if args.openvino and importlib.util.find_spec("openvino") is None:
            raise ImportError("--openvino needs OpenVINO: pip install openvino")
        model = SIADModel.from_pretrained(args.model).eval()
        bank = load_references(model, args.references, args.class_name) if args.references else None
        report = export_onnx(model, args.class_name, args.out, bank=bank, opset=args.opset, openvino=args.openvino)
    except (ImportError, FileNotFoundError, ValueError, OSError, RuntimeError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    info = report.info
    size = report.path.stat().st_size / 1e6
    print(f"wrote {report.path} ({size:.1f} MB): class {info.class_name!r}, {info.mode}, {info.image_size} x "
          f"{info.image_size} uint8 RGB input, threshold {info.threshold}")
    if report.openvino_path is not None:
        print(f"wrote {report.openvino_path} and {report.openvino_path.with_suffix('.bin')} (OpenVINO IR)")
    if report.max_map_difference is not None:
        print(f"onnxruntime agrees with the model: max |difference| {report.max_map_difference:.1e} (maps), "
              f"{report.max_score_difference:.1e} (scores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
