"""Parameters onto a template: checked strictly, written into a copy of its workflow.

Every rule every parameter breaks is reported at once. What the job really ran with (given
values, defaults, drawn seeds, the workflow's own values for parameters left out) comes back as
the effective parameters, so any run can be reproduced from its result.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import BrokenTemplateError, InvalidParamsError, TemplateProblem
from .manifest import Template
from .params import ParamSpec, ParamType, check_value, describe


@dataclass(frozen=True, slots=True, kw_only=True)
class BoundTemplate:
    template: str
    workflow: dict[str, Any]  # the bound copy, ready for input rewriting
    params: dict[str, Any]  # effective parameters, returned with the result
    inputs: dict[str, Any] = field(default_factory=dict)  # image parameters, uploaded like inputs


def seeded_rng(key: str | None) -> random.Random:
    """Per job: the same draws for every attempt of one job (`key`, e.g. its prompt id), so a
    retry that attaches to the first attempt's prompt reports the seed that prompt used."""
    return random.Random(key) if key is not None else random.SystemRandom()


def bind(
    template: Template,
    given: object,
    *,
    rng: random.Random,
    choices: Mapping[str, tuple[Any, ...]] | None = None,
) -> BoundTemplate:
    """Check `given` against the template and write it into a copy of its workflow.

    `choices`: ComfyUI's lists for the `choices: comfyui` parameters. Raises
    InvalidParamsError for the caller's mistakes, BrokenTemplateError for the template's own
    (a default ComfyUI does not allow).
    """
    choices = choices or {}
    if not isinstance(given, dict):
        raise InvalidParamsError.of(
            template.name,
            [
                TemplateProblem(
                    None, "params", f"params must be a JSON object, got {describe(given)}"
                )
            ],
        )
    problems: list[TemplateProblem] = []
    known = ", ".join(template.params) or "none"
    for key in given:
        if key not in template.params:
            problems.append(
                TemplateProblem(
                    str(key), "unknown", f"parameter {key!r} is unknown (it takes: {known})"
                )
            )
    effective: dict[str, Any] = {}
    template_problems: list[TemplateProblem] = []
    for name, spec in template.params.items():
        if name in given:
            value = given[name]
            if (problem := check_value(spec, value, choices=choices.get(name))) is not None:
                problems.append(problem)
                continue
        elif spec.required:
            problems.append(
                TemplateProblem(name, "required", f"parameter {name!r} is required and missing")
            )
            continue
        elif spec.random_default:
            value = rng.randint(*spec.random_range())
        elif spec.has_default:
            value = spec.default
            if (problem := check_value(spec, value, choices=choices.get(name))) is not None:
                template_problems.append(
                    TemplateProblem(name, "default", f"default of {problem.message}")
                )
                continue
        else:
            value = template.workflow_value(name)
        effective[name] = value
    if problems:
        raise InvalidParamsError.of(template.name, problems)
    if template_problems:
        raise BrokenTemplateError.of(template.name, template_problems)
    workflow = copy.deepcopy(template.workflow)
    for name, value in effective.items():
        for target in template.targets[name]:
            workflow[target.node_id]["inputs"][target.input] = copy.deepcopy(value)
    return BoundTemplate(template=template.name, workflow=workflow, params=effective)


_BOOLS = {"true": True, "false": False}


def parse_text_value(spec: ParamSpec, text: str) -> Any:
    """A command-line `key=value` as the JSON value a caller would send, by the parameter's
    type; binding then applies the same rules as for a task. A text that does not read as
    its type stays a string, so the error message shows what was typed."""
    try:
        if spec.type is ParamType.INT:
            return int(text)
        if spec.type is ParamType.FLOAT:
            return float(text)
    except ValueError:
        return text
    if spec.type is ParamType.BOOL:
        return _BOOLS.get(text.lower(), text)
    if spec.type is ParamType.ENUM:
        # A numeric choice given on the command line is still that number.
        for choice in spec.choices or ():
            if not isinstance(choice, str) and json.dumps(choice) == text:
                return choice
    if spec.type is ParamType.IMAGE:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text
