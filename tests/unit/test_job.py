"""The job envelope: what it accepts, what it refuses and how it says so."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfyui_worker.exceptions import InvalidJobError, WorkflowAsJobError
from comfyui_worker.job import Job, OutputMode, job_json_schema, parse_job

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {}}}


def test_full_envelope_parses() -> None:
    job = parse_job(
        {
            "workflow": WORKFLOW,
            "inputs": {
                "photo.png": {"base64": "aGVsbG8="},
                "mask.png": {"url": "https://example.com/m.png"},
                "clip.mp4": {"uri": "s3://bucket/key.mp4"},
            },
            "output": {"mode": "store", "presign_seconds": 3600},
        }
    )
    assert job.workflow == WORKFLOW
    assert [s.kind for s in job.inputs.values()] == ["base64", "url", "uri"]
    assert job.output.mode is OutputMode.STORE and job.output.presign_seconds == 3600


def test_minimal_envelope_takes_deployment_defaults() -> None:
    job = parse_job(json.dumps({"workflow": WORKFLOW}))
    assert job.inputs == {} and job.output.mode is None and job.output.presign_seconds is None
    assert parse_job({"template": "portrait", "params": {"seed": 1}}).template == "portrait"


@pytest.mark.parametrize(
    ("job", "says"),
    [
        ({"workflow": WORKFLOW, "outputs": {}}, "outputs: unknown key"),
        ({"workflow": WORKFLOW, "template": "t"}, "exactly one of workflow or template (got both)"),
        ({"inputs": {}}, "exactly one of workflow or template (got neither)"),
        ({"workflow": WORKFLOW, "params": {"seed": 1}}, "params are only for template jobs"),
        (
            {"workflow": WORKFLOW, "inputs": {"a.png": {"base64": "x", "url": "https://x"}}},
            "inputs.a.png: an input needs exactly one of base64, url or uri (got base64, url)",
        ),
        ({"workflow": WORKFLOW, "inputs": {"a.png": {}}}, "inputs.a.png: an input needs"),
        ({"workflow": WORKFLOW, "inputs": {"a.png": {"path": "/x"}}}, "inputs.a.png.path"),
        ({"workflow": WORKFLOW, "output": {"mode": "s3"}}, "output.mode"),
        ({"workflow": WORKFLOW, "output": {"presign_seconds": 0}}, "output.presign_seconds"),
        ({"workflow": WORKFLOW, "output": {"presign_seconds": 10**7}}, "output.presign_seconds"),
        ("[1, 2]", "must be a JSON object, got list"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_envelopes_are_refused_naming_the_field(job: Any, says: str) -> None:
    with pytest.raises(InvalidJobError) as err:
        parse_job(job)
    assert says in str(err.value)
    assert err.value.details()["message"] == str(err.value)


@pytest.mark.parametrize(
    "workflow", [WORKFLOW, {"nodes": [], "links": [], "version": 0.4}], ids=["api", "ui"]
)
def test_a_bare_workflow_is_named_as_one_not_as_unknown_keys(workflow: dict[str, Any]) -> None:
    with pytest.raises(WorkflowAsJobError) as err:
        parse_job(workflow)
    assert str(err.value).startswith("this looks like a ComfyUI workflow, not a job envelope")
    assert "unknown key" not in str(err.value)
    assert err.value.errors == [{"field": "(job)", "message": str(err.value)}]


def test_errors_are_listed_per_field() -> None:
    with pytest.raises(InvalidJobError) as err:
        parse_job({"workflow": WORKFLOW, "extra": 1, "output": {"mode": "x"}})
    assert {e["field"] for e in err.value.errors} == {"extra", "output.mode"}


def test_json_schema_describes_the_envelope() -> None:
    schema = job_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"workflow", "template", "params", "inputs", "output"}
    source = schema["$defs"]["InputSource"]
    assert source["additionalProperties"] is False
    assert source["oneOf"] == [
        {"required": [key], "properties": {key: {"type": "string"}}}
        for key in ("base64", "url", "uri")
    ]
    assert schema["$defs"]["OutputMode"]["enum"] == ["path", "base64", "store"]
    json.dumps(schema)


def test_jobs_are_immutable() -> None:
    job = Job(workflow=WORKFLOW)
    with pytest.raises(ValueError):
        job.template = "x"  # type: ignore[misc]
