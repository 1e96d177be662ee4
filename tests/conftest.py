"""Shared test fixtures: the recorded ComfyUI payloads, the fake LittleHorse server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from captures import load_capture
from comfyui_worker.observability.logs import flush_logs
from lh.fake_server import FakeLittleHorse


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Tests that call the CLI install our log handler on the stream pytest captured for
    them, which pytest closes after the test: put the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    flush_logs()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def capture() -> Any:
    return load_capture


@pytest.fixture
def fake() -> Iterator[FakeLittleHorse]:
    """A fake LittleHorse server for one test (see tests/lh/README.md)."""
    with FakeLittleHorse() as server:
        yield server


# Fixtures shared by the media tests: moto's S3 server, a loopback file server, a test CA.
from http_files import file_server  # noqa: E402, F401
from s3_server import moto_s3, s3  # noqa: E402, F401
from tls_certs import tls_ca  # noqa: E402, F401
