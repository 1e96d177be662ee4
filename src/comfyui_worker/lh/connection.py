"""One poll stream to one LittleHorse host, and the tasks claimed through it.

`SupervisedConnection` is the SDK's `LHConnection` with the gaps that make a worker deaf or
lossy closed (see README, *Surviving LittleHorse restarts*):

- the SDK's poll loop ends silently when the server ends the stream with status OK and keeps
  `running = True`, so nothing ever replaces it; here every end of the stream, OK or error,
  is reported to the supervisor at once (`on_end`) with its reason;
- the SDK shares one cached gRPC channel per host, which after an outage sits in gRPC's
  reconnect back-off (up to minutes); each connection here opens its own channel, so a new
  connection dials at once;
- the SDK's task executions and report retries are bare `create_task`s that nothing tracks;
  here each claimed task is in `InFlight` from its claim until its report is acknowledged
  or given up (logged with the task run id), so drain knows what is still running;
- the SDK starts every task it receives as soon as a slot frees; here a task starts only when
  the process's `Admission` lets it (not while draining, not before ComfyUI answers), and one
  that may not start is reported as a retryable failure without running;
- a report that fails is retried on the newest channel to that host, not only on the old one;
- what a report carries as text (the SDK's traceback of a failure, an exception's message and
  content, the log output) is redacted first, as a log line would be.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc
from littlehorse.config import LHConfig
from littlehorse.model import (
    LittleHorseStub,
    PollTaskRequest,
    PollTaskResponse,
    ReportTaskRun,
    ScheduledTask,
    TaskStatus,
)
from littlehorse.worker import LHConnection, LHTask

from ..retrying import Backoff, retry
from .admission import DRAINING, Admission
from .claims import Claim, InFlight, Phase, describe_run
from .errors import not_started_report, redact_report

log = logging.getLogger(__name__)

# 20 tries with pauses of 0.5 s doubling to 5 s: about 80 s, a LittleHorse restart or two.
REPORT_ATTEMPTS = 20
REPORT_RETRY_FIRST_DELAY = 0.5
REPORT_RETRY_MAX_DELAY = 5.0
REPORT_RPC_TIMEOUT = 10.0
# The SDK pauses 5 s after an empty poll reply (the server answers empty after a restart).
EMPTY_REPLY_PAUSE = 0.5
# A stopped stream the server does not end by itself is cancelled after this long.
STOP_TIMEOUT = 5.0


def rpc_error_text(exc: BaseException) -> str:
    """`CODE: details` for a gRPC error, the repr of anything else."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return repr(exc)


class SupervisedConnection(LHConnection):  # type: ignore[misc]
    """An `LHConnection` that says when its stream ends and tracks what it claimed."""

    def __init__(
        self,
        server: str,
        config: LHConfig,
        task: LHTask,
        *,
        in_flight: InFlight,
        slots: asyncio.Semaphore,
        newest_stub: Callable[[], LittleHorseStub],
        on_end: Callable[[SupervisedConnection], None],
        admission: Admission | None = None,
    ) -> None:
        super().__init__(server, config, task)
        # Own channel (see module docstring); the SDK's cached one is never dialled.
        self._channel = config.establish_channel(server, async_channel=True)
        self._stub = LittleHorseStub(self._channel)
        # Shared by every connection to this host, so a replacement connection does not claim
        # a second full set of tasks while the previous one's are still running.
        self._schedule_task_semaphore = slots
        self._in_flight = in_flight
        self._admission = admission or Admission()
        self._newest_stub = newest_stub
        self._on_end = on_end
        self._stopped = False
        self._call: grpc.aio.StreamStreamCall[PollTaskRequest, PollTaskResponse] | None = None
        self.started_at = time.monotonic()
        self.ended = False
        self.end_reason: str | None = None
        self.claimed = 0

    @property
    def stub(self) -> LittleHorseStub:
        return self._stub

    @property
    def lifetime(self) -> float:
        return time.monotonic() - self.started_at

    async def start(self) -> None:
        # The SDK's start() sets `running` again: a connection stopped before its task took a
        # first step (the gate closed in the turn that opened it) would poll, unsupervised.
        if self._stopped:
            self.ended = True
            self.release_channel_if_idle()
            return
        await super().start()

    def stop(self) -> None:
        """Stop asking for work; tasks already claimed keep running and reporting."""
        if self._stopped:
            return
        self._stopped = True
        super().stop()
        # Half-closing lets the server end the stream; one that does not is cut.
        asyncio.get_running_loop().call_later(STOP_TIMEOUT, self._cancel_call)

    def _cancel_call(self) -> None:
        if self._call is not None and not self.ended:
            self._call.cancel()

    async def _ask_for_work(self) -> None:
        async def requests() -> AsyncIterator[PollTaskRequest]:
            while self.running:
                await self._ask_for_work_semaphore.acquire()
                if self.running:
                    yield PollTaskRequest(
                        client_id=self._config.task_worker_id,
                        task_worker_version=self._config.worker_version,
                        task_def_id=self._task.task_def.id,
                    )

        reason = "LittleHorse ended the poll stream (status OK)"
        try:
            self._call = self._stub.PollTask(requests())
            async for reply in self._call:
                if reply.HasField("result"):
                    self.claimed += 1
                    await self._schedule_task(reply.result)
                else:
                    await asyncio.sleep(EMPTY_REPLY_PAUSE)
                self._ask_for_work_semaphore.release()
        except grpc.aio.AioRpcError as exc:
            reason = f"poll stream failed: {rpc_error_text(exc)}"
        except Exception as exc:  # the SDK's own failures must not leave a deaf worker either
            log.exception("poll loop to %s failed", self.server)
            reason = f"poll loop failed: {exc!r}"
        finally:
            self.running = False
            self.ended = True
            self.end_reason = None if self._stopped else reason
            self.release_channel_if_idle()
            self._on_end(self)

    async def _schedule_task(self, task: ScheduledTask) -> None:
        # Tracked from the claim on: a drain hands back a claim still waiting for a slot.
        claim = Claim(task, self)
        self._in_flight.add(claim)
        try:
            slot = await self._admission.take_slot(self._schedule_task_semaphore)
        except BaseException:
            log.error("%s: no report sent (cancelled before it started)", claim.name)
            self._in_flight.remove(task.task_run_id, task.attempt_number)
            raise
        if slot:
            work = self._start(claim)
        else:
            claim.phase = Phase.REPORTING  # and it holds no slot
            work = self._not_started(claim, DRAINING)
        claim.execution = asyncio.create_task(work, name="lh-task-execution")
        claim.execution.add_done_callback(lambda done: self._execution_done(claim, done))

    async def _start(self, claim: Claim) -> None:
        """With a slot held: the SDK runs and reports the task once it may start."""
        reason = await self._admission.admit(claim.name)
        if reason is not None:
            claim.phase = Phase.REPORTING
            self._schedule_task_semaphore.release()
            await self._not_started(claim, reason)
            return
        claim.phase = Phase.RUNNING
        await self._execute_task(claim.task)

    async def _not_started(self, claim: Claim, reason: str) -> None:
        log.warning("%s: %s", claim.name, reason)
        await self._report_task(not_started_report(claim.task, reason), REPORT_ATTEMPTS)

    def _execution_done(self, claim: Claim, done: asyncio.Task[None]) -> None:
        # The SDK reports every outcome of the task function, cancellation included; only
        # its own failures (e.g. an unserialisable exception content) skip the report, as
        # does a cancellation before the task started (at exit).
        if done.cancelled() or done.exception() is not None:
            task = claim.task
            tracked = self._in_flight.get(task.task_run_id, task.attempt_number) is claim
            if tracked and claim.phase is not Phase.REPORTING:
                log.error(
                    "%s: no report sent (%s); LittleHorse retries it after its timeout",
                    claim.name,
                    "cancelled" if done.cancelled() else repr(done.exception()),
                )
                self._schedule_task_semaphore.release()
                self._in_flight.remove(task.task_run_id, task.attempt_number)

    async def _report_task(self, task_result: ReportTaskRun, retries_left: int) -> None:
        """Report, retrying with back-off on the newest channel; a report given up is logged
        with its task run id and status (the SDK's 15 x 2 s then a bare message)."""
        redact_report(task_result)
        run_id, attempt = task_result.task_run_id, task_result.attempt_number
        name = describe_run(run_id, attempt)
        status = TaskStatus.Name(task_result.status)
        claim = self._in_flight.get(run_id, attempt)
        if claim is not None:
            claim.phase = Phase.REPORTING
        backoff = Backoff(
            first=REPORT_RETRY_FIRST_DELAY, maximum=REPORT_RETRY_MAX_DELAY, attempts=REPORT_ATTEMPTS
        )

        async def report(n: int) -> None:
            # A retry goes out on the newest channel: the first may be the one that broke.
            stub = self._stub if n == 0 else self._newest_stub()
            try:
                await stub.ReportTask(task_result, timeout=REPORT_RPC_TIMEOUT)
            except Exception as exc:  # AioRpcError, or a channel closed under us
                log.warning(
                    "%s: report %s failed (try %d of %d): %s",
                    name,
                    status,
                    n + 1,
                    REPORT_ATTEMPTS,
                    rpc_error_text(exc),
                )
                raise
            if n > 0:
                log.info("%s: reported %s after %d tries", name, status, n + 1)

        try:
            await retry(report, backoff, retry_on=lambda _: True)
        except Exception as exc:
            log.error(
                "%s: report %s dropped after %d tries (%s); LittleHorse retries the task "
                "after its timeout",
                name,
                status,
                REPORT_ATTEMPTS,
                rpc_error_text(exc),
            )
        except asyncio.CancelledError:
            log.error("%s: report %s abandoned at exit", name, status)
            raise
        finally:
            self._in_flight.remove(run_id, attempt)

    def release_channel_if_idle(self) -> None:
        """Close this connection's channel once its stream ended and its claims reported."""
        if not self.ended or any(c.connection is self for c in self._in_flight.claims()):
            return
        channel, self._channel = self._channel, None
        if channel is not None:
            asyncio.get_running_loop().create_task(channel.close(None), name="lh-channel-close")
