"""The bundled model's behaviour, bit for bit, against what it gave when the fixture was recorded
(tests/fixtures/make_v3_fixture.py): maps (SHA-256 of their bytes), scores, answers, verdicts, a 1-shot
map, and an evaluation report's numbers. Refactoring must leave all of them unchanged; a deliberate
change of the model or its behaviour records the fixture again, in the same commit, saying why."""

import json
from pathlib import Path

import pytest
import torch

from tests.behaviour import ROOT, behaviour


@pytest.mark.slow
def test_the_bundled_model_behaves_as_recorded(tmp_path):
    expected = json.loads((ROOT / "tests" / "fixtures" / "v3_expected.json").read_text(encoding="utf-8"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture was recorded with one thread: float sums in the same order
    try:
        got = json.loads(json.dumps(behaviour(ROOT / "checkpoints" / "siad-mini", Path(tmp_path))))
    finally:
        torch.set_num_threads(threads)
    assert got["detect"] == expected["detect"]
    assert got["one_shot"] == expected["one_shot"]
    assert got["report"] == expected["report"]
