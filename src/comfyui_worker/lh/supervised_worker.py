"""One TaskDef's worker: keep polling through LittleHorse restarts, claim only when it may.

`SupervisedWorker` is the SDK's `LHTaskWorker` with its heartbeat loop replaced (see README,
*Surviving restarts and shutdowns*, for the SDK behaviour each part compensates for):

- a poll stream that ends, with an error or with status OK, wakes the loop at once and is
  replaced as soon as LittleHorse answers `RegisterTaskWorker` again, instead of at the next
  60 s heartbeat (error) or never (OK);
- while LittleHorse does not answer, registration is retried with a capped back-off, each try
  on a fresh channel so gRPC's own reconnect back-off cannot hold it back, and in turn through
  the hosts LittleHorse last advertised: in a cluster reached at one server's address
  (LHC_API_HOST), that server down would otherwise keep the worker from ever polling the
  others again once their streams end;
- claiming is gated (`may_claim`, the process's `Supervisor` decides): while it is closed
  every poll stream is stopped, so no task is claimed, while tasks already claimed keep
  running and reporting;
- `start()` fetches the TaskDef off the event loop (the SDK blocks the loop for up to 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from littlehorse.config import LHConfig
from littlehorse.model import (
    LittleHorseStub,
    RegisterTaskWorkerRequest,
    RegisterTaskWorkerResponse,
    TaskDef,
    TaskDefId,
)
from littlehorse.worker import LHTask, LHTaskWorker

from ..retrying import Backoff
from .admission import Admission
from .claims import InFlight
from .connection import SupervisedConnection, rpc_error_text

log = logging.getLogger(__name__)

# Host list refresh and connection check while all is well (the SDK: 60 s).
HEARTBEAT_INTERVAL = 10.0
REGISTER_TIMEOUT = 5.0
# Back-off between registration tries while LittleHorse does not answer, and between the
# streams of a flapping connection: the cap bounds how long after LittleHorse is back the
# worker polls again; the jitter keeps a fleet of workers from dialling it in step.
REGISTER_BACKOFF = Backoff(first=0.25, maximum=2.0, jitter=0.3)
# A stream that ends sooner than this after it opened counts as flapping: back off.
FLAP_WINDOW = 5.0
# While LittleHorse is down, a warning at most this often.
QUIET_PERIOD = 30.0


class _Once(logging.Filter):
    """Lets each distinct message through once: the SDK warns "Establishing insecure
    channel" for every channel, and a fresh channel is opened on every try while
    LittleHorse is down."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self._seen:
            return False
        self._seen.add(message)
        return True


_sdk_config_log = logging.getLogger("LHConfig")
if not any(isinstance(f, _Once) for f in _sdk_config_log.filters):
    _sdk_config_log.addFilter(_Once())


class ClaimSlots:
    """How many tasks may run at once per LittleHorse host: LHW_NUM_WORKER_THREADS.

    The SDK gives every TaskDef's worker its own slots, so a process serving three TaskDefs
    would claim three times what its GPU can take, while other sidecars idle. One
    `ClaimSlots` shared by all of a process's workers keeps the bound per process.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._by_host: dict[str, asyncio.Semaphore] = {}

    def for_host(self, host: str) -> asyncio.Semaphore:
        return self._by_host.setdefault(host, asyncio.Semaphore(self.size))


class SupervisedWorker(LHTaskWorker):  # type: ignore[misc]
    """An `LHTaskWorker` that survives LittleHorse restarts and claims only when it may."""

    def __init__(
        self,
        callable: Callable[..., Any],
        task_def_name: str,
        config: LHConfig,
        *,
        in_flight: InFlight,
        may_claim: Callable[[], bool] = lambda: True,
        slots: ClaimSlots | None = None,
        admission: Admission | None = None,
    ) -> None:
        super().__init__(callable, task_def_name, config)
        self.in_flight = in_flight
        self._admission = admission or Admission()
        self.lh_reconnects = 0
        self._may_claim = may_claim
        self._connections: dict[str, SupervisedConnection] = {}
        self._slots = slots or ClaimSlots(config.num_worker_threads)
        self._wake = asyncio.Event()
        self._heartbeat_channel: grpc.aio.Channel | None = None
        self._flaps = 0
        # Where registration goes: the bootstrap host (LHC_API_HOST) first, then, while it
        # does not answer, each host LittleHorse advertised in its last answer, in turn.
        self._advertised: list[str] = []
        self._register_via: str | None = None  # None: the bootstrap host
        self._registered_via: str | None = None

    @property
    def polling(self) -> bool:
        """A poll stream to LittleHorse is open and asking for work. Read by the health
        server's thread: iterate a copy (taken atomically) of what the loop changes."""
        return any(c.running for c in tuple(self._connections.values()))

    @property
    def claiming(self) -> bool:
        return bool(self._may_claim())

    def wake(self) -> None:
        """Re-evaluate now (the gate changed, a stream ended)."""
        self._wake.set()

    def pause(self) -> None:
        """Close the poll streams now (the gate closed); claimed tasks run on and report."""
        self._stop_connections()
        self.wake()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the TaskDef, then supervise polling until `stop()`."""
        log.info("starting worker %r", self._task_def_name)
        stub = self._config.stub()
        reply: TaskDef = await asyncio.to_thread(
            stub.GetTaskDef, TaskDefId(name=self._task_def_name), timeout=30
        )
        self._task = LHTask(self._callable, reply)
        await self._heartbeat()

    def stop(self) -> None:
        """Stop claiming and end `start()`; claimed tasks keep running and reporting."""
        self._liveness_controller.stop()
        self._stop_connections()
        self.wake()

    async def _heartbeat(self) -> None:
        failures, down_since, last_warning = 0, 0.0, 0.0
        try:
            while self._liveness_controller.keep_worker_running:
                self._wake.clear()
                if not self.claiming:
                    self._stop_connections()
                    await self._nap(HEARTBEAT_INTERVAL)
                    continue
                if self._flaps:
                    await self._nap(REGISTER_BACKOFF.delay(self._flaps))
                    if not self.claiming:
                        continue
                try:
                    reply = await self._register()
                except Exception as exc:  # any failure to reach LittleHorse: retry
                    failures += 1
                    self._liveness_controller.notify_worker_failure()
                    now = time.monotonic()
                    if failures == 1:
                        down_since = now
                    if now - last_warning >= QUIET_PERIOD:
                        last_warning = now
                        log.warning(
                            "LittleHorse is not answering (%s); retrying every %.1f s at most",
                            rpc_error_text(exc),
                            REGISTER_BACKOFF.maximum,
                        )
                    await self._nap(REGISTER_BACKOFF.delay(failures))
                    continue
                if failures:
                    log.info(
                        "LittleHorse answers again after %.1f s; polling again",
                        time.monotonic() - down_since,
                    )
                    failures, last_warning = 0, 0.0
                self._liveness_controller.notify_success_call(reply)
                hosts = [f"{h.host}:{h.port}" for h in reply.your_hosts]
                if hosts:
                    self._advertised = hosts
                if self.claiming:
                    self._reconcile(hosts)
                await self._nap(HEARTBEAT_INTERVAL)
        finally:
            self._stop_connections()
            await self._close_heartbeat_channel()

    async def _nap(self, seconds: float) -> None:
        """Sleep `seconds`, or until woken."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _register(self) -> RegisterTaskWorkerResponse:
        if self._heartbeat_channel is None:
            self._heartbeat_channel = self._config.establish_channel(
                self._register_via, async_channel=True
            )
        request = RegisterTaskWorkerRequest(
            task_worker_id=self._config.task_worker_id, task_def_id=self._task.task_def.id
        )
        try:
            reply: RegisterTaskWorkerResponse = await LittleHorseStub(
                self._heartbeat_channel
            ).RegisterTaskWorker(request, timeout=REGISTER_TIMEOUT)
        except BaseException:
            # A fresh channel next time, to the next host: this one may sit in gRPC's
            # reconnect back-off, or be down for good.
            await self._close_heartbeat_channel()
            self._next_register_host()
            raise
        if self._register_via != self._registered_via:
            self._registered_via = self._register_via
            if self._register_via is not None:
                log.warning(
                    "LittleHorse at %s (LHC_API_HOST) does not answer; registered %r "
                    "through %s, a host it advertised",
                    self._config.bootstrap_server,
                    self._task_def_name,
                    self._register_via,
                )
        return reply

    def _next_register_host(self) -> None:
        """After a failed registration: the next of the bootstrap host and the advertised
        hosts (the bootstrap one may be among those)."""
        others = [h for h in self._advertised if h != self._config.bootstrap_server]
        turn: list[str | None] = [None, *others]
        position = turn.index(self._register_via) if self._register_via in turn else 0
        self._register_via = turn[(position + 1) % len(turn)]

    async def _close_heartbeat_channel(self) -> None:
        channel, self._heartbeat_channel = self._heartbeat_channel, None
        if channel is not None:
            await channel.close(None)

    # -- connections -------------------------------------------------------------------------

    def _reconcile(self, hosts: list[str]) -> None:
        """One open poll stream per host LittleHorse lists; replace the ones that ended."""
        for host, connection in list(self._connections.items()):
            if host not in hosts:
                log.info("LittleHorse no longer lists %s; closing its poll stream", host)
                connection.stop()
                del self._connections[host]
            elif connection.ended:
                del self._connections[host]
                if connection.end_reason is not None:
                    self.lh_reconnects += 1
                    quick = connection.lifetime < FLAP_WINDOW
                    self._flaps = self._flaps + 1 if quick else 0
        if self._connections and all(c.lifetime >= FLAP_WINDOW for c in self._connections.values()):
            self._flaps = 0
        for host in hosts:
            if host not in self._connections:
                self._open(host)

    def _open(self, host: str) -> None:
        connection = SupervisedConnection(
            host,
            self._config,
            self._task,
            in_flight=self.in_flight,
            slots=self._slots.for_host(host),
            newest_stub=lambda: self._newest_stub(host, connection),
            on_end=self._connection_ended,
            admission=self._admission,
        )
        self._connections[host] = connection
        asyncio.get_running_loop().create_task(connection.start(), name=f"lh-poll-{host}")
        log.info("polling %s for %r", host, self._task_def_name)

    def _newest_stub(self, host: str, fallback: SupervisedConnection) -> LittleHorseStub:
        """The stub of the newest connection to `host`: a report retried there is not stuck
        behind an old channel's reconnect back-off."""
        current = self._connections.get(host)
        return (current or fallback).stub

    def _connection_ended(self, connection: SupervisedConnection) -> None:
        if connection.end_reason is not None:
            log.warning(
                "poll stream to %s ended: %s; reconnecting",
                connection.server,
                connection.end_reason,
            )
            self.wake()

    def _stop_connections(self) -> None:
        for connection in self._connections.values():
            connection.stop()
        self._connections.clear()
