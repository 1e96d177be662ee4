"""The pieces of `benchmarks/bench.py`: ComfyUI-side clients, the `serve` side, the table.

The fake LittleHorse server lives with the tests (`tests/lh/fake_server.py`); the benchmark
drives `comfyui-worker serve` through the same one, so `tests/` goes on the import path here.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))
