"""Shared test fixtures: the recorded ComfyUI payloads."""

from __future__ import annotations

from typing import Any

import pytest

from captures import load_capture


@pytest.fixture
def capture() -> Any:
    return load_capture
