"""Which values a parameter takes, written once, as JSON Schema: `templates show --json`
publishes that schema and binding checks every value against it, so the two cannot disagree.

Only the keywords these schemas use are evaluated, with JSON's meaning: there is one kind of
number (64.0 is the integer 64), booleans are not numbers and `true` is not `1`; NaN and the
infinities are not JSON numbers. A validation keyword not evaluated here is an error rather
than silently ignored. Nothing is coerced: the string "false" is not a boolean, and 2.5, "12"
and `true` are not integers.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..exceptions import TemplateProblem
from ..job import InputSource
from .params import ParamSpec, ParamType, describe

Schema = dict[str, Any]

JSON_TYPES = {
    ParamType.STRING: "string",
    ParamType.INT: "integer",
    ParamType.FLOAT: "number",
    ParamType.BOOL: "boolean",
}
_INPUT_FORMS = '{"base64": ...}, {"url": ...} or {"uri": ...}'
EXPECTED = {
    ParamType.STRING: "a string",
    ParamType.INT: "an integer",
    ParamType.FLOAT: "a number",
    ParamType.BOOL: "a boolean (true or false)",
    ParamType.ENUM: "a string or a number",
    ParamType.IMAGE: f"an input object ({_INPUT_FORMS})",
}

_EVALUATED = frozenset(
    {"type", "minimum", "maximum", "enum"}
    # for the input object of an image parameter
    | {"properties", "required", "additionalProperties", "anyOf", "oneOf"}
)
_ANNOTATIONS = frozenset({"$schema", "title", "description", "default", "x-choices"})


@functools.cache
def _image_schema() -> Schema:
    # The object a job's `inputs` take, from the model that reads them.
    return {k: v for k, v in InputSource.model_json_schema().items() if k != "title"}


def value_schema(spec: ParamSpec, choices: tuple[Any, ...] | None = None) -> Schema:
    """The JSON Schema of the values `spec` takes (a new dict). `choices` replaces the spec's
    own: ComfyUI's list for `choices: comfyui`; without it only the kinds of value such a list
    holds are known."""
    if spec.type is ParamType.ENUM:
        allowed = choices if choices is not None else spec.choices
        return {"enum": list(allowed)} if allowed is not None else {"type": ["string", "number"]}
    if spec.type is ParamType.IMAGE:
        return copy.deepcopy(_image_schema())
    schema: Schema = {"type": JSON_TYPES[spec.type]}
    if spec.minimum is not None:
        schema["minimum"] = spec.minimum
    if spec.maximum is not None:
        schema["maximum"] = spec.maximum
    return schema


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _is_integer(value: object) -> bool:
    if not _is_number(value):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


_TYPES: dict[str, Callable[[object], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def is_json_type(value: object, kind: str | list[str]) -> bool:
    """Whether `value` is of the JSON Schema type (or one of the types) `kind`."""
    return any(_TYPES[k](value) for k in ([kind] if isinstance(kind, str) else kind))


def same_value(a: object, b: object) -> bool:
    """JSON's equality, as `enum` compares: numbers by value (1 is 1.0), anything else by
    kind and value (`true` is not 1, "1" is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def as_bound(kind: ParamType, value: Any) -> Any:
    """The value written into the workflow: an integer written 64.0 is the integer 64, and a
    ComfyUI INT input wants an int."""
    return int(value) if kind is ParamType.INT and isinstance(value, float) else value


@dataclass(frozen=True, slots=True)
class Violation:
    keyword: str  # of the schema
    at: tuple[str, ...]  # keys inside the value: () is the value itself
    value: object  # the part of the value at `at` (None for a missing key)


def violation(schema: Schema, value: object, at: tuple[str, ...] = ()) -> Violation | None:
    """The first keyword of `schema` that `value` breaks, or None when it is valid."""
    unknown = set(schema) - _EVALUATED - _ANNOTATIONS
    extra = schema.get("additionalProperties", True)
    if unknown or not isinstance(extra, bool):
        raise ValueError(f"schema keyword(s) not evaluated here: {schema}")
    if "type" in schema and not is_json_type(value, schema["type"]):
        return Violation("type", at, value)
    if isinstance(value, int | float) and _is_number(value):
        if "minimum" in schema and value < schema["minimum"]:
            return Violation("minimum", at, value)
        if "maximum" in schema and value > schema["maximum"]:
            return Violation("maximum", at, value)
    if "enum" in schema and not any(same_value(value, c) for c in schema["enum"]):
        return Violation("enum", at, value)
    if isinstance(value, dict):
        properties: dict[str, Schema] = schema.get("properties", {})
        for key in value:
            if not extra and key not in properties:
                return Violation("additionalProperties", (*at, str(key)), value[key])
        for key in schema.get("required", ()):
            if key not in value:
                return Violation("required", (*at, key), None)
        for key, sub in properties.items():
            if key in value and (found := violation(sub, value[key], (*at, key))) is not None:
                return found
    if "anyOf" in schema and all(violation(s, value, at) for s in schema["anyOf"]):
        return Violation("anyOf", at, value)
    if "oneOf" in schema and sum(violation(s, value, at) is None for s in schema["oneOf"]) != 1:
        return Violation("oneOf", at, value)
    return None


def listing(values: tuple[Any, ...] | list[Any]) -> str:
    shown = ", ".join(json.dumps(v, ensure_ascii=False) for v in values[:20])
    return shown + (f", ... ({len(values)} in all)" if len(values) > 20 else "")


def check_value(
    spec: ParamSpec, value: object, *, choices: tuple[Any, ...] | None = None
) -> TemplateProblem | None:
    """The first rule `value` breaks for `spec` (by its `value_schema`), or None."""
    schema = value_schema(spec, choices)
    found = violation(schema, value)
    if found is None:
        return None
    rule, why = _explain(spec, schema, found)
    return TemplateProblem(spec.name, rule, f"parameter {spec.name!r}: {why}")


def _explain(spec: ParamSpec, schema: Schema, found: Violation) -> tuple[str, str]:
    """(rule, message) in the words of the manifest, not of JSON Schema."""
    value = found.value
    if found.keyword == "type" and not found.at:
        return "type", f"expected {EXPECTED[spec.type]}, got {describe(value)}"
    if found.keyword == "minimum":
        return "min", f"{value} is below the minimum {spec.minimum} (min)"
    if found.keyword == "maximum":
        return "max", f"{value} is above the maximum {spec.maximum} (max)"
    if found.keyword == "enum":
        return "choices", f"{describe(value)} is not one of the choices: {listing(schema['enum'])}"
    # The rest are the parts of an input object (an image parameter).
    where = ".".join(found.at)
    if found.keyword == "additionalProperties":
        why = f"unknown key {where}"
    elif found.keyword == "oneOf":
        why = "an input needs exactly one of base64, url or uri"
    else:
        why = f"{where or 'it'} must be a string, got {describe(value)}"
    return "image", f"not an input ({why}); give one of {_INPUT_FORMS}"
