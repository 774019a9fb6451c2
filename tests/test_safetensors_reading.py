"""Reading safetensors files (siad.weights): hostile headers are refused by name before anything is
allocated, shapes are checked against the model, and no file handle is left open."""

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from siad import SIADConfig, SIADModel
from siad.weights import load_safetensors, safetensors_shapes


def _raw(path: Path, header: object, data: bytes = b"") -> Path:
    """A file laid out like safetensors (8-byte little-endian header length, JSON header, data),
    whatever the header says."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


def _open_handles(path: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == str(path.resolve()):
            found.append(target)
    return found


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.mark.parametrize("header, tensor, why", [
    ({"a": {"dtype": "F32", "shape": [2]}}, "a", "data_offsets is missing"),
    ({"a": {"shape": [2], "data_offsets": [0, 8]}}, "a", "dtype is missing"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, "a", "data_offsets"),
    ({**GOOD, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 800]}}, "b", "within the file"),
    ({"big": {"dtype": "F32", "shape": [65536, 65536], "data_offsets": [0, 8]}}, "big", "17179869184 bytes"),
    ({"big": {"dtype": "F32", "shape": [1e6, 1e6], "data_offsets": [0, 8]}}, "big", "shape"),
    ({"a": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}, "a", "dtype"),
    ({"a": [1, 2, 3]}, "a", "not an object"),
])
def test_a_hostile_header_is_a_value_error_naming_the_file_and_the_tensor(tmp_path, header, tensor, why):
    path = _raw(tmp_path / "weights.safetensors", header, b"\0" * 8)
    before = _rss_anon()
    for read in (safetensors_shapes, load_safetensors):
        with pytest.raises(ValueError) as caught:
            read(path)
        message = str(caught.value)
        assert str(path) in message and f"tensor {tensor}" in message and why in message, message
    assert _rss_anon() - before < 64 * 2**20  # nothing near the 17 GB the header asks for
    assert _open_handles(path) == []


@pytest.mark.parametrize("raw, why", [
    (struct.pack("<Q", len(b"[1, 2]")) + b"[1, 2]", "JSON list"),
    (struct.pack("<Q", 2**62) + b"{}", "header too large"),
    (b"\x01\x02", "header too small"),
    (struct.pack("<Q", 4) + b"\xff\xfe{{", "UTF-8"),
])
def test_a_file_that_is_not_safetensors_is_a_value_error_naming_it(tmp_path, raw, why):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=why) as caught:
        load_safetensors(path)
    assert str(path) in str(caught.value)


def test_shapes_are_checked_against_the_model_before_any_tensor_is_read(tmp_path, monkeypatch):
    import safetensors

    path = tmp_path / "weights.safetensors"
    save_file({"a": torch.ones(3, 4), "b": torch.ones(8, 8)}, str(path))
    reads: list[str] = []
    real_open = safetensors.safe_open

    class Counting:
        def __init__(self, *args, **kwargs):
            self._inner = real_open(*args, **kwargs)

        def __enter__(self):
            self._handle = self._inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self._inner.__exit__(*exc)

        def keys(self):
            return self._handle.keys()

        def get_slice(self, name):
            return self._handle.get_slice(name)

        def get_tensor(self, name):
            reads.append(name)
            return self._handle.get_tensor(name)

    import siad.weights

    monkeypatch.setattr(siad.weights, "safe_open", Counting)
    with pytest.raises(ValueError, match=r"tensor b has shape \[8, 8\], the model expects \[4, 4\]"):
        load_safetensors(path, expected={"a": (3, 4), "b": (4, 4)})
    with pytest.raises(ValueError, match="tensor b is not a weight of this model"):
        load_safetensors(path, expected={"a": (3, 4)})
    assert reads == []
    state = load_safetensors(path, expected={"a": (3, 4), "b": (8, 8)}, keys=["b"], dtype=torch.bfloat16)
    assert reads == ["b"] and list(state) == ["b"] and state["b"].dtype == torch.bfloat16


def test_reading_leaves_no_file_handle_open(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"a": torch.arange(6.0).view(2, 3), "n": torch.arange(4)}, str(path))
    state = load_safetensors(path, dtype=torch.float16)
    assert state["a"].dtype == torch.float16 and state["n"].dtype == torch.int64  # integers are never cast
    assert torch.equal(state["a"].float(), torch.arange(6.0).view(2, 3))
    assert safetensors_shapes(path) == {"a": (2, 3), "n": (4,)}
    assert _open_handles(path) == []


def test_a_truncated_file_is_refused_by_name(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"a": torch.ones(64, 64)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="tensor a") as caught:
        load_safetensors(path)
    assert str(path) in str(caught.value)


def test_a_saved_folder_with_a_wrong_shape_is_refused_before_loading(tmp_path):
    torch.manual_seed(0)
    model = SIADModel(SIADConfig.tiny())
    model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    from safetensors.torch import load_file

    state = load_file(str(weights))
    state["llama_proj.weight"] = torch.zeros(4096, 4096)  # a well-formed file, but not this model's
    save_file(state, str(weights))
    with pytest.raises(ValueError, match=r"model.safetensors: tensor llama_proj.weight has shape \[4096, 4096\]"):
        SIADModel.from_pretrained(tmp_path / "m")
    adapter = tmp_path / "m" / "llm_adapter" / "adapter_model.safetensors"
    model.save_pretrained(tmp_path / "m")
    _raw(adapter, {"x": {"dtype": "F32", "shape": [65536, 65536], "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(ValueError, match=r"adapter_model.safetensors is not a valid safetensors file \(tensor x"):
        SIADModel.from_pretrained(tmp_path / "m")
