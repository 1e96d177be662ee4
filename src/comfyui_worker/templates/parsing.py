"""A parameter definition read from YAML: a ParamSpec, or every problem it has, each naming
the file, the template and the parameter."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ..exceptions import TemplateProblem
from .params import COMFYUI, FIELDS, RANDOM, ParamSpec, ParamType, Target, describe
from .values import EXPECTED, JSON_TYPES, as_bound, check_value, is_json_type, same_value


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
    if not is_json_type(raw, JSON_TYPES[kind]):
        out.bad(field, f"{field} must be {EXPECTED[kind]}, got {describe(raw)}")
        return None
    bound: int | float = as_bound(kind, raw)
    return bound


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
        {json.dumps(v) for i, v in enumerate(raw) if any(same_value(v, w) for w in raw[:i])}
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
    return replace(spec, has_default=True, default=as_bound(spec.type, raw))
