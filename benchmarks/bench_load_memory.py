"""Peak host memory while loading a saved SIAD model, against the size of its weights.

Builds a random model of several hundred million parameters (ImageBind architecture at medium
width and a LLaMA-architecture LM of ~0.2 B stored in the folder's llm/), saves it in bf16, then in
a fresh process measures the resident memory after the imports (baseline) and its peak while
`SIADModel.from_pretrained(folder, dtype=torch.bfloat16)` runs (sampled every 2 ms, and
ru_maxrss). Target: peak - baseline at most 1.3 x the bytes of the weights.

Run: python benchmarks/bench_load_memory.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MEDIUM = dict(
    vision_embed_dim=768, vision_num_blocks=12, vision_num_heads=12, text_embed_dim=512, text_num_blocks=12,
    text_num_heads=8, embed_dim=512, stage_blocks=(2, 5, 8, 11), num_prompt_vectors=12,
    llm_architecture={"model_type": "llama", "hidden_size": 1024, "intermediate_size": 2816,
                      "num_hidden_layers": 12, "num_attention_heads": 16, "num_key_value_heads": 16,
                      "vocab_size": 32000, "max_position_embeddings": 2048},
    lora_r=16, lora_alpha=16,
)

CHILD = r"""
import json, resource, sys, threading, time
import psutil, torch
from siad import SIADModel
import siad.hub, siad.model, transformers, peft, accelerate  # everything imported before the baseline
process = psutil.Process()
baseline = process.memory_info().rss
peak = [baseline]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.002)
thread = threading.Thread(target=sample, daemon=True)
thread.start()
start = time.perf_counter()
model = SIADModel.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
seconds = time.perf_counter() - start
stop.set(); thread.join()
after = process.memory_info().rss
peak[0] = max(peak[0], after)
weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
params = sum(p.numel() for p in model.parameters())
print(json.dumps(dict(baseline=baseline, peak=peak[0], after=after, weights=weights, params=params,
                      seconds=seconds, ru_maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, default=None, help="save the model here instead of a temporary folder")
    args = parser.parse_args()
    import torch

    from siad import SIADConfig, SIADModel

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "medium"
        torch.manual_seed(0)
        model = SIADModel(SIADConfig.tiny(**MEDIUM))
        params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(folder, dtype=torch.bfloat16)
        del model
        on_disk = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
        print(f"saved a {params / 1e6:.0f} M parameter model in bf16: {on_disk / 1e6:.0f} MB on disk")
        out = subprocess.run([sys.executable, "-c", CHILD, str(folder)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
    grow = r["peak"] - r["baseline"]
    print(f"loaded {r['params'] / 1e6:.0f} M parameters ({r['weights'] / 1e6:.0f} MB of bf16 weights) in {r['seconds']:.1f} s")
    print(f"resident memory: baseline {r['baseline'] / 1e6:.0f} MB after imports, peak {r['peak'] / 1e6:.0f} MB, "
          f"after loading {r['after'] / 1e6:.0f} MB")
    print(f"peak - baseline = {grow / 1e6:.0f} MB = {grow / r['weights']:.2f} x the weights (target <= 1.30)")


if __name__ == "__main__":
    main()
