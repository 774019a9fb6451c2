"""Shared fixtures: tiny models built in-process (no network, no downloads)."""

from __future__ import annotations

import atexit
import ipaddress
import os
import shutil
import socket
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
if "GRADIO_TEMP_DIR" not in os.environ:
    # This session's own Gradio cache: the app's tests age theirs out (AppLimits.cache_max_age_s), which must
    # never delete the uploads and pictures of another test session running at the same time on this machine.
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="siad-tests-gradio-")
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)


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


def _is_loopback(address: object) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths and the like never leave the machine
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test: a connection to anything but this machine fails the test (the app's tests talk
    to the app on 127.0.0.1, which is allowed)."""
    connect = socket.socket.connect
    create_connection = socket.create_connection

    def guarded_connect(sock, address):
        if not _is_loopback(address):
            raise AssertionError(f"network access attempted: {address}")
        return connect(sock, address)

    def guarded_create_connection(address, *args, **kwargs):
        if not _is_loopback(address):
            raise AssertionError(f"network access attempted: {address}")
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)
