"""The payloads a real ComfyUI v0.3.64 returned (see fixtures/captures/INDEX.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CAPTURES = Path(__file__).parent / "fixtures" / "captures"


def load_capture(name: str) -> Any:
    """One recorded scenario, by file name without `.json`."""
    return json.loads((CAPTURES / f"{name}.json").read_text())
