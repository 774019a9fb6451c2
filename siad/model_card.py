"""The model card written as README.md into every saved model folder.

`render_model_card(config)` fills the repository's `model_card.md` template when it is there (a
source checkout), else writes a minimal valid card. Both parse with `huggingface_hub.ModelCard`.
"""

from __future__ import annotations

from pathlib import Path

from siad.config import SIADConfig

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "model_card.md"

_MINIMAL = """---
library_name: siad-llm
license: cc-by-nc-sa-4.0
pipeline_tag: image-segmentation
tags:
- anomaly-detection
- zero-shot
- imagebind
- siad-llm
base_model: {base_model}
---

# SIAD-LLM

Self-improvement anomaly detection via a large language model (unsupervised zero-shot anomaly
detection). Load it with `SIADModel.from_pretrained(...)` from the `siad` package.

- encoder: ImageBind (vision {vision_embed_dim} x {vision_num_blocks}, text {text_embed_dim} x {text_num_blocks})
- language model: {llm}
- stage blocks: {stage_blocks}
"""


def render_model_card(config: SIADConfig, template: Path | None = None) -> str:
    """The card text for a model of this config."""
    path = template if template is not None else TEMPLATE_PATH
    base = config.llm_name_or_path or "none (a language model built by SIAD, stored in llm/)"
    values = dict(base_model=config.llm_name_or_path or "lmsys/vicuna-7b-v1.5", llm=base,
                  vision_embed_dim=config.vision_embed_dim, vision_num_blocks=config.vision_num_blocks,
                  text_embed_dim=config.text_embed_dim, text_num_blocks=config.text_num_blocks,
                  stage_blocks=list(config.stage_blocks))
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", str(value))
        return text
    return _MINIMAL.format(**values)
