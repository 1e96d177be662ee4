"""Logging setup: `text` for people, `json` (one object a line) for log collectors.

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

from ..constants import LogFormat
from ..settings import is_secret_name

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOB_FIELDS = ("prompt_id", "tenant", "wf_run_id", "task_run_id", "attempt")
# Shorter values are not credentials worth the risk of blanking ordinary words.
MIN_SECRET_LENGTH = 4
REDACTED = "***"
# The user-info of a URL: from `://` to the last `@` before the host (a password may hold an
# unescaped `@`), stopping at whatever cannot be in an authority or ends a quoted URL.
_USERINFO = re.compile(r"(?<=://)[^\s/?#\"'<>\\]*@")

_job: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "job", default=MappingProxyType({})
)


def bind_job(**fields: Any) -> None:
    """Add identifiers of the running job to this context's log records (None is skipped)."""
    _job.set({**_job.get(), **{k: v for k, v in fields.items() if v is not None}})


def job_fields() -> Mapping[str, Any]:
    return _job.get()


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
    """time (UTC, ISO 8601), level, logger, message, the job's ids, and exc_info if any."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        entry.update(job_fields())
        if record.exc_info:
            entry["exc_info"] = self.redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack_info"] = self.redact(self.formatStack(record.stack_info))
        # Again on the line: a secret among the job fields or escaped differently.
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
