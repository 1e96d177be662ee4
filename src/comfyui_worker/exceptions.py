"""The worker's exceptions, one hierarchy so callers catch at the right level.

    ComfyUIWorkerError
    ├── ConfigurationError .......... a setting cannot work here (e.g. a folder not mounted)
    ├── InvalidWorkflowError ........ the workflow we were given cannot be run (bad input)
    ├── ComfyUIError ................ something about the ComfyUI server or the job on it
    │   ├── TransportError .......... unreachable / timed out, after retries
    │   ├── ServerError ............. HTTP 5xx after retries, or an unexpected status
    │   ├── ProtocolError ........... ComfyUI answered something we cannot understand
    │   │   └── NotComfyUIError ..... ... an HTML page: another server answers at its address
    │   ├── PromptValidationError ... ComfyUI refused the prompt (400 with node_errors)
    │   │   └── MissingNodeError .... ... because a class_type is not installed
    │   ├── ExecutionError .......... a node raised while running (execution_error)
    │   ├── ExecutionInterrupted .... the prompt was interrupted (execution_interrupted)
    │   ├── PromptLostError ......... the prompt vanished from queue and history (restart)
    │   └── PromptConflictError ..... the prompt under this job's id is another job's
    ├── JobTimeoutError ............. the job deadline passed (also a `TimeoutError`)
    ├── InvalidJobError ............. the job envelope is malformed (unknown key, both/neither...)
    │   └── WorkflowAsJobError ...... ... it is a bare workflow, not an envelope around one
    ├── InputError .................. an input file of the job cannot be provided
    │   ├── InvalidInputError ....... ... because of the input itself (bad base64, refused URL...)
    │   └── InputFetchError ......... ... because its source failed (unreachable, 5xx): retryable
    ├── OutputError ................. the history's outputs cannot be turned into results
    │   ├── UnsafeOutputPathError ... a filename/subfolder escapes its directory
    │   ├── OutputMissingError ...... files ComfyUI reported are not on disk, even after a rerun
    │   │   └── FolderMappingError .. ... ComfyUI still serves them: a folder setting is wrong
    │   ├── OutputTooLargeError ..... the result would carry more than LittleHorse may store
    │   └── OutputStoreError ........ the output store failed (unreachable, 5xx): retryable
    │       └── OutputStoreDeniedError  ... it refused our credentials, or the bucket is missing
    ├── TemplateError ............... a named template cannot be turned into a workflow
    │   ├── UnknownTemplateError .... no template of that name (or no templates set up)
    │   ├── BrokenTemplateError ..... its manifest entry or workflow file is broken
    │   ├── InvalidParamsError ...... the parameters given do not fit its definitions
    │   └── TemplatesUnreadableError  a manifest cannot be read now (being rewritten?): retryable
    └── LittleHorseError ............ LittleHorse refused a call of `serve` or `register`
        └── LittleHorseUnreachableError  ... or it never got there (unavailable, timed out)

Which of these retrying cannot fix (bad input, validation, execution, unsafe paths...) is decided
in one place, `lh.errors`, where they become named LittleHorse business exceptions; the exit
code of each for the command line, in `cli.EXIT_CODES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self


class ComfyUIWorkerError(Exception):
    """Base of every error raised by comfyui-worker."""

    def details(self) -> dict[str, Any]:
        """Structured, JSON-serialisable description (LHTaskException content)."""
        return {"message": str(self)}


class ConfigurationError(ComfyUIWorkerError):
    pass


class InvalidWorkflowError(ComfyUIWorkerError):
    pass


class ComfyUIError(ComfyUIWorkerError):
    pass


class TransportError(ComfyUIError):
    pass


class ServerError(ComfyUIError):
    def __init__(self, message: str, *, status_code: int, body: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class ProtocolError(ComfyUIError):
    pass


class NotComfyUIError(ProtocolError):
    """ComfyUI's API answers JSON (text/plain for its errors), never a page: whatever answered
    is another server, or a proxy's own page, at COMFYUI_BASE_URL."""


@dataclass(frozen=True, slots=True)
class NodeInputError:
    """One entry of ComfyUI's `node_errors[id].errors`."""

    type: str
    message: str
    details: str = ""
    input_name: str | None = None


@dataclass(frozen=True, slots=True)
class NodeError:
    """ComfyUI's complaint about one node of a prompt."""

    node_id: str
    class_type: str
    errors: tuple[NodeInputError, ...] = field(default_factory=tuple)
    dependent_outputs: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        parts = [f"{e.message}" + (f" ({e.details})" if e.details else "") for e in self.errors]
        return f"node {self.node_id} ({self.class_type}): " + "; ".join(parts or ["invalid"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "class_type": self.class_type,
            "errors": [
                {
                    "type": e.type,
                    "message": e.message,
                    "details": e.details,
                    "input_name": e.input_name,
                }
                for e in self.errors
            ],
            "dependent_outputs": list(self.dependent_outputs),
        }


class PromptValidationError(ComfyUIError):
    """ComfyUI's 400 for /prompt: `error` plus per-node `node_errors`."""

    def __init__(
        self,
        message: str,
        *,
        error_type: str,
        error_details: str = "",
        node_errors: tuple[NodeError, ...] = (),
    ) -> None:
        lines = [message] + [n.describe() for n in node_errors]
        super().__init__("; ".join(lines))
        self.error_type = error_type
        self.error_message = message
        self.error_details = error_details
        self.node_errors = node_errors

    def details(self) -> dict[str, Any]:
        return {
            "message": str(self),
            "error_type": self.error_type,
            "error_message": self.error_message,
            "error_details": self.error_details,
            "node_errors": [n.as_dict() for n in self.node_errors],
        }


class MissingNodeError(PromptValidationError):
    """A class_type the ComfyUI server does not have (custom node not installed)."""


class ExecutionError(ComfyUIError):
    """A node raised during execution; fields mirror ComfyUI's `execution_error`."""

    def __init__(
        self,
        *,
        prompt_id: str,
        node_id: str,
        node_type: str,
        exception_type: str,
        exception_message: str,
        traceback: list[str] | None = None,
    ) -> None:
        super().__init__(
            f"node {node_id} ({node_type}) failed: {exception_type}: {exception_message.strip()}"
        )
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message
        self.traceback = traceback or []

    def details(self) -> dict[str, Any]:
        return {
            "message": str(self),
            "prompt_id": self.prompt_id,
            "node_id": self.node_id,
            "node_type": self.node_type,
            "exception_type": self.exception_type,
            "exception_message": self.exception_message,
            # The last frames say where it broke; the whole traceback can be huge.
            "traceback": self.traceback[-5:],
        }


class ExecutionInterrupted(ComfyUIError):
    def __init__(
        self, *, prompt_id: str, node_id: str | None = None, node_type: str | None = None
    ) -> None:
        where = f" at node {node_id} ({node_type})" if node_id else ""
        super().__init__(f"prompt {prompt_id} was interrupted{where}")
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type


class PromptLostError(ComfyUIError):
    def __init__(self, prompt_id: str) -> None:
        super().__init__(
            f"prompt {prompt_id} is neither queued, running nor in history: "
            "ComfyUI was probably restarted and dropped it"
        )
        self.prompt_id = prompt_id


class PromptConflictError(ComfyUIError):
    """ComfyUI holds a prompt under this job's prompt_id that another job submitted (or one
    given something else): its outputs are not this job's, and every retry finds it again."""

    def __init__(self, prompt_id: str, *, ours: str, theirs: str | None) -> None:
        found = f"job {theirs}" if theirs else "a submitter that did not tag it"
        super().__init__(
            f"ComfyUI already holds prompt {prompt_id}, submitted by {found} with other "
            f"inputs, not by this job ({ours}); its outputs are not delivered. Workers of "
            "different LittleHorse clusters sharing one ComfyUI need different "
            "COMFYUI_JOB_NAMESPACE values"
        )
        self.prompt_id = prompt_id
        self.ours = ours
        self.theirs = theirs

    def details(self) -> dict[str, Any]:
        return {
            "message": str(self),
            "prompt_id": self.prompt_id,
            "job": self.ours,
            "found_job": self.theirs,
        }


class JobTimeoutError(ComfyUIWorkerError, TimeoutError):
    def __init__(self, prompt_id: str, deadline_s: float) -> None:
        super().__init__(f"prompt {prompt_id} did not finish within the {deadline_s:g} s deadline")
        self.prompt_id = prompt_id
        self.deadline_s = deadline_s


class OutputError(ComfyUIWorkerError):
    pass


class UnsafeOutputPathError(OutputError):
    def __init__(self, message: str, *, node_id: str, filename: str, subfolder: str) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.filename = filename
        self.subfolder = subfolder

    def details(self) -> dict[str, Any]:
        return {
            "message": str(self),
            "node_id": self.node_id,
            "filename": self.filename,
            "subfolder": self.subfolder,
        }


class InvalidJobError(ComfyUIWorkerError):
    """The `run-comfyui-job` envelope is not valid; `errors` lists each field's problem."""

    def __init__(self, message: str, *, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []

    def details(self) -> dict[str, Any]:
        return {"message": str(self), "errors": self.errors}


class WorkflowAsJobError(InvalidJobError):
    """A workflow given where a job envelope was expected: every node id an unknown key."""


class InputError(ComfyUIWorkerError):
    """One input file of a job; `input_name` is its key in the envelope's `inputs`."""

    def __init__(self, message: str, *, input_name: str, rule: str) -> None:
        super().__init__(f"input {input_name!r}: {message}")
        self.input_name = input_name
        self.rule = rule

    def details(self) -> dict[str, Any]:
        return {"message": str(self), "input": self.input_name, "rule": self.rule}


class InvalidInputError(InputError):
    """The input can never be used (bad base64, empty, refused URL, over the size cap, 404)."""


class InputFetchError(InputError):
    """The input's source failed in a way a later attempt may not (unreachable, 5xx)."""


class OutputMissingError(OutputError):
    """ComfyUI reported files that are not there, even after it ran the prompt again."""

    def __init__(self, message: str, *, prompt_id: str, missing: list[str]) -> None:
        super().__init__(message)
        self.prompt_id = prompt_id
        self.missing = missing

    def details(self) -> dict[str, Any]:
        return {"message": str(self), "prompt_id": self.prompt_id, "missing": self.missing}


class FolderMappingError(OutputMissingError, ConfigurationError):
    """ComfyUI still has (serves) output files that are not in the folder as mounted here:
    `variable` (COMFYUI_OUTPUT_DIR, COMFYUI_TEMP_DIR) points elsewhere. Running the prompt
    again cannot help."""

    def __init__(
        self, message: str, *, prompt_id: str, missing: list[str], variable: str, folder: str
    ) -> None:
        super().__init__(message, prompt_id=prompt_id, missing=missing)
        self.variable = variable
        self.folder = folder

    def details(self) -> dict[str, Any]:
        return super().details() | {"variable": self.variable, "folder": self.folder}


class OutputTooLargeError(OutputError):
    def __init__(
        self, message: str, *, size: int, limit: int, parts: dict[str, int] | None = None
    ) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
        # Serialized bytes of the result's biggest parts, to say what to make smaller.
        self.parts = parts or {}

    def details(self) -> dict[str, Any]:
        return {"message": str(self), "size": self.size, "limit": self.limit, "parts": self.parts}


class OutputStoreError(OutputError):
    """Delivering outputs to the object store failed; retrying may succeed."""

    def __init__(self, message: str, *, bucket: str) -> None:
        super().__init__(message)
        self.bucket = bucket

    def details(self) -> dict[str, Any]:
        return {"message": str(self), "bucket": self.bucket}


class OutputStoreDeniedError(OutputStoreError):
    """The store refused our credentials or has no such bucket: no retry can fix that."""


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    """One rule one parameter breaks (or the template itself, when `parameter` is None)."""

    parameter: str | None
    rule: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"parameter": self.parameter, "rule": self.rule, "message": self.message}


class TemplateError(ComfyUIWorkerError):
    """A template job that cannot run; `problems` lists every rule broken, each naming the
    parameter (None: the template itself) and the rule."""

    def __init__(
        self, message: str, *, template: str, problems: Sequence[TemplateProblem] = ()
    ) -> None:
        super().__init__(message)
        self.template = template
        self.problems = tuple(problems)

    @classmethod
    def of(cls, template: str, problems: Sequence[TemplateProblem]) -> Self:
        """The error for these problems, all of them in the message."""
        message = f"template {template!r}: " + "; ".join(p.message for p in problems)
        return cls(message, template=template, problems=problems)

    def details(self) -> dict[str, Any]:
        first = self.problems[0] if self.problems else None
        return {
            "message": str(self),
            "template": self.template,
            "parameter": first.parameter if first else None,
            "rule": first.rule if first else None,
            "problems": [p.as_dict() for p in self.problems],
        }


class UnknownTemplateError(TemplateError):
    pass


class BrokenTemplateError(TemplateError):
    pass


class InvalidParamsError(TemplateError):
    pass


class TemplatesUnreadableError(TemplateError):
    """A manifest cannot be read as a whole right now (most likely a file being rewritten)
    and the templates last read do not answer for this one: whether it exists, and how,
    is unknown until the file can be read, so a later attempt may well succeed."""


class LittleHorseError(ComfyUIWorkerError):
    """A call to LittleHorse failed; `lh.config.rpc_error` says which of these."""


class LittleHorseUnreachableError(LittleHorseError):
    pass
