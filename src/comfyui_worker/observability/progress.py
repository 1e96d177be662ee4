"""How far a job is: ComfyUI's `executing`/`progress` events turned into one figure, and the
board of jobs in flight that `/jobs` shows.

The board is written on the event loop and read by the health server's thread, so every
access goes through its lock and readers get copies.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..comfyui.events import Event

# The NodeRun log is stored by LittleHorse: a progress line at most every 10 % or 10 s.
LOG_EVERY_PERCENT = 10.0
LOG_EVERY_SECONDS = 10.0


class JobState(StrEnum):
    WAITING = "waiting"  # for one of this process's slots
    QUEUED = "queued"  # in ComfyUI's queue
    RUNNING = "running"
    FINISHING = "finishing"  # ComfyUI is done; reading history and outputs


@dataclass(slots=True)
class Progress:
    """Percent over the nodes that will run: cached nodes do not count, the running node
    counts by its own value/max (sampler steps)."""

    nodes: dict[str, str] = field(default_factory=dict)  # node id -> class_type
    cached: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)
    node: str | None = None
    value: float = 0.0
    max: float = 0.0
    finished: bool = False

    def update(self, event: Event) -> bool:
        """Apply one of this prompt's events; True when the figure changed."""
        data = event.data
        if event.type == "execution_cached":
            self.cached.update(str(n) for n in data.get("nodes") or [])
        elif event.type == "executing":
            if self.node is not None:
                self.done.add(self.node)
            node = data.get("node")
            self.node, self.value, self.max = (None if node is None else str(node)), 0.0, 0.0
            self.finished = node is None
        elif event.type == "progress":
            self.value, self.max = _number(data.get("value")), _number(data.get("max"))
            if (node := data.get("node")) is not None:
                self.node = str(node)
        elif event.type == "execution_success":
            self.finished = True
        else:
            return False
        return True

    @property
    def percent(self) -> float:
        if self.finished:
            return 100.0
        to_run = [n for n in self.nodes if n not in self.cached] or list(self.done)
        if not to_run:
            return 0.0
        done = float(len(self.done.intersection(to_run)))
        if self.node is not None and self.node not in self.done and self.max > 0:
            done += min(1.0, self.value / self.max)
        return round(min(100.0, 100.0 * done / len(to_run)), 1)

    def describe(self) -> str:
        if self.node is None:
            return f"{self.percent:.0f}%"
        step = f" step {self.value:g}/{self.max:g}" if self.max > 0 else ""
        class_type = self.nodes.get(self.node)
        name = f"{self.node} ({class_type})" if class_type else self.node
        return f"{self.percent:.0f}%, node {name}{step}"


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


@dataclass(slots=True)
class LogThrottle:
    """Says when a progress line is worth writing: 10 % further or 10 s later."""

    every_percent: float = LOG_EVERY_PERCENT
    every_seconds: float = LOG_EVERY_SECONDS
    _percent: float = -1.0
    _at: float = 0.0

    def due(self, percent: float, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if percent <= self._percent:
            return False
        if self._percent >= 0 and (
            percent - self._percent < self.every_percent and now - self._at < self.every_seconds
        ):
            return False
        self._percent, self._at = percent, now
        return True


@dataclass(slots=True)
class JobView:
    """One job in flight as `/jobs` shows it."""

    prompt_id: str
    wf_run_id: str | None = None
    task_run_id: str | None = None
    attempt: int | None = None
    state: JobState = JobState.WAITING
    queue_position: int | None = None
    progress: Progress = field(default_factory=Progress)
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "wf_run_id": self.wf_run_id,
            "task_run_id": self.task_run_id,
            "attempt": self.attempt,
            "state": self.state.value,
            "detail": self.detail(),
            "queue_position": self.queue_position,
            "node": self.progress.node,
            "node_type": self.progress.nodes.get(self.progress.node or ""),
            "percent": self.progress.percent,
            "elapsed_seconds": round(time.monotonic() - self.started, 3),
        }

    def detail(self) -> str:
        if self.state is JobState.WAITING:
            return "waiting for a slot"
        if self.state is JobState.QUEUED:
            where = f" at position {self.queue_position}" if self.queue_position else ""
            return f"queued in ComfyUI{where}"
        if self.state is JobState.RUNNING:
            return f"running: {self.progress.describe()}"
        return "reading results"


class JobBoard:
    """The jobs in flight in this process, keyed by prompt id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, JobView] = {}

    def add(self, view: JobView) -> None:
        with self._lock:
            self._jobs[view.prompt_id] = view

    def remove(self, prompt_id: str, view: JobView | None = None) -> None:
        """Take the job's row off; with `view`, only if it is still that row (a retry of the
        same prompt may have put its own)."""
        with self._lock:
            if view is None or self._jobs.get(prompt_id) is view:
                self._jobs.pop(prompt_id, None)

    def get(self, prompt_id: str) -> JobView | None:
        with self._lock:
            return self._jobs.get(prompt_id)

    def update(self, prompt_id: str, **changes: Any) -> None:
        with self._lock:
            if (view := self._jobs.get(prompt_id)) is not None:
                for name, value in changes.items():
                    setattr(view, name, value)

    def apply(self, prompt_id: str, event: Event) -> JobView | None:
        """Feed a ComfyUI event to the job's progress; the view when the figure changed."""
        with self._lock:
            view = self._jobs.get(prompt_id)
            if view is None or not view.progress.update(event):
                return None
            if event.type in {"executing", "progress"} and not view.progress.finished:
                view.state = JobState.RUNNING
            return view

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [view.as_dict() for view in self._jobs.values()]


JOBS = JobBoard()
"""This process's board: the task records into it, `/jobs` reads it."""
