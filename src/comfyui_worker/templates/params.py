"""One parameter definition: its type, range, choices, default and where it goes in the graph
(read from YAML by `parsing`; the values it takes are in `values`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

RANDOM = "random"
"""`default: random` on an int parameter: a fresh value per job."""
COMFYUI = "comfyui"
"""`choices: comfyui`: ComfyUI's own list for the target input (from /object_info)."""
RANDOM_MAX = 2**53 - 1
"""Drawn values stay below this: the effective params travel through JSON parsers that read
numbers as doubles (JavaScript, some LittleHorse clients), and a seed must survive the trip."""

FIELDS = ("type", "description", "targets", "default", "required", "min", "max", "choices")


class ParamType(StrEnum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    ENUM = "enum"
    IMAGE = "image"


@dataclass(frozen=True, slots=True)
class Target:
    """`{node, input}`: node by id or by `_meta.title`."""

    node: str
    input: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamSpec:
    name: str
    type: ParamType
    targets: tuple[Target, ...]
    description: str = ""
    required: bool = False
    has_default: bool = False
    default: Any = None
    random_default: bool = False
    minimum: int | float | None = None
    maximum: int | float | None = None
    choices: tuple[Any, ...] | None = None
    comfyui_choices: bool = False

    def random_range(self) -> tuple[int, int]:
        low = int(self.minimum) if self.minimum is not None else 0
        high = int(self.maximum) if self.maximum is not None else RANDOM_MAX
        return low, max(low, min(high, RANDOM_MAX))


def describe(value: object) -> str:
    """`string "12"`, `number 2.5`, `boolean true`: what a JSON caller sent, in its words."""
    kinds = {str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    kind = kinds.get(type(value), "array" if isinstance(value, list) else "object")
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"
