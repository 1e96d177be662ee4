"""The LittleHorse side of `serve`: one `SupervisedWorker` per TaskDef, one gate, one drain.

The `Supervisor` decides when the process may claim tasks (not while draining, not while
ComfyUI is not ready), tracks every claimed task of every TaskDef in one `InFlight`, and
drains them on shutdown. Read-only state for health and readiness endpoints (attribute
reads only): `polling`, `draining`, `comfyui_ready`, `lh_reconnects`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from littlehorse.config import LHConfig

from .connection import Claim, InFlight, Phase
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
    ) -> None:
        self.in_flight = InFlight()
        self.draining = False
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
            )
            for name, task in tasks.items()
        ]

    # -- state for health and readiness ------------------------------------------------------

    @property
    def polling(self) -> bool:
        """Every TaskDef has a poll stream to LittleHorse open and asking for work."""
        return all(worker.polling for worker in self.workers)

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
        """Apply the gate now (readiness changed, drain requested)."""
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
        """Stop claiming; give claimed tasks `grace` s to finish and report; cancel what still
        runs then (the SDK reports a cancelled task as TASK_FAILED, which LittleHorse retries)
        and give those reports a few seconds. Returns the claims that were cancelled."""
        self.draining = True
        self.wake()
        if claims := self.in_flight.claims():
            log.info(
                "draining: no new tasks; %d claimed task(s) get up to %g s to finish and report",
                len(claims),
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

    async def _cancel_until_reported(self, reason: str) -> list[Claim]:
        """Cancel what runs, and what starts meanwhile (a task claimed beside the full slots
        takes the slot a cancelled one frees), until every report is sent or REPORT_FLUSH
        s passed. Returns the claims cancelled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REPORT_FLUSH
        cancelled: list[Claim] = []
        while True:
            for claim in self.in_flight.claims():
                task = claim.execution
                if claim.phase is Phase.RUNNING and not task.done() and not task.cancelling():
                    log.warning("%s: %s", claim.name, reason)
                    claim.execution.cancel(reason)
                    cancelled.append(claim)
            remaining = deadline - loop.time()
            if not len(self.in_flight) or remaining <= 0:
                break
            await self.in_flight.wait_changed(remaining)
        for claim in self.in_flight.claims():
            log.error(
                "%s: exiting before its report reached LittleHorse; LittleHorse retries the "
                "task after its timeout",
                claim.name,
            )
        return cancelled
