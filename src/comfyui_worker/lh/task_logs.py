"""What the end of a failed attempt leaves in the log: one WARNING line for a business
exception, the traceback once, at ERROR, for a real failure.

The SDK logs whatever a task function raises with `logging.error(traceback.format_exc())` on
the root logger, business exceptions included: bad input, which LittleHorse never retries,
would show as a worker crashing. Its code stays as it is; a filter on the root logger (where
that call logs, so the filter sees nothing else's records) recognises the SDK's record by the
exception being handled while it is logged (the filter runs inside the SDK's `except` block)
and by its message being that exception's traceback:

- for a business exception our task logged already (`log_business_exception` marks it), the
  record is dropped;
- for any other exception it stays, at ERROR, rewritten as a one-line message with the
  exception as `exc_info`, so the text format still shows the traceback (once) and the JSON
  format puts it in `error.stack_trace`, with `error.type` and `error.message` beside it.
"""

from __future__ import annotations

import logging
import sys
import traceback
import weakref

from littlehorse.exceptions import LHTaskException

from ..exceptions import ComfyUIWorkerError
from ..observability.logs import error_fields, job_fields, type_name

log = logging.getLogger(__name__)

# The log line shows the start of the message; LittleHorse keeps all of it.
SHORT_MESSAGE_CHARS = 300
TRACEBACK_HEAD = "Traceback (most recent call last):"

# Business exceptions whose WARNING line is written: the SDK's traceback of them is dropped.
_logged: weakref.WeakSet[BaseException] = weakref.WeakSet()


def short_message(text: str) -> str:
    """`text` on one line, cut to SHORT_MESSAGE_CHARS."""
    line = " ".join(text.split())
    if len(line) <= SHORT_MESSAGE_CHARS:
        return line
    return line[: SHORT_MESSAGE_CHARS - 1] + "…"


def describe_job() -> str:
    """The running job as a text log line names it (JSON lines have the fields too)."""
    job = job_fields()
    parts = (
        ("prompt", job.get("prompt_id")),
        ("WfRun", job.get("wf_run_id")),
        ("task", job.get("task_guid")),
        ("attempt", job.get("attempt")),
    )
    return ", ".join(f"{name} {value}" for name, value in parts if value is not None)


def _job_prefix() -> str:
    # Empty before our task bound the job (e.g. the SDK failing to call it).
    job = describe_job()
    return f"{job}: " if job else ""


def log_business_exception(cause: ComfyUIWorkerError, reported: LHTaskException) -> None:
    """The one line a business exception gets: its LittleHorse name, the job's ids and the
    start of the message LittleHorse stores. `reported` is what the task raises to the SDK."""
    message = short_message(reported.message)
    log.warning(
        "%sbusiness exception %s (LittleHorse does not retry it): %s",
        _job_prefix(),
        reported.exception_name,
        message,
        extra=error_fields(type_name(cause), message, code=reported.exception_name),
    )
    _logged.add(reported)


class SdkTaskLogFilter(logging.Filter):
    """On the root logger: the SDK's traceback of a task's exception, dropped or rewritten."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = sys.exc_info()
        exc = exc_info[1]
        if exc is None or not _is_traceback_of_handled(record):
            return True
        if exc in _logged:
            return False
        record.msg = "%stask attempt failed: %s: %s"
        record.args = (_job_prefix(), type(exc).__name__, short_message(str(exc)))
        record.exc_info, record.exc_text = exc_info, None
        return True


def _is_traceback_of_handled(record: logging.LogRecord) -> bool:
    """The record is `logging.error(traceback.format_exc())` of the exception being handled."""
    return (
        record.levelno == logging.ERROR
        and record.exc_info is None
        and not record.args
        and isinstance(record.msg, str)
        and record.msg.startswith(TRACEBACK_HEAD)
        and record.msg == traceback.format_exc()
    )


def install() -> None:
    """Put the filter on the root logger, once (idempotent; cheap enough for every attempt)."""
    root = logging.getLogger()
    if not any(isinstance(f, SdkTaskLogFilter) for f in root.filters):
        root.addFilter(SdkTaskLogFilter())
