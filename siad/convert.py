"""Converters for the published weights SIAD-LLM starts from (the paper's initialisation).

    python -m siad.convert imagebind PATH/imagebind_huge.pth OUT.safetensors
        the ImageBind vision and text trunks (official key names) as safetensors
    python -m siad.convert pandagpt PATH/pytorch_model.pt OUT_DIR
        PandaGPT's 7B delta: llama_proj (OUT_DIR/llama_proj.safetensors) and its LoRA adapter in
        PEFT's format (OUT_DIR/llm_adapter/)
    python -m siad.convert init --imagebind PATH --pandagpt PATH --llm lmsys/vicuna-7b-v1.5 --out DIR
        a fresh paper-setting SIAD model folder: the encoder from ImageBind, llama_proj and LoRA from
        PandaGPT, the other trainable modules newly initialised; the base LLM is only named

Every `torch.load` uses `weights_only=True`. A file of the wrong kind gets an error naming the file
and what was expected.

PandaGPT's LoRA was trained on Vicuna-7B v0 (LLaMA-1 plus a delta, vocabulary 32001), which is not on
the Hub as full weights: the initialisation matches a local v0 model exactly and
`lmsys/vicuna-7b-v1.5` only approximately.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors.torch import save_file

from siad.config import LLAMA_7B_ARCHITECTURE, SIADConfig
from siad.encoders import build_vision_backbone, filter_official_state_dict, safe_torch_load
from siad.encoders.text import ImageBindTextEncoder
from siad.model import SIADModel
from siad.model_card import render_model_card
from siad.weights import load_safetensors

_LORA_KEY = re.compile(r"^(?:llama_model\.)?(base_model\.model\.model\.layers\.\d+\.self_attn\.(\w+_proj)\.lora_([AB]))"
                       r"(?:\.default)?\.weight$")
_PRESETS = {"siad_llm": SIADConfig.siad_llm, "tiny": SIADConfig.tiny}


def _tensor_dict(obj: object, path: Path, expected: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold {expected} (a mapping of names to tensors)")
    return obj


# ---------------------------------------------------------------------- ImageBind
def read_imagebind(path: str | Path, config: SIADConfig) -> dict[str, torch.Tensor]:
    """The vision and text entries of an ImageBind checkpoint (.pth, or a converted .safetensors),
    checked key for key and shape for shape against the encoder of `config`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ImageBind checkpoint not found: {path}")
    expected_kind = "an ImageBind checkpoint (imagebind_huge.pth)"
    if path.suffix == ".safetensors":
        state = load_safetensors(path)
    else:
        state = _tensor_dict(safe_torch_load(path, expected_kind), path, expected_kind)
    kept = filter_official_state_dict(state)
    if config.vision.backbone != "imagebind":
        raise ValueError(f"an ImageBind checkpoint serves the 'imagebind' backbone, not {config.vision.backbone!r}")
    with init_empty_weights(include_buffers=False):
        towers = [build_vision_backbone(config, pretrained=False), ImageBindTextEncoder(config.text, config.embed_dim)]
    reference = {k: tuple(v.shape) for tower in towers for k, v in tower.state_dict().items()}
    missing = sorted(set(reference) - set(kept))
    if missing:
        raise ValueError(f"{path} is not {expected_kind} for this encoder: {len(missing)} vision/text keys are "
                         f"missing, e.g. {missing[:5]}")
    wrong = sorted(k for k in reference if tuple(kept[k].shape) != reference[k])
    if wrong:
        k = wrong[0]
        raise ValueError(f"{path}: {len(wrong)} tensors have other shapes than the encoder expects, e.g. {k}: "
                         f"{tuple(kept[k].shape)} vs {reference[k]}")
    return {k: kept[k] for k in reference}


def convert_imagebind(path: str | Path, out: str | Path, config: SIADConfig) -> Path:
    state = read_imagebind(path, config)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out), metadata={"format": "pt", "source": "imagebind"})
    return out


# ---------------------------------------------------------------------- PandaGPT
def read_pandagpt(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[str]]:
    """llama_proj (weight, bias) and the LoRA weights in PEFT key names, plus the LoRA target modules."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PandaGPT checkpoint not found: {path}")
    expected = "a PandaGPT delta checkpoint (llama_proj.weight/bias and llama_model...lora_A/B keys)"
    state = _tensor_dict(safe_torch_load(path, expected), path, expected)
    if "llama_proj.weight" not in state or "llama_proj.bias" not in state:
        raise ValueError(f"{path} is not {expected}: llama_proj.weight and llama_proj.bias are missing")
    projection = {"weight": state["llama_proj.weight"], "bias": state["llama_proj.bias"]}
    lora: dict[str, torch.Tensor] = {}
    targets: set[str] = set()
    for key, value in state.items():
        match = _LORA_KEY.match(key)
        if match:
            lora[f"{match.group(1)}.weight"] = value
            targets.add(match.group(2))
    if not lora:
        raise ValueError(f"{path} is not {expected}: no LoRA keys like "
                         f"llama_model.base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight")
    ranks = {v.shape[0] for k, v in lora.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise ValueError(f"{path}: LoRA ranks differ between layers: {sorted(ranks)}")
    return projection, lora, sorted(targets)


def _write_adapter(folder: Path, lora: dict[str, torch.Tensor], targets: list[str], config: SIADConfig,
                   base_model: str) -> None:
    from peft import LoraConfig  # deferred: peft takes seconds to import

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in lora.items()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    LoraConfig(r=config.llm.lora_r, lora_alpha=config.llm.lora_alpha, lora_dropout=config.llm.lora_dropout, target_modules=targets,
               bias="none", task_type="CAUSAL_LM", base_model_name_or_path=base_model).save_pretrained(str(folder))


def convert_pandagpt(path: str | Path, out: str | Path, base_model: str = "lmsys/vicuna-7b-v1.5") -> Path:
    projection, lora, targets = read_pandagpt(path)
    rank = next(v.shape[0] for k, v in lora.items() if ".lora_A." in k)
    config = SIADConfig.siad_llm(llm=dict(lora_r=rank, lora_target_modules=tuple(targets)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in projection.items()}, str(out / "llama_proj.safetensors"),
              metadata={"format": "pt"})
    _write_adapter(out / "llm_adapter", lora, targets, config, base_model)
    return out


# ---------------------------------------------------------------------- a fresh paper-setting model
def init_model_folder(imagebind: str | Path, pandagpt: str | Path, llm: str, out: str | Path,
                      preset: str = "siad_llm", seed: int = 0) -> Path:
    """Write a SIAD model folder for the paper's initialisation without loading the LLM."""
    projection, lora, targets = read_pandagpt(pandagpt)
    rank = next(v.shape[0] for k, v in lora.items() if ".lora_A." in k)
    hidden, embed = projection["weight"].shape
    config = _PRESETS[preset](llm={"name_or_path": llm, "architecture": None, "lora_r": rank,
                                   "lora_target_modules": tuple(targets)})
    if embed != config.embed_dim:
        raise ValueError(f"{pandagpt}: llama_proj takes {embed}-d inputs, the encoder gives {config.embed_dim}")
    encoder_state = read_imagebind(imagebind, config)
    # The structure only: the LLM is never loaded (a meta LLaMA of the right width stands in).
    architecture = dict(LLAMA_7B_ARCHITECTURE, hidden_size=int(hidden))
    skeleton = config.replace(llm={"name_or_path": None, "architecture": architecture})
    with init_empty_weights(include_buffers=False):
        model = SIADModel(skeleton)
    torch.manual_seed(seed)
    for name, module in model.named_children():
        if name in ("vision_encoder", "text_encoder", "llm"):
            continue
        module.to_empty(device="cpu")
        for sub in module.modules():
            if sub is not module and hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    state = {f"{k.split('.')[1]}_encoder.{k}": v for k, v in encoder_state.items()}  # modality_*.vision.* -> vision_encoder.
    state.update({k: v for k, v in model.state_dict().items()
                  if not k.startswith(("vision_encoder.", "text_encoder.", "llm."))})
    state["llama_proj.weight"], state["llama_proj.bias"] = projection["weight"], projection["bias"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt", "siad_encoder": "True"})
    (out / "config.json").write_text(config.to_json_string(), encoding="utf-8")
    _write_adapter(out / "llm_adapter", lora, targets, config, llm)
    (out / "README.md").write_text(render_model_card(config), encoding="utf-8")
    return out


# ---------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m siad.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_ib = sub.add_parser("imagebind", help="imagebind_huge.pth -> safetensors of the vision and text trunks")
    p_ib.add_argument("path")
    p_ib.add_argument("out")
    p_ib.add_argument("--preset", choices=sorted(_PRESETS), default="siad_llm")
    p_pg = sub.add_parser("pandagpt", help="PandaGPT delta -> llama_proj + PEFT LoRA adapter")
    p_pg.add_argument("path")
    p_pg.add_argument("out")
    p_pg.add_argument("--llm", default="lmsys/vicuna-7b-v1.5", help="base model named in the adapter config")
    p_init = sub.add_parser("init", help="a fresh paper-setting SIAD model folder")
    p_init.add_argument("--imagebind", required=True)
    p_init.add_argument("--pandagpt", required=True)
    p_init.add_argument("--llm", default="lmsys/vicuna-7b-v1.5", help="Hub id or local path of the base LLM")
    p_init.add_argument("--out", required=True)
    p_init.add_argument("--preset", choices=sorted(_PRESETS), default="siad_llm")
    p_init.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.command == "imagebind":
            out = convert_imagebind(args.path, args.out, _PRESETS[args.preset]())
        elif args.command == "pandagpt":
            out = convert_pandagpt(args.path, args.out, args.llm)
        else:
            out = init_model_folder(args.imagebind, args.pandagpt, args.llm, args.out, args.preset, args.seed)
    except (ValueError, FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
