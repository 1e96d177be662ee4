"""Whether a task this process claimed may start: the gate behind the one on claiming.

Closing the claim gate (ComfyUI does not answer, a drain) half-closes the poll streams at once,
so LittleHorse matches no more tasks to them. Claimed tasks can still be waiting to start: one
LittleHorse had matched to a poll just before (it commits the claim, then sends the task, also
on a stream half-closed meanwhile), and one claimed beside full slots, waiting for a slot.
Started into a ComfyUI that does not answer, such a task fails in seconds and burns one of
the WfSpec's retries; started during a drain, it begins GPU work that the drain then cuts off
and a retry elsewhere runs again. So before a claimed task runs:

- once draining has begun it does not start: it is reported at once as a retryable failure,
  which LittleHorse retries on another worker; nothing reached ComfyUI, so nothing runs twice;
- while ComfyUI does not answer it waits for it, up to COMFYUI_READY_WAIT seconds, and starts
  once it answers (after the warmup, if one is set); past that it is reported the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ..constants import DEFAULT_READY_WAIT

log = logging.getLogger(__name__)

DRAINING = (
    "not started: the worker is shutting down (SIGTERM/SIGINT) and starts no new work; "
    "reported as a retryable failure at once, for LittleHorse to retry it on another worker "
    "(nothing of it reached ComfyUI)"
)


class Admission:
    """Lets claimed tasks start only while ComfyUI answers and the process is not draining.

    One per process, shared by every TaskDef's connections; `changed()` must be called when
    readiness changes (the `Supervisor` does, from the readiness watch)."""

    def __init__(
        self, ready: Callable[[], bool] = lambda: True, *, ready_wait: float = DEFAULT_READY_WAIT
    ) -> None:
        self.draining = False
        self.ready_wait = ready_wait
        self._ready = ready
        # Replaced on every change, so that each waiter wakes for the change after it looked.
        self._changed = asyncio.Event()
        self._drain_begun = asyncio.Event()

    def changed(self) -> None:
        """Readiness or draining changed: every waiting task looks again."""
        self._changed.set()
        self._changed = asyncio.Event()

    def drain(self) -> None:
        """From now on no claimed task starts; the waiting ones are let go at once."""
        self.draining = True
        self._drain_begun.set()
        self.changed()

    async def take_slot(self, slots: asyncio.Semaphore) -> bool:
        """Wait for one of `slots`; False, holding none, if draining begins first."""
        if self.draining:
            return False
        if not slots.locked():
            return await slots.acquire()  # free: taken without waiting
        acquiring = asyncio.ensure_future(slots.acquire())
        draining = asyncio.ensure_future(self._drain_begun.wait())
        try:
            await asyncio.wait((acquiring, draining), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            _give_back(acquiring, slots)
            raise
        finally:
            draining.cancel()
        if acquiring.done() and not self.draining:
            return True
        _give_back(acquiring, slots)
        return False

    async def admit(self, name: str) -> str | None:
        """None when the claimed task `name` (for logs) may start now, after waiting for
        ComfyUI if need be; otherwise why it must not start at all."""
        if self.draining:
            return DRAINING
        if self._ready():
            return None
        log.warning(
            "%s: claimed while ComfyUI does not answer; it waits up to %g s for it "
            "(COMFYUI_READY_WAIT) before it starts",
            name,
            self.ready_wait,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_wait
        while not self.draining:
            if self._ready():
                log.info("%s: ComfyUI answers; starting", name)
                return None
            remaining = deadline - loop.time()
            if remaining <= 0:
                return (
                    f"not started: ComfyUI did not answer within COMFYUI_READY_WAIT "
                    f"({self.ready_wait:g} s) while this task was ready to start; reported as "
                    "a retryable failure (nothing of it reached ComfyUI)"
                )
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()
        return DRAINING


def _give_back(acquiring: asyncio.Task[Any], slots: asyncio.Semaphore) -> None:
    """Abandon a slot being acquired: one it got anyway (already, or in the turn before its
    cancellation lands) goes back."""

    def release_if_taken(done: asyncio.Task[Any]) -> None:
        if not done.cancelled() and done.exception() is None:
            slots.release()

    acquiring.add_done_callback(release_if_taken)
    acquiring.cancel()
