"""Which failures are business exceptions in LittleHorse, and under which stable name.

LittleHorse never retries an `LHTaskException` (TASK_EXCEPTION) and retries every other
failure (TASK_FAILED) by the WfSpec's policy. So: what the same input can never fix gets a
name here; everything else (ComfyUI unreachable, 5xx after retries, lost prompt, interrupted,
deadline, cancelled by shutdown) stays a plain exception and is retried. An `execution_error`
is business unless it matches a retryable pattern (COMFYUI_RETRYABLE_EXECUTION_ERRORS, by
default CUDA/torch out-of-memory): another attempt, later or on another GPU, can succeed. A
claimed task the worker does not start at all (draining, ComfyUI not answering) is retried too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from littlehorse import to_variable_value
from littlehorse.exceptions import LHTaskException
from littlehorse.model import LHErrorType, LHTaskError, ReportTaskRun, ScheduledTask, TaskStatus

from ..bounds import (
    MAX_ERROR_BYTES,
    MAX_MESSAGE_BYTES,
    bound_details,
    off_loop,
    serialized_size,
    truncate,
    truncate_start,
)
from ..constants import DEFAULT_MAX_RESULT_BYTES, DEFAULT_RETRYABLE_EXECUTION_ERRORS, ExceptionName
from ..exceptions import (
    BrokenTemplateError,
    ComfyUIWorkerError,
    ExecutionError,
    InvalidInputError,
    InvalidJobError,
    InvalidParamsError,
    InvalidWorkflowError,
    MissingNodeError,
    OutputMissingError,
    OutputStoreDeniedError,
    OutputTooLargeError,
    PromptConflictError,
    PromptValidationError,
    UnknownTemplateError,
    UnsafeOutputPathError,
)
from ..observability.logs import redact

# Most specific first: MissingNodeError is a PromptValidationError.
BUSINESS_EXCEPTIONS: tuple[tuple[type[ComfyUIWorkerError], ExceptionName], ...] = (
    (InvalidWorkflowError, ExceptionName.INVALID_WORKFLOW),
    (MissingNodeError, ExceptionName.MISSING_NODE),
    (PromptValidationError, ExceptionName.VALIDATION_ERROR),
    (ExecutionError, ExceptionName.EXECUTION_ERROR),
    (UnsafeOutputPathError, ExceptionName.UNSAFE_OUTPUT_PATH),
    (InvalidJobError, ExceptionName.INVALID_JOB),
    (InvalidInputError, ExceptionName.INVALID_INPUT),
    (OutputTooLargeError, ExceptionName.OUTPUT_TOO_LARGE),
    (OutputMissingError, ExceptionName.OUTPUT_MISSING),
    (OutputStoreDeniedError, ExceptionName.OUTPUT_STORE_DENIED),
    # Every retry has the same prompt_id and finds the same foreign prompt under it.
    (PromptConflictError, ExceptionName.PROMPT_CONFLICT),
    # A broken template needs an operator's fix; the caller's retry would fail the same way.
    # TemplatesUnreadableError is left out on purpose: a manifest read mid-write is retried.
    (UnknownTemplateError, ExceptionName.UNKNOWN_TEMPLATE),
    (InvalidParamsError, ExceptionName.INVALID_PARAMS),
    (BrokenTemplateError, ExceptionName.BROKEN_TEMPLATE),
)


def business_name(
    exc: BaseException,
    *,
    retryable_execution_errors: Sequence[str] = DEFAULT_RETRYABLE_EXECUTION_ERRORS,
) -> ExceptionName | None:
    """The business-exception name for `exc`, or None when LittleHorse should retry it.

    Pass `Settings.retryable_execution_errors` so the configured patterns apply.
    """
    if isinstance(exc, ExecutionError) and is_transient(exc, retryable_execution_errors):
        return None
    for cls, name in BUSINESS_EXCEPTIONS:
        if isinstance(exc, cls):
            return name
    return None


def is_transient(exc: ExecutionError, patterns: Sequence[str]) -> bool:
    """Whether a node's failure is one another attempt can fix (e.g. out of GPU memory)."""
    text = f"{exc.exception_type}: {exc.exception_message}".casefold()
    return any(pattern.casefold() in text for pattern in patterns if pattern)


def to_lh_exception(
    exc: ComfyUIWorkerError, name: ExceptionName, *, max_bytes: int = DEFAULT_MAX_RESULT_BYTES
) -> LHTaskException:
    """The business exception, message and content cut to fit what LittleHorse stores
    (`max_bytes`: Settings.max_result_bytes, shared by the two)."""
    return _bounded(exc, exc.details(), name, max_bytes)


async def lh_exception(
    exc: ComfyUIWorkerError, name: ExceptionName, *, max_bytes: int = DEFAULT_MAX_RESULT_BYTES
) -> LHTaskException:
    """`to_lh_exception`, in a worker thread when the exception's content is large."""
    details = exc.details()
    return await off_loop(details, lambda: _bounded(exc, details, name, max_bytes))


def _bounded(
    exc: ComfyUIWorkerError, details: dict[str, Any], name: ExceptionName, max_bytes: int
) -> LHTaskException:
    message = truncate(str(exc), min(MAX_MESSAGE_BYTES, max_bytes // 4))
    content = bound_details(details, max_bytes - serialized_size(message))
    # The SDK needs a VariableValue here: a raw dict fails inside its except block, no
    # report is sent and the worker slot leaks.
    return LHTaskException(name.value, message, to_variable_value(content))


def not_started_report(task: ScheduledTask, reason: str) -> ReportTaskRun:
    """The report of a claimed task the worker will not run (`reason` says why): a plain
    failure, so that LittleHorse retries it, typically on another worker. None of it reached
    ComfyUI, so the retry duplicates no work. Built here rather than by the SDK, which reports
    only what its task function returned or raised."""
    report = ReportTaskRun(
        task_run_id=task.task_run_id,
        attempt_number=task.attempt_number,
        status=TaskStatus.TASK_FAILED,
        error=LHTaskError(type=LHErrorType.TASK_ERROR, message=reason),
        log_output=to_variable_value(reason),
    )
    report.time.GetCurrentTime()
    return report


def redact_report(report: ReportTaskRun) -> None:
    """Credentials out of what LittleHorse stores for an attempt (its TASK_FAILED message is
    the whole traceback, chained exceptions' messages included), and that message cut to its
    last MAX_ERROR_BYTES: the TaskRun's record keeps every attempt's (`bounds.result_limit`)."""
    if report.HasField("error"):
        report.error.message = truncate_start(redact(report.error.message), MAX_ERROR_BYTES)
    if report.HasField("exception"):
        report.exception.message = redact(report.exception.message)
        if report.exception.content.HasField("json_obj"):
            # Masks and *** hold no JSON syntax: the content stays valid JSON.
            report.exception.content.json_obj = redact(report.exception.content.json_obj)
    if report.HasField("log_output") and report.log_output.HasField("str"):
        report.log_output.str = redact(report.log_output.str)
