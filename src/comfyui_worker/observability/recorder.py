"""A `JobObserver` that records: the job's row on the board `/jobs` shows, its progress, and
its timings in the metrics. Where its notes and progress lines go is up to subclasses (the
LittleHorse task sends them to the NodeRun log, `run` to a progress bar)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from ..comfyui.events import Event
from ..comfyui.models import HistoryEntry
from ..constants import JobOutcome
from ..execution import JobObserver
from . import metrics
from .logs import bind_job
from .progress import JOBS, JobBoard, JobState, JobView, LogThrottle, Progress

log = logging.getLogger(__name__)

# ComfyUI's history messages that end a run, each with a `timestamp` in epoch milliseconds.
END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


class RecordingObserver(JobObserver):
    """The job appears on the board when it starts waiting for a slot; call `close()` after
    the job, whatever happened."""

    def __init__(
        self,
        board: JobBoard = JOBS,
        *,
        wf_run_id: str | None = None,
        task_run_id: str | None = None,
        attempt: int | None = None,
        task: str = "",
    ) -> None:
        self.board = board
        self.wf_run_id, self.task_run_id, self.attempt = wf_run_id, task_run_id, attempt
        self.task, self.template = task, ""
        self.started = time.monotonic()
        self._view: JobView | None = None
        self._waiting_since = self.started
        self._submitted_at: float | None = None  # wall clock, to compare with ComfyUI's
        self._throttle = LogThrottle()

    def close(self, outcome: JobOutcome, exception: str = "") -> None:
        if self._view is not None:
            self.board.remove(self._view.prompt_id, self._view)
            metrics.JOBS_IN_FLIGHT.dec()
            self._view = None
        metrics.record_finished(
            outcome, exception, self.started, task=self.task, template=self.template
        )

    def changed(self, prompt_id: str, progress: Progress) -> None:
        """The progress figure moved; by default a line when one is due."""
        if self._throttle.due(progress.percent):
            self.progress(prompt_id, progress)

    def progress(self, prompt_id: str, progress: Progress) -> None:
        """A progress line is due (at most every 10 % or 10 s)."""
        log.info("prompt %s: %s", prompt_id, progress.describe())

    # -- JobObserver ------------------------------------------------------------------

    def bound(self, prompt_id: str, template: str) -> None:
        self.template = template

    def waiting(self, prompt_id: str) -> None:
        self._waiting_since = time.monotonic()
        if self._view is None:
            # `run` has no task to bind the ids; the LittleHorse task has bound them already.
            bind_job(prompt_id=prompt_id)
            self._view = JobView(
                prompt_id=prompt_id,
                wf_run_id=self.wf_run_id,
                task_run_id=self.task_run_id,
                attempt=self.attempt,
                started=self.started,
            )
            self.board.add(self._view)
            metrics.JOBS_IN_FLIGHT.inc()

    def slot_acquired(self, prompt_id: str) -> None:
        metrics.SLOT_WAIT.observe(time.monotonic() - self._waiting_since)

    def submitted(self, prompt_id: str, prompt: dict[str, Any]) -> None:
        self._submitted_at = time.time()
        nodes = {str(nid): str(node.get("class_type", "")) for nid, node in prompt.items()}
        view = self.board.get(prompt_id)
        if view is not None:
            view.progress.nodes = nodes
        self.board.update(prompt_id, state=JobState.QUEUED)

    def queued(self, prompt_id: str, position: int | None) -> None:
        self.board.update(prompt_id, state=JobState.QUEUED, queue_position=position)

    def event(self, prompt_id: str, event: Event) -> None:
        if event.type == "execution_start":
            self.board.update(prompt_id, state=JobState.RUNNING, queue_position=None)
            return
        view = self.board.apply(prompt_id, event)
        if view is not None and not view.progress.finished:
            self.changed(prompt_id, view.progress)

    def completed(self, prompt_id: str, entry: HistoryEntry, *, reused: bool) -> None:
        self.board.update(prompt_id, state=JobState.FINISHING)
        if reused:
            return
        start = _timestamp(entry, ("execution_start",))
        end = _timestamp(entry, END_EVENTS)
        if start is not None and self._submitted_at is not None:
            metrics.QUEUE_WAIT.observe(max(0.0, start - self._submitted_at))
        if start is not None and end is not None:
            metrics.EXECUTION.observe(max(0.0, end - start))
        if (success := _timestamp(entry, ("execution_success",))) is not None:
            metrics.COMPLETION_LATENCY.observe(max(0.0, time.time() - success))


def _timestamp(entry: HistoryEntry, events: Iterable[str]) -> float | None:
    """Seconds since the epoch of the first of `events` in the history, by ComfyUI's clock."""
    for event in events:
        data = entry.message(event)
        if data is not None and isinstance(value := data.get("timestamp"), int | float):
            return float(value) / 1000.0
    return None
