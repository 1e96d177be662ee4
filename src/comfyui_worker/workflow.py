"""Checks on a workflow before it goes anywhere near ComfyUI.

ComfyUI answers a malformed graph with a bare 500 text/plain, so everything we can check
locally is checked here and named precisely (which node, which field).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .exceptions import InvalidWorkflowError

Workflow = dict[str, Any]


def validate_workflow(workflow: object, *, max_bytes: int | None = None) -> Workflow:
    """Return `workflow` if it is a runnable API-format graph, else raise InvalidWorkflowError."""
    if not isinstance(workflow, dict):
        raise InvalidWorkflowError(
            f"workflow must be a JSON object of nodes, got {_json_type(workflow)}"
        )
    if "nodes" in workflow and "links" in workflow:
        raise InvalidWorkflowError(
            "workflow is in ComfyUI's UI format (it has 'nodes' and 'links'); export it with "
            "'Export (API)' / 'Save (API Format)' and submit that file instead"
        )
    if not workflow:
        raise InvalidWorkflowError("workflow is empty: it has no nodes")
    for node_id, node in workflow.items():
        if not isinstance(node, dict):
            raise InvalidWorkflowError(
                f"node {node_id!r} must be an object with class_type and inputs, "
                f"got {_json_type(node)}"
            )
        class_type = node.get("class_type")
        if not isinstance(class_type, str) or not class_type:
            raise InvalidWorkflowError(f"node {node_id!r} has no class_type")
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise InvalidWorkflowError(
                f"node {node_id!r} ({class_type}): 'inputs' must be an object, "
                f"got {_json_type(inputs)}"
            )
    if max_bytes is not None:
        size = len(json.dumps(workflow, separators=(",", ":")).encode())
        if size > max_bytes:
            raise InvalidWorkflowError(
                f"workflow is {size} bytes, over the {max_bytes} byte limit "
                "(COMFYUI_MAX_WORKFLOW_BYTES); pass large data by reference, not inline"
            )
    return workflow


def load_workflow_file(path: Path, *, max_bytes: int | None = None) -> Workflow:
    """Read and validate an API-format workflow file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidWorkflowError(f"cannot read workflow file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidWorkflowError(f"workflow file {path} is not UTF-8 text") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidWorkflowError(
            f"workflow file {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}"
        ) from exc
    try:
        return validate_workflow(data, max_bytes=max_bytes)
    except InvalidWorkflowError as exc:
        raise InvalidWorkflowError(f"{path}: {exc}") from None


def _json_type(value: object) -> str:
    names = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
