"""Which failures are business exceptions in LittleHorse, and under which stable name.

LittleHorse never retries an `LHTaskException` (TASK_EXCEPTION) and retries every other
failure (TASK_FAILED) by the WfSpec's policy. So: what the same input can never fix gets a
name here; everything else (ComfyUI unreachable, 5xx after retries, lost prompt, interrupted,
deadline, cancelled by shutdown) stays a plain exception and is retried.
"""

from __future__ import annotations

from littlehorse import to_variable_value
from littlehorse.exceptions import LHTaskException

from ..constants import ExceptionName
from ..exceptions import (
    ComfyUIWorkerError,
    ExecutionError,
    InvalidInputError,
    InvalidJobError,
    InvalidWorkflowError,
    MissingNodeError,
    OutputStoreDeniedError,
    OutputTooLargeError,
    PromptValidationError,
    UnknownTemplateError,
    UnsafeOutputPathError,
)

# Most specific first: MissingNodeError is a PromptValidationError.
BUSINESS_EXCEPTIONS: tuple[tuple[type[ComfyUIWorkerError], ExceptionName], ...] = (
    (InvalidWorkflowError, ExceptionName.INVALID_WORKFLOW),
    (MissingNodeError, ExceptionName.MISSING_NODE),
    (PromptValidationError, ExceptionName.VALIDATION_ERROR),
    (ExecutionError, ExceptionName.EXECUTION_ERROR),
    (UnsafeOutputPathError, ExceptionName.UNSAFE_OUTPUT_PATH),
    (InvalidJobError, ExceptionName.INVALID_JOB),
    (UnknownTemplateError, ExceptionName.UNKNOWN_TEMPLATE),
    (InvalidInputError, ExceptionName.INVALID_INPUT),
    (OutputTooLargeError, ExceptionName.OUTPUT_TOO_LARGE),
    (OutputStoreDeniedError, ExceptionName.OUTPUT_STORE_DENIED),
)


def business_name(exc: BaseException) -> ExceptionName | None:
    for cls, name in BUSINESS_EXCEPTIONS:
        if isinstance(exc, cls):
            return name
    return None


def to_lh_exception(exc: ComfyUIWorkerError, name: ExceptionName) -> LHTaskException:
    # The SDK needs a VariableValue here: a raw dict fails inside its except block, no
    # report is sent and the worker slot leaks.
    return LHTaskException(name.value, str(exc), to_variable_value(exc.details()))
