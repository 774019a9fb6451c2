"""Sizes of the full SIAD-LLM (ImageBind-Huge + Vicuna-7B), computed from the empty-weights model.

Nothing is downloaded or allocated: the model is built with `accelerate.init_empty_weights()` and
the parameters are counted. Prints the bytes of each saved file in bf16 and the weight memory the
model needs in bf16, with the LLM in 8-bit and in 4-bit (bitsandbytes: the decoder's Linear layers
are quantised, embeddings, norms and lm_head stay bf16; NF4 with double quantisation costs about
4.127 bits per weight).

Run: python benchmarks/model_sizes.py
"""

from __future__ import annotations

from accelerate import init_empty_weights

from siad import SIADConfig, SIADModel
from siad.config import LLAMA_7B_ARCHITECTURE

GB = 1e9


def main() -> None:
    config = SIADConfig.siad_llm(llm=dict(name_or_path=None, architecture=LLAMA_7B_ARCHITECTURE))
    with init_empty_weights(include_buffers=False):
        model = SIADModel(config)
    state = model.state_dict()
    saved = {k: v for k, v in state.items() if not k.startswith("llm.")}
    encoder = sum(v.numel() for k, v in saved.items() if k.startswith(("vision_encoder.", "text_encoder.")))
    modules = sum(v.numel() for k, v in saved.items() if not k.startswith(("vision_encoder.", "text_encoder.")))
    lora = sum(p.numel() for n, p in model.llm.named_parameters() if "lora_" in n)
    base = model.llm.get_base_model()
    base_total = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)
    quantisable = sum(p.numel() for n, p in base.named_parameters()
                      if n.startswith("model.layers.") and p.ndim == 2 and "lora_" not in n)
    rest = base_total - quantisable
    print(f"parameters: encoder {encoder / 1e6:.1f} M, SIAD modules {modules / 1e6:.1f} M, "
          f"LoRA {lora / 1e6:.2f} M, base LLM {base_total / 1e9:.3f} B (decoder Linear {quantisable / 1e9:.3f} B)")
    print("\nsaved files in bf16 (2 bytes per weight):")
    print(f"  model.safetensors (encoder + SIAD modules)  {2 * (encoder + modules) / GB:7.2f} GB")
    print(f"  llm_adapter/adapter_model.safetensors       {2 * lora / GB:7.3f} GB")
    print(f"  base LLM (its own repo, e.g. vicuna-7b)     {2 * base_total / GB:7.2f} GB")
    print(f"  total                                       {2 * (encoder + modules + lora + base_total) / GB:7.2f} GB")
    siad_bf16 = 2 * (encoder + modules + lora)
    rows = {
        "bf16": 2 * base_total,
        "LLM 8-bit": 1 * quantisable + 2 * rest,
        "LLM 4-bit (NF4)": quantisable * 4.127 / 8 + 2 * rest,
    }
    print("\nweight memory to run (encoder, SIAD modules and LoRA in bf16; activations and KV cache extra):")
    for name, llm_bytes in rows.items():
        print(f"  {name:<16} {(siad_bf16 + llm_bytes) / GB:6.2f} GB  (LLM {llm_bytes / GB:5.2f} GB)")


if __name__ == "__main__":
    main()
