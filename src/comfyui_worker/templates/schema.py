"""What a template takes, for people (`templates show`) and for programs (its JSON Schema,
the very schema binding checks values against: see `values`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .manifest import Template
from .params import ParamSpec
from .values import value_schema


def param_schema(
    spec: ParamSpec, template: Template, choices: tuple[Any, ...] | None = None
) -> dict[str, Any]:
    """`choices`: ComfyUI's list for a `choices: comfyui` parameter, when known."""
    schema = value_schema(spec, choices)
    if spec.comfyui_choices and choices is None:
        schema["x-choices"] = f"ComfyUI's list for {_targets(spec, template)}"
    if spec.has_default:
        schema["default"] = spec.default
    description = spec.description
    if spec.random_default:
        description = (description + " " if description else "") + "(random when omitted)"
    if description:
        schema["description"] = description
    return schema


def params_schema(
    template: Template, choices: Mapping[str, tuple[Any, ...]] | None = None
) -> dict[str, Any]:
    """The JSON Schema of the `params` object this template takes; `choices` as binding gets
    them (ComfyUI's lists, by parameter)."""
    choices = choices or {}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"params of template {template.name}",
        "description": template.description,
        "type": "object",
        "properties": {
            name: param_schema(spec, template, choices.get(name))
            for name, spec in template.params.items()
        },
        "required": [name for name, spec in template.params.items() if spec.required],
        "additionalProperties": False,
    }


def _targets(spec: ParamSpec, template: Template) -> str:
    return ", ".join(
        f"node {t.node_id} {t.class_type}.{t.input}" for t in template.targets[spec.name]
    )


def describe_template(template: Template) -> str:
    """`templates show NAME`: every parameter with type, default, range, choices, description."""
    lines = [f"{template.name}: {template.description}".rstrip(": ")]
    lines.append(f"workflow: {template.workflow_file}")
    lines.append("parameters:" if template.params else "parameters: none")
    width = max((len(n) for n in template.params), default=0)
    for name, spec in template.params.items():
        facts = [spec.type.value]
        if spec.required:
            facts.append("required")
        elif spec.random_default:
            facts.append("default: random")
        elif spec.has_default:
            facts.append(f"default: {json.dumps(spec.default)}")
        else:
            facts.append(f"default: the workflow's {json.dumps(template.workflow_value(name))}")
        if spec.minimum is not None or spec.maximum is not None:
            low = "" if spec.minimum is None else spec.minimum
            high = "" if spec.maximum is None else spec.maximum
            facts.append(f"range: {low}..{high}")
        if spec.choices is not None:
            facts.append("choices: " + ", ".join(json.dumps(c) for c in spec.choices))
        elif spec.comfyui_choices:
            facts.append(f"choices: ComfyUI's list for {_targets(spec, template)}")
        facts.append(f"-> {_targets(spec, template)}")
        lines.append(f"  {name.ljust(width)}  " + "  ".join(facts))
        if spec.description:
            lines.append(f"  {' ' * width}  {spec.description}")
    return "\n".join(lines)
