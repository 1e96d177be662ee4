"""Reading the template directory: every problem named, charged only to the templates it
touches, the others loaded."""

from __future__ import annotations

import random
import re
import tracemalloc
from pathlib import Path

import pytest

from comfyui_worker.exceptions import InvalidParamsError
from comfyui_worker.templates.binding import bind
from comfyui_worker.templates.manifest import load_catalogue
from comfyui_worker.templates.params import ParamType
from template_dirs import EXAMPLES, GRAPH, make_dir, write


def messages(catalogue_broken: tuple[object, ...]) -> str:
    return " | ".join(p.message for p in catalogue_broken)  # type: ignore[attr-defined]


def test_the_examples_load_without_problems() -> None:
    catalogue = load_catalogue(EXAMPLES)
    assert sorted(catalogue.templates) == ["animate", "invert", "solid"]
    assert catalogue.broken == {} and catalogue.file_problems == ()
    solid = catalogue.templates["solid"]
    assert solid.params["caption"].required  # an override made it required
    assert solid.params["method"].comfyui_choices
    assert solid.params["color"].random_default
    animate = catalogue.templates["animate"]
    assert animate.params["width"].default == 256  # overridden per template
    assert catalogue.templates["solid"].params["width"].default == 512  # not elsewhere
    assert animate.params["lossless"].type is ParamType.BOOL


def test_targets_by_id_by_title_and_several(tmp_path: Path) -> None:
    root = make_dir(
        tmp_path / "t",
        """
both:
  workflow_file: graph.json
  parameters:
    - color:
        type: int
        targets: [{node: Canvas, input: color}, {node: 2, input: color}]
    - text:
        type: string
        targets: [{node: "5", input: source}]
""",
    )
    template = load_catalogue(root).templates["both"]
    assert [t.node_id for t in template.targets["color"]] == ["1", "2"]
    assert [(t.node_id, t.class_type) for t in template.targets["text"]] == [("5", "PreviewAny")]


TEXT = "[{node: Text, input: source}]"
BASE = """
size:
  type: int
  default: 64
  min: 16
  max: 128
  targets: [{node: Canvas, input: width}]
"""


@pytest.mark.parametrize(
    ("entry", "rule", "fragment"),
    [
        (
            "parameters: [{p: {type: int, targets: [{node: Nope, input: color}]}}]",
            "node",
            "no node has the id or _meta.title 'Nope'",
        ),
        (
            "parameters: [{p: {type: int, targets: [{node: Canvas, input: colour}]}}]",
            "input",
            "node 1 (EmptyImage) has no input 'colour'",
        ),
        (
            "parameters: [{p: {type: string, targets: [{node: Save, input: filename_prefix}]}}]",
            "node",
            "the title 'Save' matches 2 nodes (3, 4)",
        ),
        (
            "parameters: [{p: {type: string, targets: [{node: Save, input: images}]}}]",
            "node",
            "matches 2 nodes",
        ),
        (
            "parameters: [{p: {type: int, targets: [{node: '3', input: images}]}}]",
            "input",
            "is a link to another node",
        ),
        (
            "parameters: [size, size]",
            "defined-twice",
            "parameter 'size' is listed twice",
        ),
        (
            "parameters: [{size: {type: int, targets: [{node: Canvas, input: height}]}}]",
            "defined-twice",
            "parameter 'size' is defined inline and in base.yaml",
        ),
        ("parameters: [sizes]", "unknown-parameter", "'sizes' is neither in base.yaml"),
        (
            "parameters: [size]\n  overrides: {width: {default: 1}}",
            "overrides",
            "overrides 'width', which is not among its parameters",
        ),
        (
            "parameters: [size]\n  overrides: {size: {default: 200}}",
            "default",
            "default: 200 is above the maximum 128 (max)",
        ),
        (
            "parameters: [size]\n  overrides: {size: {required: true, default: 100}}",
            "required",
            "is required and has a default",
        ),
        (
            "parameters: [{p: {type: enum, targets: [{node: Text, input: source}]}}]",
            "choices",
            "an enum needs choices",
        ),
        (
            "parameters: [{p: {type: integer, targets: [{node: Text, input: source}]}}]",
            "type",
            'unknown type string "integer"',
        ),
        (
            "parameters: [{p: {type: bool, default: 'false', targets: " + TEXT + "}}]",
            "default",
            'expected a boolean (true or false), got string "false"',
        ),
        (
            "parameters: [{p: {type: float, default: random, targets: " + TEXT + "}}]",
            "default",
            "`default: random` is for int parameters",
        ),
        (
            "parameters: [{p: {type: string, maximum: 3, targets: [{node: Text, input: source}]}}]",
            "field",
            "unknown field(s) maximum",
        ),
        (
            "parameters: [{p: {type: int, targets: [{node: 1, input: color}, "
            "{node: Canvas, input: color}]}}]",
            "target-conflict",
            "already the target of parameter 'p'",
        ),
        ("paramters: [size]", "field", "unknown field(s) paramters"),
    ],
)
def test_a_bad_entry_breaks_only_its_template(
    tmp_path: Path, entry: str, rule: str, fragment: str
) -> None:
    root = make_dir(
        tmp_path / "t",
        f"""
good:
  workflow_file: graph.json
  parameters: [size]
bad:
  workflow_file: graph.json
  {entry}
""",
        base=BASE,
    )
    catalogue = load_catalogue(root)
    assert list(catalogue.templates) == ["good"]
    problems = catalogue.broken["bad"]
    assert any(p.rule == rule and fragment in p.message for p in problems), problems
    assert all("template 'bad'" in p.message for p in problems)


LABEL = """
label:
  type: string
  required: true
  targets: [{node: Text, input: source}]
"""


def test_an_override_wins_over_required_or_default_of_a_shared_definition(
    tmp_path: Path,
) -> None:
    root = make_dir(
        tmp_path / "t",
        """
strict:
  workflow_file: graph.json
  parameters: [size, label]
  overrides: {size: {required: true}, label: {default: hi}}
shared:
  workflow_file: graph.json
  parameters: [size, label]
""",
        base=BASE + LABEL,
    )
    catalogue = load_catalogue(root)
    assert catalogue.broken == {}
    strict, shared = catalogue.templates["strict"], catalogue.templates["shared"]
    size, label = strict.params["size"], strict.params["label"]
    assert size.required and not size.has_default and (size.minimum, size.maximum) == (16, 128)
    assert not label.required and label.default == "hi"
    assert shared.params["size"].default == 64 and not shared.params["size"].required
    assert shared.params["label"].required
    with pytest.raises(InvalidParamsError, match="parameter 'size' is required and missing"):
        bind(strict, {}, rng=random.Random())
    assert bind(strict, {"size": 20}, rng=random.Random()).params == {"size": 20, "label": "hi"}


def test_every_problem_of_a_template_is_listed(tmp_path: Path) -> None:
    root = make_dir(
        tmp_path / "t",
        """
bad:
  workflow_file: graph.json
  parameters:
    - a: {type: int, targets: [{node: Nope, input: color}]}
    - b: {type: int, min: 5, max: 1, targets: [{node: Canvas, input: color}]}
    - c: {type: enum, choices: [x, x], targets: [{node: Text, input: source}]}
""",
    )
    rules = sorted((p.parameter, p.rule) for p in load_catalogue(root).broken["bad"])
    assert rules == [("a", "node"), ("b", "max"), ("c", "choices")]


def test_a_missing_or_invalid_workflow_file_breaks_only_its_templates(tmp_path: Path) -> None:
    root = make_dir(
        tmp_path / "t",
        """
ok: {workflow_file: graph.json}
missing: {workflow_file: nowhere.json}
ui: {workflow_file: ui.json}
outside: {workflow_file: ../graph.json}
""",
    )
    write(root / "ui.json", '{"nodes": [], "links": []}')
    catalogue = load_catalogue(root)
    assert list(catalogue.templates) == ["ok"]
    assert "cannot read workflow file" in messages(catalogue.broken["missing"])
    assert "UI format" in messages(catalogue.broken["ui"])
    assert "must be a path inside" in messages(catalogue.broken["outside"])


def test_keys_given_twice_are_not_silently_dropped(tmp_path: Path) -> None:
    root = make_dir(
        tmp_path / "t",
        """
twice: {workflow_file: graph.json}
twice: {workflow_file: graph.json}
uses_size: {workflow_file: graph.json, parameters: [size]}
uses_other: {workflow_file: graph.json, parameters: [other]}
""",
        base=BASE
        + BASE.replace("size:", "other:").replace("width", "height")
        + BASE.replace("default: 64", "default: 65"),
    )
    catalogue = load_catalogue(root)
    assert list(catalogue.templates) == ["uses_other"]
    assert "'twice' is defined twice (lines 2 and 3)" in messages(catalogue.broken["twice"])
    size = messages(catalogue.broken["uses_size"])
    assert "base.yaml: 'size' is defined twice" in size and "parameter 'size'" in size


def test_unreadable_base_yaml_breaks_only_templates_using_shared_parameters(
    tmp_path: Path,
) -> None:
    root = make_dir(
        tmp_path / "t",
        """
shared: {workflow_file: graph.json, parameters: [size]}
inline:
  workflow_file: graph.json
  parameters: [{text: {type: string, targets: [{node: Text, input: source}]}}]
""",
        base="size: {type: int\n",
    )
    catalogue = load_catalogue(root)
    assert list(catalogue.templates) == ["inline"]
    assert "base.yaml is not valid YAML" in messages(catalogue.broken["shared"])
    assert any("base.yaml is not valid YAML" in p.message for p in catalogue.file_problems)


def test_unreadable_workflows_yaml_keeps_known_names_as_broken(tmp_path: Path) -> None:
    root = make_dir(tmp_path / "t", "a: {workflow_file: graph.json")
    catalogue = load_catalogue(root, known=("a", "b"))
    assert catalogue.templates == {} and sorted(catalogue.broken) == ["a", "b"]
    assert "workflows.yaml is not valid YAML" in messages(catalogue.broken["a"])
    assert "line 1" in messages(catalogue.broken["a"])


def test_anchors_aliases_and_merge_keys_work(tmp_path: Path) -> None:
    root = make_dir(
        tmp_path / "t",
        """
one:
  workflow_file: graph.json
  parameters: &both [size, height]
two:
  workflow_file: graph.json
  parameters: *both
  overrides: {height: {default: 100}}
""",
        base=BASE.replace("size:", "size: &size")
        + "height:\n  <<: *size\n  targets: [{node: Canvas, input: height}]\n",
    )
    catalogue = load_catalogue(root)
    assert catalogue.broken == {} and catalogue.file_problems == ()
    height = catalogue.templates["one"].params["height"]
    assert (height.default, height.maximum, height.targets[0].input) == (64, 128, "height")
    assert catalogue.templates["two"].params["height"].default == 100


def nested_aliases(levels: int) -> str:
    """Each level a list of nine aliases of the one before: 9**levels strings in all."""
    lines = ["  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("file", ["workflows.yaml", "base.yaml"])
def test_nested_aliases_are_refused_without_expanding_them(tmp_path: Path, file: str) -> None:
    bomb = f"laughs:\n  workflow_file: graph.json\n{nested_aliases(10)}\n"
    shared = "size:\n  type: int\n  targets: [{node: Canvas, input: width}]\n" + bomb
    if file == "workflows.yaml":
        root = make_dir(tmp_path / "t", bomb)
    else:
        root = make_dir(tmp_path / "t", "ok: {workflow_file: graph.json}\n", base=shared)
    tracemalloc.start()
    try:
        catalogue = load_catalogue(root)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20
    texts = " | ".join(p.message for p in catalogue.file_problems)
    added = re.search(rf"{file} has aliases that would add ([\d,]+) nodes", texts)
    assert added is not None and int(added[1].replace(",", "")) > 9**10, texts
    assert "at most 100,000 may come from aliases" in texts


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("a: &a [*a]\n", "has a recursive alias (line 1)"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nests too deeply to be read"),
    ],
    ids=["recursive", "deep"],
)
def test_self_containing_or_too_deep_yaml_is_refused(tmp_path: Path, text: str, says: str) -> None:
    catalogue = load_catalogue(make_dir(tmp_path / "t", text), known=("a",))
    assert f"workflows.yaml {says}" in messages(catalogue.broken["a"])


def test_a_directory_without_workflows_yaml_is_reported(tmp_path: Path) -> None:
    catalogue = load_catalogue(tmp_path)
    assert catalogue.templates == {} and "no workflows.yaml" in catalogue.file_problems[0].message
    assert load_catalogue(tmp_path / "absent").file_problems == ()


def test_top_level_must_be_mappings(tmp_path: Path) -> None:
    root = make_dir(tmp_path / "t", "- a\n- b\n", base="[1, 2]\n")
    catalogue = load_catalogue(root)
    texts = " | ".join(p.message for p in catalogue.file_problems)
    assert "workflows.yaml must be a mapping of template names" in texts
    assert "base.yaml must be a mapping of parameter names" in texts


def test_graph_fixture_has_the_duplicate_title() -> None:
    titles = [n["_meta"]["title"] for n in GRAPH.values()]
    assert titles.count("Save") == 2
