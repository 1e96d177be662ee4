"""Strict binding: no coercion surprises, every broken rule named, the template untouched."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest

from comfyui_worker.exceptions import BrokenTemplateError, InvalidParamsError
from comfyui_worker.templates.binding import bind, parse_text_value, seeded_rng
from comfyui_worker.templates.manifest import Template, load_catalogue
from comfyui_worker.templates.params import RANDOM_MAX
from template_dirs import EXAMPLES, make_dir

CATALOGUE = load_catalogue(EXAMPLES)
SOLID = CATALOGUE.templates["solid"]
ANIMATE = CATALOGUE.templates["animate"]
INVERT = CATALOGUE.templates["invert"]
METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")


def bind_solid(params: Any, **kwargs: Any) -> Any:
    return bind(SOLID, params, rng=random.Random(1), choices={"method": METHODS}, **kwargs)


def test_values_defaults_and_the_workflows_own_values() -> None:
    bound = bind_solid({"caption": "hi", "width": 64, "scale": 2})
    inputs = {nid: node["inputs"] for nid, node in bound.workflow.items()}
    assert inputs["4"]["source"] == "hi"
    assert (inputs["1"]["width"], inputs["1"]["height"]) == (64, 512)  # given, default
    assert inputs["2"]["scale_by"] == 2 and inputs["2"]["upscale_method"] == "bilinear"
    assert 0 <= inputs["1"]["color"] <= 16777215
    assert bound.params == {
        "caption": "hi",
        "color": inputs["1"]["color"],
        "width": 64,
        "height": 512,
        "prefix": "templates/solid",  # no default: the workflow's own value, reported
        "scale": 2,
        "method": "bilinear",
    }


def test_binding_works_on_a_copy() -> None:
    before = copy.deepcopy(SOLID.workflow)
    bound = bind_solid({"caption": "x", "prefix": "elsewhere/p"})
    assert SOLID.workflow == before
    assert bound.workflow["3"]["inputs"]["filename_prefix"] == "elsewhere/p"
    assert bound.workflow["2"]["inputs"]["image"] is not SOLID.workflow["2"]["inputs"]["image"]


@pytest.mark.parametrize(
    ("params", "parameter", "rule", "fragment"),
    [
        (
            {"caption": "x", "lossless": True},
            "lossless",
            "unknown",
            "parameter 'lossless' is unknown",
        ),
        ({}, "caption", "required", "parameter 'caption' is required and missing"),
        ({"caption": 5}, "caption", "type", "expected a string, got number 5"),
        ({"caption": "x", "width": 2.5}, "width", "type", "expected an integer, got number 2.5"),
        ({"caption": "x", "width": "12"}, "width", "type", 'expected an integer, got string "12"'),
        ({"caption": "x", "width": True}, "width", "type", "expected an integer, got boolean true"),
        ({"caption": "x", "width": None}, "width", "type", "got null"),
        ({"caption": "x", "scale": True}, "scale", "type", "expected a number, got boolean true"),
        ({"caption": "x", "scale": "1.5"}, "scale", "type", 'got string "1.5"'),
        ({"caption": "x", "width": 8}, "width", "min", "8 is below the minimum 16 (min)"),
        ({"caption": "x", "scale": 4.5}, "scale", "max", "4.5 is above the maximum 4.0 (max)"),
        ({"caption": "x", "method": "cubic"}, "method", "choices", '"cubic" is not one of'),
    ],
)
def test_bad_params_are_named(params: Any, parameter: str, rule: str, fragment: str) -> None:
    with pytest.raises(InvalidParamsError) as caught:
        bind_solid(params)
    problem = caught.value.problems[0]
    assert (problem.parameter, problem.rule) == (parameter, rule)
    assert fragment in str(caught.value) and str(caught.value).startswith("template 'solid': ")
    details = caught.value.details()
    assert (details["template"], details["parameter"], details["rule"]) == (
        "solid",
        parameter,
        rule,
    )


def test_an_integer_is_a_json_integer_however_written() -> None:
    # JSON has one kind of number: 64.0 is the integer 64 (as for the JSON Schema "integer").
    bound = bind_solid({"caption": "x", "width": 64.0})
    assert bound.params["width"] == 64 and type(bound.params["width"]) is int
    assert type(bound.workflow["1"]["inputs"]["width"]) is int
    with pytest.raises(InvalidParamsError, match=r"expected an integer, got number 64\.5"):
        bind_solid({"caption": "x", "width": 64.5})


@pytest.mark.parametrize("value", ["false", "true", 0, 1, None])
def test_a_bool_is_only_true_or_false(value: Any) -> None:
    with pytest.raises(InvalidParamsError, match="expected a boolean"):
        bind(ANIMATE, {"lossless": value}, rng=random.Random())
    assert bind(ANIMATE, {"lossless": True}, rng=random.Random()).params["lossless"] is True


def test_enum_choices_are_strict_about_type(tmp_path: Path) -> None:
    root = make_dir(
        tmp_path / "t",
        """
pick:
  workflow_file: graph.json
  parameters:
    - n: {type: enum, choices: [1, 2, three], targets: [{node: Text, input: source}]}
""",
    )
    template = load_catalogue(root).templates["pick"]
    assert bind(template, {"n": 1}, rng=random.Random()).params == {"n": 1}
    assert bind(template, {"n": "three"}, rng=random.Random()).params == {"n": "three"}
    for value in (True, "1", 3):
        with pytest.raises(InvalidParamsError, match='is not one of the choices: 1, 2, "three"'):
            bind(template, {"n": value}, rng=random.Random())
    with pytest.raises(InvalidParamsError, match='"medium" is not one of the choices'):
        bind(ANIMATE, {"method": "medium"}, rng=random.Random())


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidParamsError) as caught:
        bind_solid({"width": "a", "height": 1, "nope": 1})
    rules = sorted((p.parameter, p.rule) for p in caught.value.problems)
    assert rules == [
        ("caption", "required"),
        ("height", "min"),
        ("nope", "unknown"),
        ("width", "type"),
    ]


def test_params_must_be_an_object() -> None:
    with pytest.raises(InvalidParamsError, match="params must be a JSON object, got array"):
        bind_solid(["caption"])


def test_random_defaults_differ_per_job_and_repeat_per_key() -> None:
    drawn = {bind(ANIMATE, {}, rng=seeded_rng(None)).params["color"] for _ in range(5)}
    assert len(drawn) > 1
    first = bind(ANIMATE, {}, rng=seeded_rng("prompt-1")).params["color"]
    assert bind(ANIMATE, {}, rng=seeded_rng("prompt-1")).params["color"] == first
    assert bind(ANIMATE, {"color": 7}, rng=seeded_rng(None)).params["color"] == 7


def test_random_range_is_json_safe(tmp_path: Path) -> None:
    root = make_dir(
        tmp_path / "t",
        """
seeded:
  workflow_file: graph.json
  parameters:
    - seed:
        type: int
        default: random
        min: 0
        max: 18446744073709551615
        targets: [{node: Canvas, input: color}]
""",
    )
    template: Template = load_catalogue(root).templates["seeded"]
    assert template.params["seed"].random_range() == (0, RANDOM_MAX)
    big = 18446744073709551615
    assert bind(template, {"seed": big}, rng=random.Random()).params["seed"] == big


def test_a_default_comfyui_refuses_is_the_templates_fault() -> None:
    with pytest.raises(BrokenTemplateError, match="default of parameter 'method'"):
        bind(SOLID, {"caption": "x"}, rng=random.Random(), choices={"method": ("area",)})


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("width", "64", 64),
        ("width", "2.5", "2.5"),  # stays text, so the error shows what was typed
        ("scale", "2", 2.0),
        ("caption", "12", "12"),
        ("method", "area", "area"),
    ],
)
def test_command_line_values_follow_the_declared_type(name: str, text: str, value: Any) -> None:
    assert parse_text_value(SOLID.params[name], text) == value


@pytest.mark.parametrize(("text", "value"), [("true", True), ("False", False), ("yes", "yes")])
def test_command_line_booleans(text: str, value: Any) -> None:
    assert parse_text_value(ANIMATE.params["lossless"], text) == value


@pytest.mark.parametrize(
    ("source", "input_name", "reported"),
    [
        ({"url": "https://example.com/a/cat.JPG?x=1"}, "photo.jpg", None),
        ({"uri": "s3://bucket/in/cat.webp"}, "photo.webp", None),
        ({"url": "https://example.com/cat"}, "photo.png", None),
        ({"base64": "data:image/jpeg;base64,/9j/4AAQ"}, "photo.jpg", {"input": "photo.jpg"}),
        ({"base64": "iVBORw0KGgo="}, "photo.png", {"input": "photo.png"}),
    ],
)
def test_image_parameters_become_job_inputs(
    source: dict[str, str], input_name: str, reported: Any
) -> None:
    bound = bind(INVERT, {"photo": source}, rng=random.Random())
    assert bound.workflow["1"]["inputs"]["image"] == input_name
    assert list(bound.inputs) == [input_name]
    assert bound.inputs[input_name].model_dump(exclude_none=True) == source
    # Sources are reported as given (a rerun can reuse them); bytes are not repeated.
    assert bound.params["photo"] == (reported or source)
    assert INVERT.workflow["1"]["inputs"]["image"] == "example.png"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"path": "/tmp/x.png"}, "unknown key path"),
        ({"url": "https://e/x.png", "uri": "s3://b/x.png"}, "exactly one of base64, url or uri"),
        ({}, "exactly one of base64, url or uri"),
        ("https://e/x.png", 'expected an input object ({"base64": ...}'),
    ],
)
def test_a_bad_image_parameter_is_named(value: Any, fragment: str) -> None:
    with pytest.raises(InvalidParamsError) as caught:
        bind(INVERT, {"photo": value}, rng=random.Random())
    assert caught.value.problems[0].parameter == "photo"
    assert caught.value.problems[0].rule in ("image", "type")
    assert fragment in str(caught.value)
    with pytest.raises(InvalidParamsError, match="parameter 'photo' is required"):
        bind(INVERT, {}, rng=random.Random())
