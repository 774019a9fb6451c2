"""Peak host memory while loading a saved SIAD model: the safetensors library (what `siad.hub`
uses) against the hand-written reader it replaced, in one run.

Builds a random model of several hundred million parameters (ImageBind architecture at medium
width and a LLaMA-architecture LM of ~0.2 B stored in the folder's llm/), saves it in bf16, then, in
a fresh process for each reader, runs `SIADModel.from_pretrained(folder, dtype=torch.bfloat16)` and
samples /proc/self/status every 2 ms:

- RssAnon: resident anonymous memory (what the process itself allocated: the figure that counts);
- RssFile: resident pages of mapped files (the safetensors library maps the file; such pages are
  shared with the page cache and the kernel can drop them, they are not a copy of the weights).

Both are reported as growth over the value after the imports. The hand-written reader read every
tensor with readinto() into its own buffer (kept here only as the reference to measure).

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

READERS = ("hand-written", "library")

CHILD = r"""
import json, struct, sys, threading, time
from pathlib import Path
import torch
import siad.hub, siad.model, transformers, peft, accelerate  # everything imported before the baseline
from siad import SIADModel

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}

def hand_written(path, *, expected=None, keys=None, dtype=None, device="cpu"):
    # the reader siad.hub had before the safetensors library: readinto() into a buffer per tensor
    with open(path, "rb", buffering=0) as handle:
        length = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(length))
        entries = sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                         key=lambda kv: kv[1]["data_offsets"][0])
        state = {}
        for name, info in entries:
            if keys is not None and name not in keys:
                continue
            begin, end = info["data_offsets"]
            tensor = torch.empty(info["shape"], dtype=DTYPES[info["dtype"]])
            if tensor.numel():
                handle.seek(8 + length + begin)
                handle.readinto(memoryview(tensor.view(-1).view(torch.uint8).numpy()))
            if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                tensor = tensor.to(dtype)
            state[name] = tensor.to(device)
        return state

if sys.argv[2] == "hand-written":
    siad.hub.load_safetensors = hand_written

def status():
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("RssAnon", "RssFile"):
            values[key] = int(rest.split()[0]) * 1024
    values["total"] = values["RssAnon"] + values["RssFile"]
    return values

baseline = status()
peak = dict(baseline)
stop = threading.Event()
def record():
    now = status()
    for key in peak:
        peak[key] = max(peak[key], now[key])
    return now
def sample():
    while not stop.is_set():
        record()
        time.sleep(0.002)
thread = threading.Thread(target=sample, daemon=True)
thread.start()
start = time.perf_counter()
model = SIADModel.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
seconds = time.perf_counter() - start
loaded = record()
with torch.no_grad():  # what running the model does: every weight is read once
    for tensor in model.state_dict().values():
        tensor.sum()
used = record()
stop.set(); thread.join()
weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
params = sum(p.numel() for p in model.parameters())
print(json.dumps(dict(baseline=baseline, peak=peak, loaded=loaded, used=used, weights=weights, params=params,
                      seconds=seconds)))
"""


def measure(folder: Path, reader: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder), reader], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


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
        results = {reader: measure(folder, reader) for reader in READERS}
    grow = {}
    for reader, r in results.items():
        base, w = r["baseline"], r["weights"]

        def mb(key: str, when: dict) -> str:
            return f"{(when[key] - base[key]) / 1e6:.0f} MB ({(when[key] - base[key]) / w:.2f} x)"

        grow[reader] = r["peak"]["RssAnon"] - base["RssAnon"]
        print(f"{reader}: loaded in {r['seconds']:.1f} s; growth over the {base['RssAnon'] / 1e6:.0f} MB after the "
              f"imports, against the {w / 1e6:.0f} MB of weights:")
        print(f"    peak while loading and using: RssAnon {mb('RssAnon', r['peak'])}, "
              f"RssAnon + RssFile {mb('total', r['peak'])}")
        print(f"    after loading:                RssAnon {mb('RssAnon', r['loaded'])}, RssFile {mb('RssFile', r['loaded'])}")
        print(f"    after reading every weight:   RssAnon {mb('RssAnon', r['used'])}, RssFile {mb('RssFile', r['used'])}")
    print(f"peak anonymous memory, hand-written / library: {grow['hand-written'] / max(grow['library'], 1):.2f}")

if __name__ == "__main__":
    main()
