"""Parameters onto a template: checked strictly, written into a copy of its workflow.

Every rule every parameter breaks is reported at once. What the job really ran with (given
values, defaults, drawn seeds, the workflow's own values for parameters left out) comes back as
the effective parameters, so any run can be reproduced from its result.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from ..exceptions import BrokenTemplateError, InvalidParamsError, TemplateProblem
from ..job import InputSource
from .manifest import Template
from .params import ParamSpec, ParamType, describe
from .values import as_bound, check_value


@dataclass(slots=True, kw_only=True)
class BoundTemplate:
    """`job.BoundTemplate`: what `run_job` needs of a template job."""

    template: str
    workflow: dict[str, Any]  # the bound copy, ready for input rewriting
    params: dict[str, Any]  # effective parameters, returned with the result
    inputs: dict[str, InputSource] = field(default_factory=dict)  # image parameters


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
    images: dict[str, InputSource] = {}
    template_problems: list[TemplateProblem] = []
    for name, spec in template.params.items():
        if name in given:
            if (problem := check_value(spec, given[name], choices=choices.get(name))) is not None:
                problems.append(problem)
                continue
            value = as_bound(spec.type, given[name])
            if spec.type is ParamType.IMAGE:
                # Its schema, the model's own, has checked it.
                images[name] = InputSource.model_validate(value)
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
    inputs: dict[str, InputSource] = {}
    for name, source in images.items():
        # The targets get the input's name; the job's input upload replaces it with the
        # uploaded file's name, as for the envelope's own inputs.
        input_name = image_input_name(name, source)
        inputs[input_name] = source
        effective[name] = input_name
    workflow = copy.deepcopy(template.workflow)
    for name, value in effective.items():
        for target in template.targets[name]:
            workflow[target.node_id]["inputs"][target.input] = copy.deepcopy(value)
    for name, source in images.items():
        # Reported as given, so the run can be repeated, except bytes: those are in the
        # result's inputs (size, sha256), not in it twice.
        effective[name] = (
            {"input": effective[name]}
            if source.base64 is not None
            else source.model_dump(exclude_none=True)
        )
    return BoundTemplate(template=template.name, workflow=workflow, params=effective, inputs=inputs)


_DATA_URL = re.compile(r"\s*data:([^;,]+)")
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
_MIME_SUFFIXES = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "image/tiff": ".tif",
}


def image_input_name(param: str, source: InputSource) -> str:
    """`<param><suffix>`: the suffix of the URL or URI path, or of a data URL's type, else
    .png. Loader nodes list only files with an image suffix, so one is always there."""
    suffix = ""
    if source.url is not None or source.uri is not None:
        path = urlsplit(source.url or source.uri or "").path
        suffix = PurePosixPath(path).suffix.lower()
    elif source.base64 is not None and (match := _DATA_URL.match(source.base64)):
        suffix = _MIME_SUFFIXES.get(match.group(1).lower(), "")
    return param + (suffix if suffix in _IMAGE_SUFFIXES else ".png")


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
    return text
