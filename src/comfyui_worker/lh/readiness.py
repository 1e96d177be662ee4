"""Whether this sidecar's ComfyUI can take work: the gate in front of every claim.

A worker that claims tasks while its ComfyUI is down fails each of them in seconds and burns
the WfSpec's retry budget, while a healthy sidecar could have run them. So the worker claims
nothing until ComfyUI answers, stops claiming when it stops answering, and resumes within a
second or so of it answering again. Each time ComfyUI comes to answer, the worker first checks
that COMFYUI_OUTPUT_DIR and COMFYUI_TEMP_DIR are ComfyUI's folders (`folders.check_folders`):
a wrong one stops `serve` with an error naming it, before any task is claimed. With
`COMFYUI_WARMUP_WORKFLOW`, that workflow runs next (at start and after each outage, since a
restarted ComfyUI has unloaded its models), so the first real task does not pay for loading
them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..exceptions import ComfyUIError, ComfyUIWorkerError
from ..execution import Executor
from ..folders import check_folders
from ..observability import metrics
from ..retrying import Backoff, retry
from ..workflow import load_workflow_file
from .errors import business_name

log = logging.getLogger(__name__)

# How often ComfyUI is asked while it answers, and while it does not: an outage is noticed
# within about UP_INTERVAL + HEALTH_TIMEOUT, a recovery within DOWN_INTERVAL.
UP_INTERVAL = 1.0
DOWN_INTERVAL = 0.5
HEALTH_TIMEOUT = 3.0
# No bound on the tries: a transient failure (5xx, out of memory) may pass, and nothing is
# claimed meanwhile.
WARMUP_BACKOFF = Backoff(first=1.0, maximum=30.0)
# While ComfyUI stays down, a reminder at most this often.
QUIET_PERIOD = 30.0


class ComfyUIReadiness:
    """Polls ComfyUI and runs the warmup; `ready` is the gate (an attribute: cheap to read)."""

    def __init__(self, executor: Executor, *, on_change: Callable[[], None] = lambda: None):
        self.ready = False
        self._seen_ready = False
        self.warmups = 0
        self.on_change = on_change
        self._executor = executor
        self._settings = executor.settings
        self._warmup: dict[str, Any] | None = None

    async def run(self) -> None:
        """Watch until cancelled."""
        if (path := self._settings.warmup_workflow) is not None:
            self._warmup = await asyncio.to_thread(
                load_workflow_file, path, max_bytes=self._settings.max_workflow_bytes
            )
        url = self._settings.base_url_str
        log.info("waiting for ComfyUI at %s before the first claim", url)
        down_since = time.monotonic()
        last_reminder = down_since
        while True:
            answers = await self._answers()
            if answers and not self.ready:
                await self._check_folders()
                if self._warmup is not None and not await self._warm_up():
                    continue  # ComfyUI went away during the warmup
                log.info(
                    "ComfyUI at %s answers (after %.1f s): claiming tasks",
                    url,
                    time.monotonic() - down_since,
                )
                self._set(True)
            elif not answers and self.ready:
                log.warning("ComfyUI at %s does not answer: claiming no tasks until it does", url)
                down_since = last_reminder = time.monotonic()
                self._set(False)
            elif not answers and time.monotonic() - last_reminder >= QUIET_PERIOD:
                last_reminder = time.monotonic()
                log.warning(
                    "ComfyUI at %s still does not answer after %.0f s; no tasks claimed",
                    url,
                    last_reminder - down_since,
                )
            await asyncio.sleep(UP_INTERVAL if self.ready else DOWN_INTERVAL)

    def _set(self, ready: bool) -> None:
        if ready and self._seen_ready:
            metrics.COMFYUI_RESTARTS.inc()  # answering again after not answering
        self._seen_ready = self._seen_ready or ready
        self.ready = ready
        self.on_change()

    async def _answers(self) -> bool:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                remaining = await self._executor.client.queue_remaining()
        except TimeoutError:
            return False
        if remaining is not None:
            metrics.COMFYUI_QUEUE.set(remaining)
        return remaining is not None

    async def _check_folders(self) -> None:
        """Raises ConfigurationError for a folder setting that is wrong; a ComfyUI that does
        not take the check's file leaves the settings unchecked (logged), not the worker
        stopped."""
        try:
            await check_folders(self._executor.client, self._executor.dirs)
        except ComfyUIError as exc:
            log.warning("could not check where ComfyUI's folders are mounted here: %s", exc)

    async def _warm_up(self) -> bool:
        """Run the warmup workflow until it succeeds, or fails for good (logged; claims then
        start anyway), retrying transient failures with back-off. False if ComfyUI stopped
        answering meanwhile."""
        warmup, path = self._warmup, self._settings.warmup_workflow
        assert warmup is not None

        async def run(n: int) -> bool:
            if n > 0 and not await self._answers():
                return False
            started = time.monotonic()
            log.info("running the warmup workflow %s", path)
            await self._executor.run(warmup)
            self.warmups += 1
            log.info("warmup done in %.1f s", time.monotonic() - started)
            return True

        def retrying(_: int, exc: Exception, delay: float) -> None:
            log.warning("warmup workflow %s failed: %s; retrying in %.0f s", path, exc, delay)

        try:
            return await retry(run, WARMUP_BACKOFF, retry_on=self._transient, on_retry=retrying)
        except ComfyUIWorkerError as exc:
            log.error(
                "warmup workflow %s (COMFYUI_WARMUP_WORKFLOW) cannot succeed: %s; "
                "claiming tasks without it",
                path,
                exc,
            )
            return True

    def _transient(self, exc: Exception) -> bool:
        return isinstance(exc, ComfyUIWorkerError) and not business_name(
            exc, retryable_execution_errors=self._settings.retryable_execution_errors
        )
