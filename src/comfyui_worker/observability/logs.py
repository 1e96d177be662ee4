"""Logging setup: `text` for people, `json` (one object a line) for log collectors.

The job's identifiers ride in a context variable that the task sets, so every record written
while a job runs (ours, httpx's, the SDK's) carries them. Every formatted record passes the
redactor: credential values from the environment or `.env` never reach a log, at any level.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, TextIO

from dotenv import dotenv_values

from ..constants import LogFormat
from ..settings import is_secret_name

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOB_FIELDS = ("prompt_id", "wf_run_id", "task_run_id", "attempt")
# Shorter values are not credentials worth the risk of blanking ordinary words.
MIN_SECRET_LENGTH = 4
REDACTED = "***"

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
    pairs = [*env.items(), *dotenv_values(env_file).items()]
    found = {
        v for k, v in pairs if v is not None and is_secret_name(k) and len(v) >= MIN_SECRET_LENGTH
    }
    return sorted(found, key=len, reverse=True)


class Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(secrets)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


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


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    pass


def configure_logging(
    log_format: LogFormat, *, verbose: bool = False, stream: TextIO | None = None
) -> None:
    """Install (or replace) our one root handler, on stderr in the chosen format. Handlers
    others installed (a test runner's capture) stay."""
    redact = Redactor(secret_values())
    handler = _OurHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(redact) if log_format is LogFormat.JSON else TextFormatter(redact)
    )
    root = logging.getLogger()
    for old in root.handlers[:]:
        if isinstance(old, _OurHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # One INFO line per HTTP request would drown the job's own log lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
