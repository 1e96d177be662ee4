"""What this process claimed and has not reported yet, across every TaskDef and connection.

Each claimed task is a `Claim` in the process's one `InFlight` from the moment a poll reply
brings it until LittleHorse acknowledged its report (or the report was given up), so a drain
knows what is still waiting, running or reporting.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from littlehorse.model import ScheduledTask, TaskRunId

from .identity import wf_run_name, wf_run_path

if TYPE_CHECKING:
    from .connection import SupervisedConnection


def describe_run(run_id: TaskRunId, attempt: int | None = None) -> str:
    """How logs name a task run: `wf_run_id/task_guid` and the attempt."""
    text = f"task run {wf_run_name(run_id.wf_run_id)}/{run_id.task_guid}"
    return text if attempt is None else f"{text} attempt {attempt}"


class Phase(StrEnum):
    WAITING = "waiting"  # claimed, not started: for a slot, or for ComfyUI (Admission)
    RUNNING = "running"
    REPORTING = "reporting"


@dataclass
class Claim:
    """A task this process claimed and has not yet reported."""

    task: ScheduledTask
    connection: SupervisedConnection
    # None while the claim waits for a slot; a WAITING claim with one holds its slot.
    execution: asyncio.Task[None] | None = None
    phase: Phase = Phase.WAITING

    @property
    def name(self) -> str:
        return describe_run(self.task.task_run_id, self.task.attempt_number)


class InFlight:
    """Every claimed task from its claim until LittleHorse acknowledged its report."""

    def __init__(self) -> None:
        self._claims: dict[tuple[tuple[str, ...], str, int], Claim] = {}
        self._changed = asyncio.Event()

    @staticmethod
    def _key(task_run_id: TaskRunId, attempt: int) -> tuple[tuple[str, ...], str, int]:
        # A child WfRun's own id is unique only under its parent.
        return (wf_run_path(task_run_id.wf_run_id), task_run_id.task_guid, attempt)

    def __len__(self) -> int:
        return len(self._claims)

    def claims(self) -> list[Claim]:
        return list(self._claims.values())

    def add(self, claim: Claim) -> None:
        self._claims[self._key(claim.task.task_run_id, claim.task.attempt_number)] = claim
        self._changed.set()

    def get(self, task_run_id: TaskRunId, attempt: int) -> Claim | None:
        return self._claims.get(self._key(task_run_id, attempt))

    def remove(self, task_run_id: TaskRunId, attempt: int) -> None:
        claim = self._claims.pop(self._key(task_run_id, attempt), None)
        if claim is not None:
            self._changed.set()
            claim.connection.release_channel_if_idle()

    async def wait_empty(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait up to `timeout` s for nothing to be in flight; True if so."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._claims:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await self.wait_changed(remaining)
        return True

    async def wait_changed(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait up to `timeout` s for a claim to be added or removed."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()
