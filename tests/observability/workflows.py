"""A three-node workflow whose middle node (a blur) can be given steps and a delay."""

from __future__ import annotations

from typing import Any

from comfyui_mock.handle import MockHandle


def blur_workflow(prefix: str) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "ImageBlur",
            "inputs": {"image": ["1", 0], "blur_radius": 1, "sigma": 1},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def slow_blur(mock: MockHandle, *, steps: int, seconds: float) -> None:
    """Node 2 reports `steps` progress events over `seconds`; nothing is served from cache."""
    mock.set_cache_enabled(False)
    mock.set_progress_steps(steps, node="2")
    mock.set_node_delay("2", seconds)
