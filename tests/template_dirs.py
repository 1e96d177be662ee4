"""A template directory per test: a copy of examples/templates, edited with visible stamps."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "templates"

_clock = [0]


def write(path: Path, text: str) -> None:
    """Write `text` and move the mtime forward: two edits within one timer tick of the file
    system would otherwise keep the same mtime (and possibly size and inode)."""
    path.write_text(text, encoding="utf-8")
    _clock[0] += 1
    mtime = max(path.stat().st_mtime_ns, 1_900_000_000 * 10**9) + _clock[0] * 10**9
    os.utime(path, ns=(mtime, mtime))


def write_json(path: Path, data: Any) -> None:
    write(path, json.dumps(data, indent=1))


def copy_examples(target: Path) -> Path:
    shutil.copytree(EXAMPLES, target)
    return target


GRAPH: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        "_meta": {"title": "Canvas"},
    },
    "2": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        "_meta": {"title": "Second canvas"},
    },
    "3": {
        "class_type": "SaveImage",
        "inputs": {"images": ["1", 0], "filename_prefix": "t/a"},
        "_meta": {"title": "Save"},
    },
    "4": {
        "class_type": "SaveImage",
        "inputs": {"images": ["2", 0], "filename_prefix": "t/b"},
        "_meta": {"title": "Save"},
    },
    "5": {"class_type": "PreviewAny", "inputs": {"source": "hello"}, "_meta": {"title": "Text"}},
}
"""Two nodes share the title "Save" on purpose."""


def make_dir(root: Path, workflows: str, base: str | None = None, graph: Any = None) -> Path:
    """A directory with graph.json (GRAPH unless given), workflows.yaml and base.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "graph.json", GRAPH if graph is None else graph)
    write(root / "workflows.yaml", workflows)
    if base is not None:
        write(root / "base.yaml", base)
    return root
