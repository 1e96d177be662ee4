"""A mock ComfyUI server for tests: ComfyUI v0.3.64's HTTP and websocket API, fake generation.

The server classes import aiohttp (the `mock` extra); they are loaded on first use so that
importing this package, or its pytest plugin, does not require it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from comfyui_mock.handle import MockHandle as MockHandle
    from comfyui_mock.remote import RemoteMockComfyUI as RemoteMockComfyUI
    from comfyui_mock.runner import MockComfyUIThread as MockComfyUIThread
    from comfyui_mock.server import MockComfyUI as MockComfyUI

_LAZY = {
    "MockComfyUI": "comfyui_mock.server",
    "MockComfyUIThread": "comfyui_mock.runner",
    "RemoteMockComfyUI": "comfyui_mock.remote",
    "MockHandle": "comfyui_mock.handle",
}

__all__ = ["MockComfyUI", "MockComfyUIThread", "MockHandle", "RemoteMockComfyUI"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'comfyui_mock' has no attribute {name!r}")
