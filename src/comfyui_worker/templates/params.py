"""One parameter definition: its type, range, choices, default and where it goes in the graph.

Values are checked as they are, never coerced: the string "false" is not a boolean, 2.5 and "12"
are not integers, and `true` is not an integer either (Python's bool is an int; JSON's is not).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from ..exceptions import TemplateProblem

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


def _same(a: object, b: object) -> bool:
    """Equality without Python's `True == 1`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _listing(values: tuple[Any, ...] | list[Any]) -> str:
    shown = ", ".join(json.dumps(v, ensure_ascii=False) for v in values[:20])
    return shown + (f", ... ({len(values)} in all)" if len(values) > 20 else "")


_EXPECTED = {
    ParamType.STRING: "a string",
    ParamType.INT: "an integer",
    ParamType.FLOAT: "a number",
    ParamType.BOOL: "a boolean (true or false)",
    ParamType.IMAGE: 'an input object ({"base64": ...}, {"url": ...} or {"uri": ...})',
}


def _type_ok(kind: ParamType, value: object) -> bool:
    if kind is ParamType.STRING:
        return isinstance(value, str)
    if kind is ParamType.INT:
        return type(value) is int
    if kind is ParamType.FLOAT:
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    if kind is ParamType.BOOL:
        return isinstance(value, bool)
    if kind is ParamType.IMAGE:
        return isinstance(value, dict)
    return True  # enum: the choices decide


def check_value(
    spec: ParamSpec, value: object, *, choices: tuple[Any, ...] | None = None
) -> TemplateProblem | None:
    """The first rule `value` breaks for `spec`, or None. `choices` replaces the spec's own
    (ComfyUI's list for `choices: comfyui`)."""
    name = spec.name
    if not _type_ok(spec.type, value):
        return TemplateProblem(
            name,
            "type",
            f"parameter {name!r}: expected {_EXPECTED[spec.type]}, got {describe(value)}",
        )
    if spec.minimum is not None and isinstance(value, int | float) and value < spec.minimum:
        return TemplateProblem(
            name, "min", f"parameter {name!r}: {value} is below the minimum {spec.minimum} (min)"
        )
    if spec.maximum is not None and isinstance(value, int | float) and value > spec.maximum:
        return TemplateProblem(
            name, "max", f"parameter {name!r}: {value} is above the maximum {spec.maximum} (max)"
        )
    allowed = choices if choices is not None else spec.choices
    if (
        spec.type is ParamType.ENUM
        and allowed is not None
        and not any(_same(value, c) for c in allowed)
    ):
        return TemplateProblem(
            name,
            "choices",
            f"parameter {name!r}: {describe(value)} is not one of the choices: {_listing(allowed)}",
        )
    return None


class _Collector:
    def __init__(self, name: str, where: str) -> None:
        self.name, self.where = name, where
        self.problems: list[TemplateProblem] = []

    def bad(self, rule: str, message: str) -> None:
        self.problems.append(
            TemplateProblem(self.name, rule, f"{self.where}: parameter {self.name!r}: {message}")
        )


def parse_param(
    name: str, raw: object, where: str
) -> tuple[ParamSpec | None, list[TemplateProblem]]:
    """A definition from YAML, or every problem it has. `where` says which file (and
    template) it came from, for the messages."""
    out = _Collector(name, where)
    if not isinstance(raw, dict):
        out.bad("definition", f"must be a mapping of fields, got {describe(raw)}")
        return None, out.problems
    unknown = sorted(str(k) for k in raw if k not in FIELDS)
    if unknown:
        out.bad("field", f"unknown field(s) {', '.join(unknown)} (allowed: {', '.join(FIELDS)})")
    kind = _parse_type(raw.get("type"), out)
    targets = _parse_targets(raw.get("targets"), out)
    description = raw.get("description", "")
    if not isinstance(description, str):
        out.bad("description", f"description must be a string, got {describe(description)}")
    required = raw.get("required", False)
    if not isinstance(required, bool):
        out.bad("required", f"required must be true or false, got {describe(required)}")
    if kind is None:
        return None, out.problems
    minimum = _parse_bound("min", raw.get("min"), kind, out)
    maximum = _parse_bound("max", raw.get("max"), kind, out)
    if minimum is not None and maximum is not None and minimum > maximum:
        out.bad("max", f"min {minimum} is above max {maximum}")
    choices, comfyui_choices = _parse_choices(raw.get("choices"), kind, out)
    spec = ParamSpec(
        name=name,
        type=kind,
        targets=targets,
        description=description if isinstance(description, str) else "",
        required=required is True,
        minimum=minimum,
        maximum=maximum,
        choices=choices,
        comfyui_choices=comfyui_choices,
    )
    spec = _with_default(spec, raw.get("default"), out)
    return (None if out.problems else spec), out.problems


def _parse_type(raw: object, out: _Collector) -> ParamType | None:
    allowed = ", ".join(t.value for t in ParamType)
    if raw is None:
        out.bad("type", f"needs a type ({allowed})")
        return None
    if isinstance(raw, str) and raw in {t.value for t in ParamType}:
        return ParamType(raw)
    out.bad("type", f"unknown type {describe(raw)} (allowed: {allowed})")
    return None


def _parse_targets(raw: object, out: _Collector) -> tuple[Target, ...]:
    if not isinstance(raw, list) or not raw:
        out.bad(
            "targets", "needs targets: a non-empty list of {node: <id or title>, input: <name>}"
        )
        return ()
    targets: list[Target] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) != {"node", "input"}:
            out.bad("targets", f"target {i + 1} must be {{node, input}}, got {describe(item)}")
            continue
        node, input_name = item["node"], item["input"]
        if type(node) is int:  # `node: 3` in YAML: an id written without quotes
            node = str(node)
        if (
            not isinstance(node, str)
            or not node
            or not isinstance(input_name, str)
            or not input_name
        ):
            out.bad(
                "targets", f"target {i + 1} needs a node and an input name, got {describe(item)}"
            )
            continue
        targets.append(Target(node, input_name))
    return tuple(targets)


def _parse_bound(field: str, raw: object, kind: ParamType, out: _Collector) -> int | float | None:
    if raw is None:
        return None
    if kind not in (ParamType.INT, ParamType.FLOAT):
        out.bad(field, f"{field} applies to int and float parameters, not {kind.value}")
        return None
    if not _type_ok(kind, raw):
        out.bad(field, f"{field} must be {_EXPECTED[kind]}, got {describe(raw)}")
        return None
    assert isinstance(raw, int | float)
    return raw


def _parse_choices(
    raw: object, kind: ParamType, out: _Collector
) -> tuple[tuple[Any, ...] | None, bool]:
    if raw is None:
        if kind is ParamType.ENUM:
            out.bad("choices", "an enum needs choices: a list, or `comfyui` for ComfyUI's own list")
        return None, False
    if kind is not ParamType.ENUM:
        out.bad("choices", f"choices apply to enum parameters, not {kind.value}")
        return None, False
    if raw == COMFYUI:
        return None, True
    if not isinstance(raw, list) or not raw:
        out.bad("choices", f"choices must be a non-empty list or `comfyui`, got {describe(raw)}")
        return None, False
    for value in raw:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            out.bad("choices", f"each choice must be a string or a number, got {describe(value)}")
            return None, False
    repeated = sorted(
        {json.dumps(v) for i, v in enumerate(raw) if any(_same(v, w) for w in raw[:i])}
    )
    if repeated:
        out.bad("choices", f"choice(s) listed twice: {', '.join(repeated)}")
    return tuple(raw), False


def _with_default(spec: ParamSpec, raw: object, out: _Collector) -> ParamSpec:
    if raw is None:
        return spec
    if spec.required:
        out.bad(
            "required",
            "is required and has a default; drop one",
        )
        return spec
    if spec.type is ParamType.IMAGE:
        out.bad("default", "an image parameter cannot have a default")
        return spec
    if raw == RANDOM and spec.type is ParamType.INT:
        return replace(spec, random_default=True)
    # With `choices: comfyui` only the type is checked here; the list is ComfyUI's, checked by
    # `templates check` and at bind time.
    if (problem := check_value(spec, raw)) is not None:
        hint = " (`default: random` is for int parameters)" if raw == RANDOM else ""
        message = problem.message.split(": ", 1)[1]
        out.bad("default", f"default: {message}{hint}")
        return spec
    return replace(spec, has_default=True, default=raw)
