"""`comfyui-worker templates list | show | check`: readable output, every problem at once,
ComfyUI's /object_info consulted when it answers, non-zero exit on problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_mock.catalogue import FIXTURE_IMAGE
from comfyui_mock.handle import MockHandle
from comfyui_worker.cli import main
from template_dirs import EXAMPLES, GRAPH, make_dir


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("COMFYUI_TEMPLATES_DIR", str(EXAMPLES))


@pytest.mark.usefixtures("offline")
def test_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["templates", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "animate  A short animated WebP of solid frames (ComfyUI's own SaveAnimatedWEBP).",
        "invert   The negative of a picture, softly blurred.",
        "solid    A solid-colour picture, scaled, with a caption.",
    ]
    assert main(["templates", "show", "solid"]) == 0
    shown = capsys.readouterr().out
    assert "caption  string  required  -> node 4 PreviewAny.source" in shown
    assert "color    int  default: random  range: 0..16777215" in shown
    assert "scale    float  default: 1.0  range: 0.25..4.0" in shown
    assert "choices: ComfyUI's list for node 2 ImageScaleBy.upscale_method" in shown
    assert "Fill colour as 0xRRGGBB." in shown


@pytest.mark.usefixtures("offline")
def test_show_json_prints_the_params_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["templates", "show", "animate", "--json"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == []
    props = schema["properties"]
    assert props["method"]["enum"] == ["default", "fastest", "slowest"]
    assert props["method"]["default"] == "default"
    assert props["frames"] == {"type": "integer", "minimum": 1, "maximum": 64, "default": 8}
    assert props["lossless"]["type"] == "boolean"
    assert "(random when omitted)" in props["color"]["description"]
    assert "default" not in props["color"]
    assert main(["templates", "show", "invert", "--json"]) == 0
    photo = json.loads(capsys.readouterr().out)["properties"]["photo"]
    assert photo["additionalProperties"] is False and len(photo["oneOf"]) == 3
    assert sorted(photo["properties"]) == ["base64", "uri", "url"]


def test_an_override_makes_a_shared_parameter_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_dir(
        tmp_path / "t",
        """
strict:
  workflow_file: graph.json
  parameters: [color]
  overrides: {color: {required: true}}
""",
        base="color: {type: int, default: 0, min: 0, targets: [{node: Canvas, input: color}]}\n",
    )
    monkeypatch.setenv("COMFYUI_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("COMFYUI_TEMPLATES_DIR", str(root))
    assert main(["templates", "check"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["templates", "show", "strict"]) == 0
    assert "color  int  required  range: 0..  -> node 1 EmptyImage.color" in capsys.readouterr().out
    assert main(["templates", "show", "strict", "--json"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["required"] == ["color"]
    assert schema["properties"]["color"] == {"type": "integer", "minimum": 0}


@pytest.mark.usefixtures("offline")
def test_show_an_unknown_template(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["templates", "show", "nope"]) == 4
    assert "comfyui-worker: error: no template 'nope'" in capsys.readouterr().err


def test_check_the_examples_against_the_mock(
    comfyui_mock: MockHandle,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COMFYUI_BASE_URL", comfyui_mock.url)
    monkeypatch.setenv("COMFYUI_TEMPLATES_DIR", str(EXAMPLES))
    assert main(["templates", "check"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "0 problem(s) in 3 template(s)" in captured.err
    assert "checked against ComfyUI's /object_info" in captured.err


def broken_dir(root: Path) -> Path:
    graph = json.loads(json.dumps(GRAPH))
    graph["6"] = {"class_type": "KSampler", "inputs": {"seed": 1}}
    graph["1"]["inputs"]["colour"] = 0
    graph["7"] = {
        "class_type": "VHS_VideoCombine",
        "inputs": {"images": ["1", 0], "format": "image/gif", "filename_prefix": "x"},
    }
    return make_dir(
        root,
        """
missing_file: {workflow_file: none.json}
unknown_param: {workflow_file: graph.json, parameters: [nope]}
against_comfyui:
  workflow_file: graph.json
  parameters:
    - colour: {type: int, targets: [{node: Canvas, input: colour}]}
    - format: {type: enum, choices: [image/gif, video/gif, video/mov], default: video/gif,
               targets: [{node: "7", input: format}]}
    - size: {type: int, min: 9, max: 1, targets: [{node: Canvas, input: width}]}
    - prefix: {type: enum, choices: comfyui, targets: [{node: "7", input: filename_prefix}]}
""",
        graph=graph,
    )


def test_check_reports_every_problem_at_once(
    tmp_path: Path,
    comfyui_mock: MockHandle,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COMFYUI_BASE_URL", comfyui_mock.url)
    monkeypatch.setenv("COMFYUI_TEMPLATES_DIR", str(broken_dir(tmp_path / "t")))
    assert main(["templates", "check"]) == 1
    out = capsys.readouterr().out
    expected = [
        "template 'missing_file': workflows.yaml: template 'missing_file': cannot read "
        "workflow file",
        "template 'unknown_param': workflows.yaml: template 'unknown_param': parameter 'nope' "
        "is neither in base.yaml nor defined inline",
        "template 'against_comfyui': graph.json: node 6: ComfyUI has no node class 'KSampler'",
        "template 'unknown_param': graph.json: node 6: ComfyUI has no node class 'KSampler'",
        "template 'against_comfyui': parameter 'colour': node 1 (EmptyImage) has no input "
        "'colour' in ComfyUI",
        "parameter 'size': min 9 is above max 1",
        "template 'against_comfyui': parameter 'format': node 7 (VHS_VideoCombine): default "
        "\"video/gif\" is not among ComfyUI's values for 'format'",
        "choice \"video/mov\" is not among ComfyUI's values for 'format'",
        "parameter 'prefix': node 7 (VHS_VideoCombine): choices: comfyui, but ComfyUI has no "
        "list of choices for 'filename_prefix'",
    ]
    for line in expected:
        assert line in out, line
    assert len(out.splitlines()) == len(expected)


def test_check_without_comfyui_runs_the_local_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COMFYUI_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("COMFYUI_TEMPLATES_DIR", str(broken_dir(tmp_path / "t")))
    assert main(["templates", "check"]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3  # the local problems
    assert "ComfyUI not checked" in captured.err and "unreachable" in captured.err


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # `--mock` keeps its files under ./.comfyui-mock.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMFYUI_TEMPLATES_DIR", str(EXAMPLES))
    return tmp_path


def test_run_a_template_on_the_mock(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--template", "solid", "--param", "caption=hi", "--param", "scale=2", "--mock"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "success" and Path(result["outputs"][0]).is_file()
    assert result["texts"][0]["text"] == "hi"
    assert result["params"]["scale"] == 2.0 and result["params"]["method"] == "bilinear"


def test_run_a_template_with_an_image_file(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = in_tmp / "cat.jpg"
    photo.write_bytes(FIXTURE_IMAGE.read_bytes())
    argv = ["run", "--template", "invert", "--param", f"photo={photo}", "--mock"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"]["photo"] == {"input": "photo.jpg"}  # the file's type kept
    assert result["inputs"]["photo.jpg"]["size"] == photo.stat().st_size


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["--template", "animate", "--param", "lossless=maybe", "--param", "frames=2.5"],
            "InvalidParamsError: template 'animate': parameter 'frames': expected an integer, "
            "got string \"2.5\"; parameter 'lossless': expected a boolean",
        ),
        (["--template", "nope"], "UnknownTemplateError: template 'nope': no such template"),
        (["--template", "invert", "--param", "photo=/no/such.png"], "cannot read /no/such.png"),
    ],
)
def test_run_template_mistakes(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    assert main(["run", *argv, "--mock"]) == 4
    assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--template", "solid", "--param", "caption"], "argument --param: 'caption': expected"),
        ([], "give a workflow file or --template NAME"),
        (["x.json", "--template", "solid"], "give a workflow file or --template NAME, not both"),
        (["x.json", "--param", "a=1"], "--param is for --template runs only"),
    ],
)
def test_run_arguments_that_do_not_go_together_are_usage_errors(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", *argv, "--mock"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: comfyui-worker run") and f"run: error: {says}" in err
