"""Binding and the JSON Schema a template publishes accept exactly the same params: random
templates (seeded) read through the manifest loader, random params for them, valid and not,
given to `bind` and, for the schema, to the `jsonschema` package."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from comfyui_worker.exceptions import InvalidParamsError
from comfyui_worker.templates.binding import bind
from comfyui_worker.templates.manifest import Template, load_catalogue
from comfyui_worker.templates.schema import params_schema
from template_dirs import make_dir

SEED = 17
TEMPLATES = 120
PARAMS_PER_TEMPLATE = 40
PARAMS_PER_TEMPLATE_MAX = 5

NUMBERS: list[Any] = [0, 1, -1, 2, 7, 16, 64, 100, 2**53, 10**20, 0.5, 2.5, -0.25, 1e300]
NUMBERS += [64.0, 1.0, 16.0, -0.0, 1e20]  # integers written as floats
STRINGS = ["", "a", "b", "lanczos", "1", "2.5", "true", "null", "ü"]
CHOICES: list[Any] = [0, 1, 2.5, 7, "a", "b", "1", "true", ""]
COMFYUI_LISTS: list[Any] = ["nearest-exact", "bilinear", "area", 1, 2.5, "a"]
IMAGE_KEYS = ["base64", "url", "uri", "path"]
IMAGE_PARTS: list[Any] = ["iVBORw0KGgo=", "https://e/x.png", "s3://b/k.png", "", None, 5, True]


def scalar(rng: random.Random) -> Any:
    return rng.choice(
        [
            rng.choice(NUMBERS),
            rng.randint(-200, 200),
            round(rng.uniform(-200, 200), 3),
            rng.choice(STRINGS),
            rng.choice([True, False, None]),
        ]
    )


def any_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 1 or roll < 0.7:
        return scalar(rng)
    if roll < 0.85:
        return [any_value(rng, depth + 1) for _ in range(rng.randint(0, 2))]
    return {rng.choice(IMAGE_KEYS): any_value(rng, depth + 1) for _ in range(rng.randint(0, 2))}


def image_value(rng: random.Random) -> dict[str, Any]:
    keys = rng.sample(IMAGE_KEYS[:3], rng.choice([1, 1, 1, 2, 3])) + (
        ["path"] if rng.random() < 0.1 else []
    )
    return {k: rng.choice(IMAGE_PARTS[:3]) if rng.random() < 0.8 else scalar(rng) for k in keys}


def number_in(rng: random.Random, definition: dict[str, Any], *, integer: bool) -> Any:
    low, high = definition.get("min"), definition.get("max")
    if low is None:
        low = (0 if high is None else high) - 1000
    if high is None:
        high = low + 1000
    if integer:
        return rng.choice([int(low), int(high), rng.randint(int(low), int(high))])
    return rng.choice([low, high, low + (high - low) * rng.random()])


def definition(rng: random.Random, node: int) -> tuple[dict[str, Any], tuple[Any, ...] | None]:
    """A random valid definition, and ComfyUI's list if it takes `choices: comfyui`."""
    kind = rng.choice(["string", "int", "float", "bool", "enum", "comfyui", "image"])
    raw: dict[str, Any] = {"type": "enum" if kind == "comfyui" else kind}
    raw["targets"] = [{"node": str(node), "input": "v"}]
    comfyui: tuple[Any, ...] | None = None
    if kind in ("int", "float"):
        pool = [n for n in NUMBERS if kind == "float" or float(n).is_integer()]
        bounds = sorted(rng.sample(pool, 2))
        if rng.random() < 0.6:
            raw["min"] = bounds[0]
        if rng.random() < 0.6:
            raw["max"] = bounds[1]
    if kind == "enum":
        raw["choices"] = rng.sample(CHOICES, rng.randint(1, 4))
    if kind == "comfyui":
        raw["choices"] = "comfyui"
        comfyui = tuple(rng.sample(COMFYUI_LISTS, rng.randint(1, 4)))
    if kind != "image" and rng.random() < 0.4:
        raw["default"] = rng.choice(valid_values(rng, raw, comfyui))
        if kind == "int" and rng.random() < 0.3:
            raw["default"] = "random"
    elif rng.random() < 0.4:
        raw["required"] = True
    return raw, comfyui


def valid_values(
    rng: random.Random, raw: dict[str, Any], comfyui: tuple[Any, ...] | None
) -> list[Any]:
    kind = raw["type"]
    if kind == "string":
        return [rng.choice(STRINGS)]
    if kind == "bool":
        return [True, False]
    if kind == "int":
        value = number_in(rng, raw, integer=True)
        return [value, float(value)] if abs(value) < 2**53 else [value]
    if kind == "float":
        return [number_in(rng, raw, integer=False), number_in(rng, raw, integer=True)]
    if kind == "enum":
        return list(comfyui if comfyui is not None else raw["choices"])
    return [image_value(rng)]


def random_templates(rng: random.Random, root: Path) -> list[tuple[Template, dict[str, Any]]]:
    entries: dict[str, Any] = {}
    lists: dict[str, dict[str, tuple[Any, ...]]] = {}
    definitions: dict[str, dict[str, tuple[dict[str, Any], tuple[Any, ...] | None]]] = {}
    for t in range(TEMPLATES):
        name = f"t{t}"
        count = rng.randint(1, PARAMS_PER_TEMPLATE_MAX)
        definitions[name] = {f"p{i}": definition(rng, i + 1) for i in range(count)}
        lists[name] = {p: c for p, (_, c) in definitions[name].items() if c is not None}
        entries[name] = {
            "workflow_file": "graph.json",
            "parameters": [{p: raw} for p, (raw, _) in definitions[name].items()],
        }
    graph = {
        str(i): {"class_type": "Node", "inputs": {"v": 0}}
        for i in range(1, PARAMS_PER_TEMPLATE_MAX + 1)
    }
    catalogue = load_catalogue(
        make_dir(root, yaml.safe_dump(entries, allow_unicode=True), graph=graph)
    )
    assert catalogue.broken == {}, next(iter(catalogue.broken.values()))
    return [
        (catalogue.templates[name], {"lists": lists[name], "definitions": definitions[name]})
        for name in entries
    ]


def random_params(rng: random.Random, about: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, (raw, comfyui) in about["definitions"].items():
        roll = rng.random()
        if roll < 0.25:
            continue
        if roll < 0.65:
            params[name] = rng.choice(valid_values(rng, raw, comfyui))
        elif raw["type"] == "image" and roll < 0.8:
            params[name] = image_value(rng)
        else:
            params[name] = any_value(rng)
    if rng.random() < 0.05:
        params["unknown"] = scalar(rng)
    return params


def binds(template: Template, params: dict[str, Any], lists: dict[str, Any]) -> bool:
    try:
        bind(template, params, rng=random.Random(0), choices=lists)
    except InvalidParamsError:
        return False
    return True


def test_binding_accepts_exactly_what_the_schema_accepts(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    verdicts = {True: 0, False: 0}
    for template, about in random_templates(rng, tmp_path / "t"):
        schema = params_schema(template, about["lists"])
        Draft202012Validator.check_schema(schema)
        validator = Draft202012Validator(schema)
        for _ in range(PARAMS_PER_TEMPLATE):
            params = random_params(rng, about)
            accepted = binds(template, params, about["lists"])
            assert accepted == validator.is_valid(params), (template.name, params, schema)
            verdicts[accepted] += 1
    total = TEMPLATES * PARAMS_PER_TEMPLATE
    assert verdicts[True] > total // 4 and verdicts[False] > total // 4, verdicts
