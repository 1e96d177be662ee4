"""The LittleHorse side of `serve`: one `SupervisedWorker` per TaskDef, one gate, one drain.

The `Supervisor` decides when the process may claim tasks (not while draining, not while
ComfyUI is not ready) and, through its `Admission`, when a claimed task may start; it tracks
every claimed task of every TaskDef in one `InFlight`, and drains them on shutdown. Read-only
state for health and readiness endpoints (attribute reads only): `polling`, `draining`,
`comfyui_ready`, `lh_reconnects`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from littlehorse.config import LHConfig

from ..constants import DEFAULT_READY_WAIT
from .admission import Admission
from .claims import Claim, InFlight, Phase
from .supervised_worker import ClaimSlots, SupervisedWorker

log = logging.getLogger(__name__)

# After the grace, how long the reports of the tasks cancelled then may take.
REPORT_FLUSH = 5.0


class Supervisor:
    """Every TaskDef this process serves, claimed only while it may."""

    def __init__(
        self,
        tasks: Mapping[str, Callable[..., Any]],
        config: LHConfig,
        *,
        ready: Callable[[], bool] = lambda: True,
        ready_wait: float = DEFAULT_READY_WAIT,
    ) -> None:
        """`ready`: whether ComfyUI answers; `ready_wait`: COMFYUI_READY_WAIT."""
        self.in_flight = InFlight()
        self.admission = Admission(ready, ready_wait=ready_wait)
        self._ready = ready
        slots = ClaimSlots(config.num_worker_threads)  # one bound for every TaskDef
        self.workers = [
            SupervisedWorker(
                task,
                name,
                config,
                in_flight=self.in_flight,
                may_claim=self._may_claim,
                slots=slots,
                admission=self.admission,
            )
            for name, task in tasks.items()
        ]

    # -- state for health and readiness ------------------------------------------------------

    @property
    def polling(self) -> bool:
        """Every TaskDef has a poll stream to LittleHorse open and asking for work."""
        return all(worker.polling for worker in self.workers)

    @property
    def draining(self) -> bool:
        return self.admission.draining

    @property
    def comfyui_ready(self) -> bool:
        return self._ready()

    @property
    def lh_reconnects(self) -> int:
        """Poll streams replaced after LittleHorse (or something in between) ended them."""
        return sum(worker.lh_reconnects for worker in self.workers)

    def _may_claim(self) -> bool:
        return not self.draining and self._ready()

    # -- lifecycle ---------------------------------------------------------------------------

    def wake(self) -> None:
        """Apply the gates now (readiness changed, drain requested)."""
        self.admission.changed()
        closed = not self._may_claim()
        for worker in self.workers:
            if closed:
                worker.pause()
            else:
                worker.wake()

    async def run(self) -> None:
        """Serve until `stop()`; a worker that cannot start (LittleHorse unreachable, TaskDef
        missing) stops the others and raises."""
        runners = [
            asyncio.create_task(worker.start(), name=f"lh-worker-{i}")
            for i, worker in enumerate(self.workers)
        ]
        try:
            for done in asyncio.as_completed(runners):
                await done
        finally:
            self.stop()
            await asyncio.gather(*runners, return_exceptions=True)

    def stop(self) -> None:
        """Stop claiming and end `run()`; claimed tasks keep running and reporting."""
        for worker in self.workers:
            worker.stop()

    async def drain(self, grace: float) -> list[Claim]:
        """Stop claiming and starting tasks (claimed ones not started yet are reported at
        once as retryable failures, see `Admission`); give running tasks `grace` s to finish
        and report; cancel what still runs then (the SDK reports a cancelled task as
        TASK_FAILED, which LittleHorse retries) and give those reports a few seconds.
        Returns the claims that were cancelled."""
        self.admission.drain()
        self.wake()
        if running := self._running():
            log.info(
                "draining: no new tasks; %d running task(s) get up to %g s to finish and report",
                len(running),
                grace,
            )
        cancelled: list[Claim] = []
        if not await self.in_flight.wait_empty(grace):
            reason = (
                f"worker shutting down: still running after the {grace:g} s "
                "COMFYUI_SHUTDOWN_GRACE; reported as a retryable failure"
            )
            cancelled = await self._cancel_until_reported(reason)
        self.stop()
        return cancelled

    def _running(self) -> list[Claim]:
        return [claim for claim in self.in_flight.claims() if claim.phase is Phase.RUNNING]

    async def _cancel_until_reported(self, reason: str) -> list[Claim]:
        """Cancel what runs (nothing starts any more: the admission is draining) and give
        the reports REPORT_FLUSH s. Returns the claims cancelled."""
        cancelled: list[Claim] = []
        for claim in self._running():
            if claim.execution is not None and not claim.execution.done():
                log.warning("%s: %s", claim.name, reason)
                claim.execution.cancel(reason)
                cancelled.append(claim)
        await self.in_flight.wait_empty(REPORT_FLUSH)
        for claim in self.in_flight.claims():
            log.error(
                "%s: exiting before its report reached LittleHorse; LittleHorse retries the "
                "task after its timeout",
                claim.name,
            )
        return cancelled
