"""The node classes the mock knows, described the way ComfyUI's /object_info describes them.

The bodies in assets/object_info.json were taken from a real ComfyUI v0.3.64 (plus one custom node
shaped like VideoHelperSuite's VHS_VideoCombine, and core's StringConcatenate written after
comfy_extras/nodes_string.py), so validation and /object_info answer as the real server does for
these classes.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).parent / "assets"
FIXTURE_IMAGE = ASSETS / "kernie_512x768.jpg"
FIXTURE_IMAGE_SIZE = (512, 768)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac"})

# Loader nodes whose combo lists are the files currently in the input directory.
_INPUT_FILE_COMBOS: dict[str, tuple[str, frozenset[str]]] = {
    "LoadImage": ("image", IMAGE_EXTENSIONS),
    "LoadAudio": ("audio", AUDIO_EXTENSIONS),
}


@dataclass(frozen=True)
class InputSpec:
    """One declared input: ComfyUI's (input_type, extra_info) pair plus its category."""

    name: str
    category: str
    type: str | list[Any]
    extra: dict[str, Any]

    @property
    def config(self) -> list[Any]:
        """The `input_config` that validation errors echo back."""
        return [self.type, self.extra]


@cache
def _static_catalogue() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads((ASSETS / "object_info.json").read_text("utf-8"))
    return data


def class_names() -> list[str]:
    return list(_static_catalogue())


def has_class(class_type: Any) -> bool:
    return isinstance(class_type, str) and class_type in _static_catalogue()


def input_files(input_dir: Path, extensions: frozenset[str]) -> list[str]:
    """Top-level files of the input directory with one of the extensions, sorted like ComfyUI."""
    try:
        names = os.listdir(input_dir)
    except OSError:
        return []
    return sorted(
        n
        for n in names
        if (input_dir / n).is_file() and os.path.splitext(n)[1].lower() in extensions
    )


def node_info(class_type: str, input_dir: Path) -> dict[str, Any]:
    """The /object_info body of one class, with loader combos listing the input directory."""
    info = copy.deepcopy(_static_catalogue()[class_type])
    combo = _INPUT_FILE_COMBOS.get(class_type)
    if combo is not None:
        input_name, extensions = combo
        spec = info["input"]["required"][input_name]
        spec[0] = input_files(input_dir, extensions)
    return info


def object_info(input_dir: Path) -> dict[str, dict[str, Any]]:
    return {name: node_info(name, input_dir) for name in _static_catalogue()}


def is_output_node(class_type: str) -> bool:
    return bool(_static_catalogue()[class_type].get("output_node", False))


def return_types(class_type: str) -> list[str]:
    types: list[str] = _static_catalogue()[class_type]["output"]
    return types


def declared_inputs(class_type: str, input_dir: Path) -> list[InputSpec]:
    """Required then optional inputs, in the node's declared order."""
    info = node_info(class_type, input_dir)
    order = info.get("input_order", {})
    specs: list[InputSpec] = []
    for category in ("required", "optional"):
        declared = info["input"].get(category, {})
        for name in order.get(category, list(declared)):
            raw = declared[name]
            extra = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
            specs.append(InputSpec(name, category, raw[0], extra))
    return specs


def hidden_inputs(class_type: str) -> dict[str, Any]:
    hidden: dict[str, Any] = _static_catalogue()[class_type]["input"].get("hidden", {})
    return hidden
