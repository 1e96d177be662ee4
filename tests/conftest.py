"""Shared test helpers: the recorded ComfyUI payloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

CAPTURES = Path(__file__).parent / "fixtures" / "captures"


def load_capture(name: str) -> Any:
    """One scenario recorded from a real ComfyUI v0.3.64 (see fixtures/captures/INDEX.md)."""
    return json.loads((CAPTURES / f"{name}.json").read_text())


@pytest.fixture
def capture() -> Any:
    return load_capture
