"""The pieces of `benchmarks/bench.py`: ComfyUI-side clients, the `serve` side, the table.

The fake LittleHorse server lives with the tests (`tests/lh/fake_server.py`); the benchmark
drives `comfyui-worker serve` through the same one, so `tests/` goes on the import path here,
and `tests/littlehorse/` (the real server's harness, `--littlehorse real`) too.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for folder in (REPO / "tests" / "littlehorse", REPO / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
