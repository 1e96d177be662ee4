from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_worker.exceptions import InvalidWorkflowError
from comfyui_worker.workflow import load_workflow_file, validate_workflow

GOOD = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
}


def test_accepts_an_api_format_graph() -> None:
    assert validate_workflow(GOOD) is GOOD


@pytest.mark.parametrize(
    ("workflow", "message"),
    [
        ([1, 2], "must be a JSON object of nodes, got array"),
        ("{}", "got string"),
        (None, "got null"),
        ({}, "workflow is empty"),
        ({"nodes": [], "links": [], "version": 0.4}, "UI format.*API"),
        ({"1": {"inputs": {}}}, "node '1' has no class_type"),
        ({"1": {"class_type": ""}}, "node '1' has no class_type"),
        ({"7": 3}, "node '7' must be an object"),
        ({"1": {"class_type": "SaveImage", "inputs": [1]}}, r"node '1' \(SaveImage\): 'inputs'"),
    ],
)
def test_rejects_bad_workflows_naming_the_problem(workflow: object, message: str) -> None:
    with pytest.raises(InvalidWorkflowError, match=message):
        validate_workflow(workflow)


def test_size_cap() -> None:
    big = {"1": {"class_type": "PreviewAny", "inputs": {"source": "x" * 2000}}}
    with pytest.raises(InvalidWorkflowError, match=r"over the 1000 byte limit"):
        validate_workflow(big, max_bytes=1000)
    assert validate_workflow(big, max_bytes=10_000) is big


def test_load_file(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(GOOD))
    assert load_workflow_file(path) == GOOD


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not valid JSON: .* line 1 column 2"),
        (b"\xff\xfe\x00", "is not UTF-8"),
        (b'{"nodes": [], "links": []}', "UI format"),
    ],
)
def test_load_file_errors_name_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "wf.json"
    path.write_bytes(content)
    with pytest.raises(InvalidWorkflowError, match=message) as info:
        load_workflow_file(path)
    assert str(path) in str(info.value)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidWorkflowError, match="cannot read workflow file"):
        load_workflow_file(tmp_path / "absent.json")
