"""Logging setup: `text` for people, `json` (one object a line) for log collectors.

JSON lines use the field names of the Elastic Common Schema (ECS) as ecs-logging writes
them, flat keys with dots (`log.level`, `service.name`, `error.stack_trace`), so Filebeat,
Elastic Agent, Fluent Bit or Vector map them without a parsing rule of ours; the job's ids go
in namespaces of their own (`comfyui.*`, `littlehorse.*`), as ECS asks of custom fields.

The job's identifiers ride in a context variable that the task sets, so every record written
while a job runs (ours, httpx's, the SDK's) carries them. Every formatted record passes the
redactor: credential values from the environment or `.env`, and the user-info of any URL
(`http://user:password@host`), never reach a log, at any level. Error messages the process
hands out (to LittleHorse, on stderr) pass the same redactor through `redact`.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path
from queue import SimpleQueue
from types import MappingProxyType
from typing import Any, TextIO

from dotenv import dotenv_values

from .. import __version__
from ..constants import LogFormat
from ..settings import is_secret_name

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SERVICE_NAME = "comfyui-worker"
# The ECS release whose definitions the field names below follow.
ECS_VERSION = "8.11.0"
# `bind_job`'s names -> the JSON field of each.
JOB_FIELDS = MappingProxyType(
    {
        "prompt_id": "comfyui.prompt_id",
        "tenant": "littlehorse.tenant",
        "wf_run_id": "littlehorse.wf_run_id",
        "task_guid": "littlehorse.task_guid",
        "attempt": "littlehorse.attempt",
        "task_def": "littlehorse.task_def",
    }
)
# The `extra=` key under which a record carries `error.*` fields without a traceback.
ERROR_FIELDS = "ecs_error"
# Shorter values are not credentials worth the risk of blanking ordinary words.
MIN_SECRET_LENGTH = 4
REDACTED = "***"
# The user-info of a URL: from `://` to the last `@` before the host (a password may hold an
# unescaped `@`), stopping at whatever cannot be in an authority or ends a quoted URL.
_USERINFO = re.compile(r"(?<=://)[^\s/?#\"'<>\\]*@")

_job: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "job", default=MappingProxyType({})
)


def bind_job(
    *,
    prompt_id: str | None = None,
    tenant: str | None = None,
    wf_run_id: str | None = None,
    task_guid: str | None = None,
    attempt: int | None = None,
    task_def: str | None = None,
) -> None:
    """Add identifiers of the running job to this context's log records (None is skipped)."""
    given = {
        "prompt_id": prompt_id,
        "tenant": tenant,
        "wf_run_id": wf_run_id,
        "task_guid": task_guid,
        "attempt": attempt,
        "task_def": task_def,
    }
    _job.set({**_job.get(), **{k: v for k, v in given.items() if v is not None}})


def job_fields() -> Mapping[str, Any]:
    """The running job's ids, by `bind_job`'s names."""
    return _job.get()


# `service.*` of every JSON line; the worker id only once `serve` knows it.
_service: dict[str, str] = {"service.name": SERVICE_NAME, "service.version": __version__}


def set_worker_id(worker_id: str | None) -> None:
    """The id this process polls LittleHorse under (`LHW_TASK_WORKER_ID`, or the SDK's
    random one), as `service.node.name`: ECS's name for one instance of a service. None
    takes it off."""
    if worker_id is None:
        _service.pop("service.node.name", None)
    else:
        _service["service.node.name"] = worker_id


def error_fields(error_type: str, message: str, code: str | None = None) -> dict[str, Any]:
    """`extra=` for a record that reports an error without its traceback."""
    fields = {"error.type": error_type, "error.message": message}
    if code is not None:
        fields["error.code"] = code
    return {ERROR_FIELDS: fields}


def type_name(exc: BaseException) -> str:
    """`package.module.Class`, or the bare name of a builtin: ECS's `error.type`."""
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def secret_values(
    environ: Mapping[str, str] | None = None, env_file: Path = Path(".env")
) -> list[str]:
    """Values of credential settings in the environment and in `env_file` (the SDK's LHC_*
    settings may come from there), longest first."""
    env = os.environ if environ is None else environ
    try:
        from_file = dotenv_values(env_file)
    except (OSError, UnicodeDecodeError):  # the CLI reports that file itself, in these logs
        from_file = {}
    pairs = [*env.items(), *from_file.items()]
    found = {
        v for k, v in pairs if v is not None and is_secret_name(k) and len(v) >= MIN_SECRET_LENGTH
    }
    return sorted(found, key=len, reverse=True)


def mask_userinfo(text: str) -> str:
    """`text` with the user-info of every URL in it masked: `http://***@comfy:8188`."""
    if "@" not in text or "://" not in text:
        return text
    return _USERINFO.sub(REDACTED + "@", text)


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(secrets)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return mask_userinfo(text)


# The redactor of the logs configured last; until then, URLs are masked all the same.
_redactor = Redactor(())


def redact(text: str) -> str:
    """`text` as the logs would show it: for error messages that leave the process by
    another way (LittleHorse's report, the CLI's stderr)."""
    return _redactor(text)


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One ECS object a line: `@timestamp` (UTC), `log.level`, `log.logger`, `message`,
    `service.*`, the job's ids, and `error.*` for an exception (docs/observability.md, Logs,
    lists them)."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        message = record.getMessage()
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        entry: dict[str, Any] = {
            "@timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "log.level": record.levelname.lower(),
            "message": message,
            "ecs.version": ECS_VERSION,
            "log.logger": record.name,
            **_service,
            "event.dataset": f"{SERVICE_NAME}.log",
        }
        entry.update((JOB_FIELDS[k], v) for k, v in job_fields().items() if k in JOB_FIELDS)
        given = getattr(record, ERROR_FIELDS, None)
        if isinstance(given, Mapping):
            entry.update(given)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            entry["error.type"] = type_name(exc)
            entry["error.message"] = str(exc)
            entry["error.stack_trace"] = self.formatException(record.exc_info)
        for key, value in entry.items():
            if isinstance(value, str):
                entry[key] = self.redact(value)
        # Again on the line: a secret escaped differently in JSON.
        return self.redact(json.dumps(entry, default=str, ensure_ascii=False))


class _Preformatted(logging.Formatter):
    """For records `_OurHandler` formatted already (message, traceback and all)."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


class _OurHandler(QueueHandler):
    """Formats (and redacts) in the thread that logs, where the job's context is; a listener
    thread writes the line. A stalled stderr (a slow container log driver, a full pipe) must
    not stall the event loop, and with it every task and the LittleHorse heartbeat. Once
    stopped (at exit), it writes directly, so late records are not lost."""

    def __init__(self, stream: TextIO) -> None:
        queue: SimpleQueue[logging.LogRecord] = SimpleQueue()
        super().__init__(queue)
        self.writer = logging.StreamHandler(stream)
        self.writer.setFormatter(_Preformatted())
        self.listener = QueueListener(queue, self.writer)
        self.stopped = False

    def start(self) -> None:
        self.listener.start()

    def stop(self) -> None:
        """Write out the lines still queued and end the writer thread."""
        if not self.stopped:
            self.stopped = True
            self.listener.stop()

    def emit(self, record: logging.LogRecord) -> None:
        if self.stopped:
            self.writer.handle(self.prepare(record))
        else:
            super().emit(record)


def configure_logging(
    log_format: LogFormat, *, verbose: bool = False, stream: TextIO | None = None
) -> None:
    """Install (or replace) our one root handler, on stderr in the chosen format. Handlers
    others installed (a test runner's capture) stay."""
    global _redactor
    _redactor = Redactor(secret_values())
    handler = _OurHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(_redactor) if log_format is LogFormat.JSON else TextFormatter(_redactor)
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        if isinstance(old, _OurHandler):
            root.removeHandler(old)
            old.stop()
    handler.start()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # One INFO line per HTTP request would drown the job's own log lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def flush_logs() -> None:
    """Write out every line logged so far (before `os._exit`, and at exit); later records
    are written directly."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _OurHandler):
            handler.stop()


atexit.register(flush_logs)
