"""Names and defaults shared across the worker."""

from __future__ import annotations

import uuid
from enum import StrEnum

TASK_NAME = "execute-comfyui-workflow"
"""The LittleHorse TaskDef this worker registers and serves: `(workflow) -> result`."""

JOB_TASK_NAME = "run-comfyui-job"
"""The job-envelope TaskDef: `(job) -> result` (inputs, output delivery, templates)."""

TEMPLATE_TASK_NAME = "run-comfyui-template"
"""The named-template TaskDef: `(template, params) -> result`."""

TASK_NAMES = (TASK_NAME, JOB_TASK_NAME, TEMPLATE_TASK_NAME)
"""Every task this worker can serve; COMFYUI_TASKS picks among them (default: all)."""

DEFAULT_BASE_URL = "http://127.0.0.1:8188"

DEFAULT_MAX_RESULT_BYTES = 800_000
"""COMFYUI_MAX_RESULT_BYTES: well under LittleHorse's ~1,047,000-byte records, with room for
the log output, and above COMFYUI_MAX_INLINE_BYTES so base64 mode's own check speaks first."""

DEFAULT_READY_WAIT = 60.0
"""COMFYUI_READY_WAIT: long enough for ComfyUI to restart (a crash, a rolling update), short
against the task timeouts a WfSpec sets for ComfyUI (above COMFYUI_JOB_DEADLINE)."""

DEFAULT_RETRYABLE_EXECUTION_ERRORS: tuple[str, ...] = (
    "torch.OutOfMemoryError",
    "torch.cuda.OutOfMemoryError",
    "out of memory",
    "Allocation on device",
)
"""Substrings (case-insensitive) of an `execution_error`'s exception type or message that
another attempt can fix: CUDA/torch out-of-memory, which depends on what else holds the GPU."""


class JobStatus(StrEnum):
    """Outcome of one ComfyUI job, as it appears in the result dict."""

    SUCCESS = "success"
    ERROR = "error"
    INTERRUPTED = "interrupted"
    LOST = "lost"
    TIMED_OUT = "timed_out"


class CompletionMode(StrEnum):
    """How the worker learns that a prompt has finished."""

    WEBSOCKET = "websocket"
    POLL = "poll"


class LogFormat(StrEnum):
    """How log records are written: `text` for people, `json` for log collectors."""

    TEXT = "text"
    JSON = "json"


class JobOutcome(StrEnum):
    """How a job ended, as the `outcome` label of comfyui_worker_jobs_finished_total."""

    SUCCESS = "success"
    BUSINESS_EXCEPTION = "business_exception"  # named, never retried
    FAILED = "failed"  # retryable
    CANCELLED = "cancelled"  # shutdown or lost LittleHorse connection


class OutputMode(StrEnum):
    """How output files reach the caller (COMFYUI_OUTPUT_MODE, or per job)."""

    PATH = "path"  # paths on ComfyUI's volume, as mounted here
    BASE64 = "base64"  # inline in the result, for small outputs
    STORE = "store"  # uploaded to COMFYUI_OUTPUT_STORE; the result says where


class CleanupMode(StrEnum):
    """What a job removes from ComfyUI's folders once it is done (COMFYUI_CLEANUP)."""

    NONE = "none"
    INPUTS = "inputs"  # the files uploaded for the job, after it ends
    OUTPUTS = "outputs"  # its output files, after a successful store upload
    ALL = "all"

    @property
    def inputs(self) -> bool:
        return self in (CleanupMode.INPUTS, CleanupMode.ALL)

    @property
    def outputs(self) -> bool:
        return self in (CleanupMode.OUTPUTS, CleanupMode.ALL)


class ExceptionName(StrEnum):
    """Stable LittleHorse business-exception names (`LHTaskException.name`).

    WfSpecs match on these strings with `handle_exception`, so they never change.
    """

    INVALID_WORKFLOW = "comfyui-invalid-workflow"
    VALIDATION_ERROR = "comfyui-validation-error"
    MISSING_NODE = "comfyui-missing-node"
    EXECUTION_ERROR = "comfyui-execution-error"
    UNSAFE_OUTPUT_PATH = "comfyui-unsafe-output-path"
    OUTPUT_TOO_LARGE = "comfyui-output-too-large"
    OUTPUT_MISSING = "comfyui-output-missing"
    INVALID_JOB = "comfyui-invalid-job"
    INVALID_INPUT = "comfyui-invalid-input"
    OUTPUT_STORE_DENIED = "comfyui-output-store-denied"
    UNKNOWN_TEMPLATE = "comfyui-unknown-template"
    INVALID_PARAMS = "comfyui-invalid-params"
    BROKEN_TEMPLATE = "comfyui-broken-template"
    PROMPT_CONFLICT = "comfyui-prompt-conflict"


PROMPT_ID_NAMESPACE = uuid.UUID("6f1c2a53-2f4e-5b7a-9c1d-3e8f0a4b5c6d")
"""UUIDv5 namespace of prompt ids: uuid5(namespace, the job's identity), see `lh.identity`."""
