"""pytest plugin: the `comfyui_mock` fixture.

Registered through the `pytest11` entry point. aiohttp is imported only when the fixture is
used, so pytest still starts where the `mock` extra is not installed.

Without COMFYUI_MOCK_URL the fixture starts a mock in a background thread on an OS-assigned
port with fresh directories, and removes them on teardown. With COMFYUI_MOCK_URL it drives that
running mock over HTTP instead: it restarts it (empty queue and history) and resets its controls
before and after the test, and deletes the files the mock wrote.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from comfyui_mock.handle import MockHandle

ENV_URL = "COMFYUI_MOCK_URL"


def _remote(url: str) -> Iterator[MockHandle]:
    from comfyui_mock.remote import RemoteMockComfyUI

    remote = RemoteMockComfyUI(url)
    try:
        remote.reset_controls()
        remote.restart()
        yield remote
    finally:
        remote.reset_controls()
        remote.restart()
        remote.cleanup_files()
        remote.close()


def _local() -> Iterator[MockHandle]:
    from comfyui_mock.runner import MockComfyUIThread

    root = Path(tempfile.mkdtemp(prefix="comfyui-mock-"))
    mock = MockComfyUIThread.create(root / "output", root / "temp", root / "input")
    try:
        mock.start()
        yield mock
    finally:
        mock.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def comfyui_mock() -> Iterator[MockHandle]:
    """A running mock ComfyUI: `.url`, `.output_dir`, `.temp_dir`, `.input_dir` and controls."""
    url = os.environ.get(ENV_URL)
    yield from (_remote(url) if url else _local())
