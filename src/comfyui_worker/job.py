"""The job envelope of `run-comfyui-job`: pydantic models and their JSON Schema, nothing else.

    {"workflow": {...} | "template": "name", "params": {...},
     "inputs": {"photo.png": {"base64": "..."} | {"url": "https://..."} | {"uri": "s3://..."}},
     "output": {"mode": "store", "presign_seconds": 3600}}

It grows by new optional keys, so a caller's envelope keeps its meaning as features arrive;
unknown keys are refused, so a typo never silently drops what the caller meant.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .constants import OutputMode
from .exceptions import InvalidJobError, WorkflowAsJobError

__all__ = [
    "BoundTemplate",
    "InputSource",
    "Job",
    "OutputMode",
    "OutputSpec",
    "TemplateBinder",
    "job_json_schema",
    "parse_job",
]

MAX_PRESIGN_SECONDS = 7 * 24 * 3600
"""S3's limit for a SigV4-presigned URL."""


class InputSource(BaseModel):
    """One input file: exactly one of `base64`, `url` or `uri`."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        # Exactly one of them is a string (the others absent or null), as _exactly_one says.
        json_schema_extra={
            "oneOf": [
                {"required": [key], "properties": {key: {"type": "string"}}}
                for key in ("base64", "url", "uri")
            ]
        },
    )

    base64: str | None = Field(
        default=None,
        description="The file's bytes, base64; a `data:<mime>;base64,` prefix is allowed",
    )
    url: str | None = Field(default=None, description="An http(s) URL the worker downloads")
    uri: str | None = Field(
        default=None,
        description="An object-store URI (s3://bucket/key, gs://..., az://...) in a store the "
        "worker reads inputs from (COMFYUI_INPUT_STORES)",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> InputSource:
        given = [name for name in ("base64", "url", "uri") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "an input needs exactly one of base64, url or uri"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def kind(self) -> str:
        """Which source this is: "base64", "url" or "uri"."""
        return "base64" if self.base64 is not None else "url" if self.url is not None else "uri"


class OutputSpec(BaseModel):
    """How this job's outputs are delivered; unset fields take the deployment's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: OutputMode | None = Field(
        default=None, description="path | base64 | store; default COMFYUI_OUTPUT_MODE"
    )
    presign_seconds: int | None = Field(
        default=None,
        gt=0,
        le=MAX_PRESIGN_SECONDS,
        description="store mode: also return presigned GET URLs valid this long",
    )


class Job(BaseModel):
    """The `run-comfyui-job` envelope: exactly one of `workflow` or `template` (+ `params`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="ComfyUIJob")

    workflow: dict[str, Any] | None = Field(
        default=None, description="A ComfyUI workflow in API format"
    )
    template: str | None = Field(
        default=None, min_length=1, description="Name of a template (COMFYUI_TEMPLATES_DIR)"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="The template's parameters (template jobs only)"
    )
    inputs: dict[str, InputSource] = Field(
        default_factory=dict,
        description="Files to upload to ComfyUI, by the name the workflow refers to them with",
    )
    output: OutputSpec = Field(default_factory=OutputSpec)

    @model_validator(mode="after")
    def _workflow_or_template(self) -> Job:
        if (self.workflow is None) == (self.template is None):
            raise ValueError(
                "a job needs exactly one of workflow or template"
                + (" (got both)" if self.workflow is not None else " (got neither)")
            )
        if self.params and self.template is None:
            raise ValueError("params are only for template jobs")
        return self


class BoundTemplate(Protocol):
    workflow: dict[str, Any]  # the bound copy, ready for input rewriting
    params: dict[str, Any]  # effective parameters (defaults, drawn seeds): returned as "params"
    inputs: dict[str, InputSource]  # image parameters, uploaded like job inputs


class TemplateBinder(Protocol):
    # `key` (the job's prompt id) keeps drawn values (seeds) the same on every attempt.
    async def bind(
        self, name: str, params: dict[str, Any], *, key: str | None = None
    ) -> BoundTemplate: ...


def parse_job(value: object) -> Job:
    """The envelope from the task's JSON_OBJ (or the CLI's file); raises InvalidJobError."""
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidJobError(f"the job is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidJobError(f"the job must be a JSON object, got {type(value).__name__}")
    if _is_workflow(value):
        message = (
            "this looks like a ComfyUI workflow, not a job envelope; a job carries it under "
            '"workflow": {"workflow": {...}, "inputs": {...}}'
        )
        raise WorkflowAsJobError(message, errors=[{"field": "(job)", "message": message}])
    try:
        return Job.model_validate(value)
    except ValidationError as exc:
        raise InvalidJobError(
            "invalid job: " + "; ".join(_describe(e) for e in exc.errors()),
            errors=[{"field": _loc(e), "message": e["msg"]} for e in exc.errors()],
        ) from exc


def job_json_schema() -> dict[str, Any]:
    """The envelope's JSON Schema (`comfyui-worker schema job`)."""
    schema = Job.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def _is_workflow(value: dict[str, Any]) -> bool:
    """Nodes (API format: each with a class_type) or a UI-format graph, and no envelope key."""
    if not value or value.keys() & Job.model_fields:
        return False
    if "nodes" in value and "links" in value:
        return True
    return all(isinstance(node, dict) and "class_type" in node for node in value.values())


def _loc(error: Any) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(job)"


def _describe(error: Any) -> str:
    msg = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{_loc(error)}: {msg}"
