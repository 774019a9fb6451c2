"""Shared fixtures: tiny models built in-process (no network, no downloads)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def build_tiny(seed: int = 0, **overrides):
    from siad import SIADConfig, SIADModel

    torch.manual_seed(seed)
    return SIADModel(SIADConfig.tiny(**overrides))


@pytest.fixture(scope="session")
def tiny_model():
    """A tiny model shared by read-only tests (do not train it: use `fresh_tiny_model`)."""
    model = build_tiny(0)
    model.eval()
    return model


@pytest.fixture
def fresh_tiny_model():
    return build_tiny(0)
