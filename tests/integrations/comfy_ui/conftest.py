"""Fixtures for the mock ComfyUI server tests; `comfyui_mock` comes from the package's plugin."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mock_server_helpers import Comfy

from comfyui_mock.handle import MockHandle


@pytest.fixture
async def comfy(comfyui_mock: MockHandle) -> AsyncIterator[Comfy]:
    client = Comfy(comfyui_mock.url)
    try:
        yield client
    finally:
        await client.aclose()
