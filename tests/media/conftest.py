"""Fixtures of the media tests (moto's S3 and the loopback file server come from
tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from job_stack import MakeStack, stacks

from comfyui_mock.handle import MockHandle


@pytest.fixture
async def make_stack(comfyui_mock: MockHandle) -> AsyncIterator[MakeStack]:
    async for make in stacks(comfyui_mock):
        yield make
