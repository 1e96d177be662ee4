"""`comfyui-worker run`'s view of a job: a progress bar on a terminal, log lines otherwise;
and the CLI's own last words (`say`)."""

from __future__ import annotations

import logging
import os
import sys
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn, TextIO

from ..comfyui.models import HistoryEntry
from ..constants import LogFormat
from .logs import redact
from .progress import Progress
from .recorder import RecordingObserver

if TYPE_CHECKING:
    from tqdm import tqdm

DEFAULT_SIZE = os.terminal_size((80, 24))

log = logging.getLogger("comfyui_worker.cli")


def say(message: str, log_format: LogFormat, *, level: int = logging.ERROR) -> None:
    """One line on stderr that ends the command: `comfyui-worker: error: ...` for a person
    (`error: ` only at ERROR), or with COMFYUI_LOG_FORMAT=json a log record like every other
    line, so that a log collector never meets plain text."""
    if log_format is LogFormat.JSON:
        log.log(level, message)
    else:
        kind = "error: " if level >= logging.ERROR else ""
        print(f"comfyui-worker: {kind}{redact(message)}", file=sys.stderr, flush=True)


class ConsoleObserver(RecordingObserver):
    """Draws a tqdm bar on `stream` when it is a terminal; otherwise progress goes to the log
    (at most every 10 % or 10 s, like the NodeRun log)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        # What `run` says when a signal stops it: the job's prompt id once it has one, and
        # whether the job's own notes still go out (`run` says itself what became of it).
        self.prompt_id: str | None = None
        self.quiet = False
        self._bar: tqdm[NoReturn] | None = None
        if self.stream.isatty():
            # Imported here: `serve` never draws a bar and need not load it.
            from tqdm import tqdm

            size = _terminal_size(self.stream)
            self._bar = tqdm(
                total=100.0,
                file=self.stream,
                # A fresh pty reports 0 x 0, and tqdm then draws nothing at all.
                ncols=size.columns or DEFAULT_SIZE.columns,
                nrows=size.lines or DEFAULT_SIZE.lines,
                unit="%",
                bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}",
                leave=True,
            )

    def __enter__(self) -> ConsoleObserver:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()

    def waiting(self, prompt_id: str) -> None:
        super().waiting(prompt_id)
        self.prompt_id = prompt_id

    def note(self, prompt_id: str, message: str) -> None:
        if self.quiet:
            return
        if self._bar is None:
            super().note(prompt_id, message)
        else:
            self._bar.write(f"prompt {prompt_id}: {message}", file=self.stream)

    def changed(self, prompt_id: str, progress: Progress) -> None:
        if self._bar is None:
            super().changed(prompt_id, progress)
            return
        self._bar.set_description_str(progress.describe().partition(", ")[2] or "starting")
        self._bar.update(progress.percent - self._bar.n)

    def completed(self, prompt_id: str, entry: HistoryEntry, *, reused: bool) -> None:
        super().completed(prompt_id, entry, reused=reused)
        if self._bar is not None and entry.succeeded:
            self._bar.set_description_str("done")
            self._bar.update(100.0 - self._bar.n)


def _terminal_size(stream: TextIO) -> os.terminal_size:
    try:
        return os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):
        return DEFAULT_SIZE
