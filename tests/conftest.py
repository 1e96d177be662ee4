"""Shared test fixtures: the recorded ComfyUI payloads, the fake LittleHorse server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from captures import load_capture
from lh.fake_server import FakeLittleHorse


@pytest.fixture
def capture() -> Any:
    return load_capture


@pytest.fixture
def fake() -> Iterator[FakeLittleHorse]:
    """A fake LittleHorse server for one test (see tests/lh/README.md)."""
    with FakeLittleHorse() as server:
        yield server


# Fixtures shared by the media tests: moto's S3 server and a loopback file server.
from http_files import file_server  # noqa: E402, F401
from s3_server import moto_s3, s3  # noqa: E402, F401
