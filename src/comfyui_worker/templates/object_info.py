"""Reading ComfyUI's `/object_info`: which inputs a node class has and which values a list
(combo) input allows.

Two shapes exist for a combo: the classic `[["a", "b"], {...}]` and the newer
`["COMBO", {"options": ["a", "b"]}]`; both are read.
"""

from __future__ import annotations

from typing import Any


def input_spec(node_info: dict[str, Any], input_name: str) -> list[Any] | None:
    """The `[type, extra]` declaration of one input (required, optional or hidden), or None."""
    declared = node_info.get("input")
    if not isinstance(declared, dict):
        return None
    for category in ("required", "optional", "hidden"):
        group = declared.get(category)
        if isinstance(group, dict) and input_name in group:
            spec = group[input_name]
            return spec if isinstance(spec, list) else [spec]
    return None


def combo_choices(node_info: dict[str, Any], input_name: str) -> tuple[Any, ...] | None:
    """The values a combo input allows, or None if the input is not a combo."""
    spec = input_spec(node_info, input_name)
    if not spec:
        return None
    if isinstance(spec[0], list):
        return tuple(spec[0])
    extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if spec[0] == "COMBO" and isinstance(extra.get("options"), list):
        return tuple(extra["options"])
    return None


def node_info_of(object_info: dict[str, Any], class_type: str) -> dict[str, Any] | None:
    """One class out of `/object_info` or `/object_info/{class}` (both are keyed by class)."""
    info = object_info.get(class_type)
    return info if isinstance(info, dict) else None
