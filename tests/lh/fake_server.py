"""An in-process stand-in for the LittleHorse server, for tests only.

It implements the RPCs a Python task worker uses (PutTaskDef, GetTaskDef, RegisterTaskWorker,
PollTask, ReportTask; plus PutWfSpec, recorded for tests of WfSpec registration) on top of the
SDK's own generated `LittleHorseServicer`, so the real `LHTaskWorker` talks real gRPC to it.
Tests play the scheduler: `schedule_task()` queues a `ScheduledTask`, the worker polls it,
and `wait_report()` / `await_report()` hand back the `ReportTaskRun` the worker sent.

See tests/lh/README.md for what it does not model.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import grpc
from google.protobuf.empty_pb2 import Empty
from google.protobuf.timestamp_pb2 import Timestamp
from littlehorse.config import LHConfig
from littlehorse.model import (
    LHErrorType,
    LHHostInfo,
    NodeRunId,
    PollTaskRequest,
    PollTaskResponse,
    PutTaskDefRequest,
    PutWfSpecRequest,
    RegisterTaskWorkerRequest,
    RegisterTaskWorkerResponse,
    ReportTaskRun,
    ScheduledTask,
    TaskDef,
    TaskDefId,
    TaskNodeReference,
    TaskRunId,
    TaskRunSource,
    TaskStatus,
    VariableType,
    VariableValue,
    VarNameAndVal,
    WfRunId,
    WfSpec,
    WfSpecId,
)
from littlehorse.model.service_pb2_grpc import (
    LittleHorseServicer,
    add_LittleHorseServicer_to_server,
)
from littlehorse.utils import extract_value, to_variable_value
from littlehorse.worker import LHTaskWorker

__all__ = [
    "FakeLittleHorse",
    "Handout",
    "RefusedReport",
    "StreamEnd",
    "TaskReport",
    "decode_report",
    "running_worker",
    "stop_worker",
    "task_run_key",
]

# The server's rule for metadata names (TaskDef, WfSpec, exception names).
_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$")

# Which VariableValue oneof a TaskDef input of each primitive type must carry.
_ONEOF_FOR_TYPE: dict[int, str] = {
    VariableType.JSON_OBJ: "json_obj",
    VariableType.JSON_ARR: "json_arr",
    VariableType.DOUBLE: "double",
    VariableType.BOOL: "bool",
    VariableType.STR: "str",
    VariableType.INT: "int",
    VariableType.BYTES: "bytes",
}

# (tenant, the WfRun id with its parents', task_guid): what makes a TaskRun unique.
TaskRunKey = tuple[str, tuple[str, ...], str]
DEFAULT_TENANT = "default"
TENANT_HEADER = "tenantid"

# The real server keeps a TaskRun in one record of at most this many bytes (Kafka's
# max.request.size as it sets it): its inputs and every attempt's output, log and error.
RECORD_LIMIT = 1_047_000
# What the record holds besides those (ids, timestamps, worker ids) plus what Kafka adds: about
# 400 + 300 bytes measured on LittleHorse 1.2.1.
RECORD_OVERHEAD = 700
# A report over RECORD_LIMIT is refused so, before anything is recorded.
REPORT_TOO_LARGE = "Failed recording task claim to Kafka"


@dataclass(frozen=True)
class RefusedReport:
    """A report the real server would not store: `size` is the report's, or the record's it
    would have made; `answered` the status the worker got (OK: the server drops it silently)."""

    tenant: str
    report: ReportTaskRun
    size: int
    answered: str


# Outcomes of waiting on a poll other than a response.
_STOPPING = object()
_CLOSED = object()
_ENDED_OK = object()


class StreamEnd(StrEnum):
    """How `restart()` ends the open PollTask streams."""

    UNAVAILABLE = "unavailable"
    """The server dies: streams fail with UNAVAILABLE, the port refuses for the downtime."""
    OK = "ok"
    """The server (or a proxy in front of it) closes every stream with status OK."""


@dataclass(frozen=True)
class Handout:
    """One attempt handed to a worker: when (monotonic), to which client id, which attempt."""

    at: float
    client_id: str | None
    key: TaskRunKey
    attempt_number: int


def task_run_key(task_run_id: TaskRunId, tenant: str = DEFAULT_TENANT) -> TaskRunKey:
    """A hashable identity for a TaskRun (protobuf messages are not hashable). The TaskRunId
    alone is unique only inside its tenant, and its WfRun id only under its parent WfRun."""
    path = [task_run_id.wf_run_id.id]
    wf_run_id = task_run_id.wf_run_id
    while wf_run_id.HasField("parent_wf_run_id"):
        wf_run_id = wf_run_id.parent_wf_run_id
        path.append(wf_run_id.id)
    return (tenant, tuple(reversed(path)), task_run_id.task_guid)


def _attempt_size(report: ReportTaskRun) -> int:
    """What one attempt's report adds to the TaskRun's record."""
    return sum(
        getattr(report, name).ByteSize()
        for name in ("output", "log_output", "error", "exception")
        if report.HasField(name)
    )


def _tenant(context: grpc.ServicerContext) -> str:
    """The tenant a request is for: the SDK sends LHC_TENANT_ID as `tenantid` metadata."""
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_HEADER and value:
            return str(value)
    return DEFAULT_TENANT


def _wf_run_id(value: str | WfRunId) -> WfRunId:
    if isinstance(value, WfRunId):
        copy = WfRunId()
        copy.CopyFrom(value)
        return copy
    return WfRunId(id=value)


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


@dataclass(frozen=True)
class TaskReport:
    """A `ReportTaskRun` decoded into plain Python values."""

    status: str
    """`TaskStatus` name: TASK_SUCCESS, TASK_EXCEPTION, TASK_FAILED, TASK_OUTPUT_SERDE_ERROR."""
    attempt_number: int
    task_run_id: TaskRunId
    output: Any
    exception_name: str | None
    exception_message: str | None
    exception_content: Any
    error_type: str | None
    """`LHErrorType` name; the SDK sends TASK_ERROR for an uncaught Python exception."""
    error_message: str | None
    log_output: str | None

    @property
    def succeeded(self) -> bool:
        return self.status == "TASK_SUCCESS"


def decode_report(report: ReportTaskRun) -> TaskReport:
    """Turn the worker's `ReportTaskRun` into a `TaskReport` using the SDK's own decoding."""
    has_exception = report.HasField("exception")
    has_error = report.HasField("error")
    return TaskReport(
        status=TaskStatus.Name(report.status),
        attempt_number=report.attempt_number,
        task_run_id=report.task_run_id,
        output=extract_value(report.output) if report.HasField("output") else None,
        exception_name=report.exception.name if has_exception else None,
        exception_message=report.exception.message if has_exception else None,
        exception_content=(
            extract_value(report.exception.content)
            if has_exception and report.exception.HasField("content")
            else None
        ),
        error_type=LHErrorType.Name(report.error.type) if has_error else None,
        error_message=report.error.message if has_error else None,
        log_output=(extract_value(report.log_output) if report.HasField("log_output") else None),
    )


@dataclass
class _PollStream:
    """Server-side state of one open PollTask stream."""

    pending: collections.deque[tuple[PollTaskRequest, float]]
    # Tasks claimed for this stream's polls while handouts are held, not yet sent.
    claimed: collections.deque[PollTaskResponse] = field(default_factory=collections.deque)
    task_def_name: str | None = None
    client_id: str | None = None
    closed: bool = False
    generation: int = 0
    tenant: str = DEFAULT_TENANT


class _Servicer(LittleHorseServicer):  # type: ignore[misc]
    """Routes the generated servicer's methods to the FakeLittleHorse that owns it.

    Every RPC not overridden here answers UNIMPLEMENTED, as the generated base class does.
    """

    def __init__(self, fake: FakeLittleHorse) -> None:
        self._fake = fake

    def PutTaskDef(self, request: PutTaskDefRequest, context: grpc.ServicerContext) -> TaskDef:
        return self._fake._put_task_def(request, context)

    def GetTaskDef(self, request: TaskDefId, context: grpc.ServicerContext) -> TaskDef:
        return self._fake._get_task_def(request, context)

    def RegisterTaskWorker(
        self, request: RegisterTaskWorkerRequest, context: grpc.ServicerContext
    ) -> RegisterTaskWorkerResponse:
        return self._fake._register_task_worker(request)

    def PollTask(
        self, request_iterator: Iterator[PollTaskRequest], context: grpc.ServicerContext
    ) -> Iterator[PollTaskResponse]:
        return self._fake._poll_task(request_iterator, context)

    def ReportTask(self, request: ReportTaskRun, context: grpc.ServicerContext) -> Empty:
        return self._fake._report_task(request, _tenant(context), context)

    def PutWfSpec(self, request: PutWfSpecRequest, context: grpc.ServicerContext) -> WfSpec:
        return self._fake._put_wf_spec(request, context)


class FakeLittleHorse:
    """A LittleHorse server double on 127.0.0.1 with an OS-assigned port.

    Thread-safe: gRPC handlers run on the server's thread pool while tests call in from the
    event loop thread. Blocking waits (`wait_report`, `wait_for_poller`) must not be called
    from the event loop a worker runs on; use the `await_*` variants there.
    """

    def __init__(
        self,
        *,
        poll_hold_seconds: float | None = None,
        max_rpc_threads: int = 32,
    ) -> None:
        """
        Args:
            poll_hold_seconds: how long a poll waits for work before an empty reply. None (the
                default) holds it until work arrives or the server stops, as the real server
                does; the SDK sleeps 5 s after an empty reply, so short holds slow tests down.
                Set it only to exercise the worker's empty-reply path.
            max_rpc_threads: size of the gRPC thread pool; each open PollTask stream occupies
                one thread for its whole life.
        """
        self._poll_hold_seconds = poll_hold_seconds
        self._commit_delay = 0.0  # see delay_commits()
        self._readable_at: dict[str, float] = {}
        self._max_rpc_threads = max_rpc_threads
        self._cond = threading.Condition(threading.RLock())
        self._server: grpc.Server | None = None
        self._port: int | None = None
        self._stopping = False

        self._task_defs: dict[str, TaskDef] = {}
        self._wf_specs: list[PutWfSpecRequest] = []
        # By (tenant, TaskDef name): a worker polls only its own tenant's tasks.
        self._queues: dict[tuple[str, str], collections.deque[ScheduledTask]] = (
            collections.defaultdict(collections.deque)
        )
        self._scheduled: dict[TaskRunKey, list[ScheduledTask]] = {}
        self._reports: list[tuple[str, ReportTaskRun]] = []
        self._refused: list[RefusedReport] = []
        self._advertised: list[str] = []
        self._report_times: dict[tuple[TaskRunKey, int], float] = {}
        self._registrations: list[RegisterTaskWorkerRequest] = []
        self._streams: list[_PollStream] = []
        self._in_flight: set[tuple[TaskRunKey, int]] = set()
        self._max_in_flight = 0
        self._handed_out = 0
        self._empty_replies = 0
        self._put_task_def_refusal: grpc.StatusCode | None = None
        # A new TaskDef is NOT_FOUND for this many reads after its put; by name, those left.
        self._handouts: list[Handout] = []
        self._timed_out: set[tuple[TaskRunKey, int]] = set()
        self._holding_handouts = False
        # Streams opened before the current generation are ended with status OK.
        self._generation = 0
        self._restarts = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeLittleHorse:
        """Start serving. After `stop()`, starts again on the same port with state kept."""
        with self._cond:
            if self._server is not None:
                raise RuntimeError("FakeLittleHorse is already running")
            self._stopping = False
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._max_rpc_threads))
        add_LittleHorseServicer_to_server(_Servicer(self), server)
        port = server.add_insecure_port(f"127.0.0.1:{self._port or 0}")
        if port == 0:
            raise RuntimeError(f"could not bind 127.0.0.1:{self._port or 0}")
        server.start()
        self._port = port
        self._server = server
        return self

    def stop(self, *, timeout: float = 2.0) -> None:
        """Stop serving: open PollTask streams end with UNAVAILABLE, as when a server dies."""
        with self._cond:
            server, self._server = self._server, None
            if server is None:
                return
            self._stopping = True
            self._cond.notify_all()
            # Let poll handlers abort their own streams (abort() works only from the handler's
            # thread) so workers see UNAVAILABLE rather than a bare cancellation.
            deadline = time.monotonic() + timeout
            while any(not s.closed for s in self._streams):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        server.stop(grace=0).wait(timeout)

    def restart(
        self, *, end_streams: StreamEnd = StreamEnd.UNAVAILABLE, downtime: float = 0.0
    ) -> None:
        """End every open poll stream, then answer again on the same port, state kept.

        UNAVAILABLE: `stop()`, `downtime` seconds refusing connections, `start()`. OK: every
        stream is closed with status OK while the server stays up (as a proxy may), then, with
        a `downtime`, the server also goes away for that long. Blocking; from async code use
        `await asyncio.to_thread(fake.restart, ...)`.
        """
        if end_streams is StreamEnd.OK:
            with self._cond:
                self._generation += 1
                self._cond.notify_all()
                self._cond.wait_for(
                    lambda: all(s.generation == self._generation for s in self._streams), 2.0
                )
            if downtime > 0:
                self.stop()
        else:
            self.stop()
        if downtime > 0:
            time.sleep(downtime)
        if self._server is None:
            self.start()
        with self._cond:
            self._restarts += 1

    @property
    def restarts(self) -> int:
        with self._cond:
            return self._restarts

    def hold_handouts(self) -> None:
        """From now on a task matched to a poll is claimed (it counts in `handouts` and
        `in_flight`) but not sent until `release_handouts()`. The real server commits a
        claim before it sends the task, so a worker can half-close its stream in between
        and still receive the task: this lets tests put a worker in that window."""
        with self._cond:
            self._holding_handouts = True

    def release_handouts(self) -> None:
        """Send the tasks held by `hold_handouts()`, each on the stream it was claimed for,
        half-closed or not; later handouts go out at once again."""
        with self._cond:
            self._holding_handouts = False
            self._cond.notify_all()

    def time_out(self, client_id: str | None = None) -> list[tuple[TaskRunId, int]]:
        """Time out every attempt handed out and not reported (to `client_id` only, if given)
        and queue its next attempt, as the server does when a task's timeout passes (e.g.
        its worker was killed). Returns (TaskRunId, new attempt number) per redelivery. A
        late report of a timed-out attempt is still recorded in `reports`.
        """
        with self._cond:
            latest = {(h.key, h.attempt_number): h for h in self._handouts}
            expired = [
                (key, attempt)
                for key, attempt in self._in_flight
                if client_id is None or latest[(key, attempt)].client_id == client_id
            ]
            redelivered = []
            for key, attempt in sorted(expired):
                self._in_flight.discard((key, attempt))
                self._timed_out.add((key, attempt))
                run_id = self._scheduled[key][-1].task_run_id
                redelivered.append((run_id, self.retry_task(run_id, tenant=key[0])))
            return redelivered

    @property
    def handouts(self) -> list[Handout]:
        """Every attempt handed to a worker, in order."""
        with self._cond:
            return list(self._handouts)

    def timed_out(
        self, task_run_id: TaskRunId, attempt_number: int, *, tenant: str = DEFAULT_TENANT
    ) -> bool:
        with self._cond:
            return (task_run_key(task_run_id, tenant), attempt_number) in self._timed_out

    def __enter__(self) -> FakeLittleHorse:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeLittleHorse has not been started")
        return self._port

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def config(
        self,
        *,
        num_worker_threads: int = 8,
        extra: Mapping[str, str | int] | None = None,
    ) -> LHConfig:
        """An `LHConfig` for this server, independent of the process environment.

        `LHConfig` always layers LHC_*/LHW_* environment variables over anything passed to
        `load()`, so a shell pointing at a real cluster would redirect tests there; the
        settings are therefore written straight into the config's table.
        """
        settings: dict[str, str] = {
            "LHC_API_HOST": self.host,
            "LHC_API_PORT": str(self.port),
            "LHC_API_PROTOCOL": "PLAINTEXT",
            "LHW_NUM_WORKER_THREADS": str(num_worker_threads),
        }
        settings.update({key.upper(): str(value) for key, value in (extra or {}).items()})
        config = LHConfig()
        config._configs = settings
        return config

    def advertise(self, addresses: list[str] | None) -> None:
        """List these `host:port`s in RegisterTaskWorker instead of this server alone (None:
        itself again), as each server of a real cluster lists every server."""
        with self._cond:
            self._advertised = list(addresses or [])

    def refuse_put_task_def(
        self, code: grpc.StatusCode | None = grpc.StatusCode.PERMISSION_DENIED
    ) -> None:
        """Answer every PutTaskDef with `code` (None: accept again), as a server does for
        credentials that may run tasks but not write metadata. GetTaskDef still answers."""
        with self._cond:
            self._put_task_def_refusal = code

    def delay_commits(self, seconds: float) -> None:
        """Each TaskDef put from now on answers NOT_FOUND to GetTaskDef for `seconds`, as
        the real server does until it has committed it (it answers the put first: 25-60 ms
        here, longer under load)."""
        with self._cond:
            self._commit_delay = seconds

    # ------------------------------------------------------------------ scheduling

    def schedule_task(
        self,
        task_def_name: str,
        variables: Mapping[str, Any],
        *,
        wf_run_id: str | WfRunId | None = None,
        parent_wf_run_id: str | WfRunId | None = None,
        thread_run_number: int = 0,
        position: int = 1,
        tenant: str = DEFAULT_TENANT,
        attempt_number: int = 0,
    ) -> TaskRunId:
        """Queue a TaskRun for a worker of `tenant` polling `task_def_name`; returns its
        TaskRunId.

        As on the real server, the TaskRun's `task_guid` is `"<thread>-<position>"` of its
        NodeRun (`"0-1"` for the first task of every WfRun), so it repeats across WfRuns; the
        WfRun id is random unless given, and a child WfRun names its parent. Values are
        converted with `littlehorse.to_variable_value` (pass a `VariableValue` to send
        something exact). If the TaskDef is registered, the variables are put in its input
        order and their types checked, as the server does before scheduling.
        """
        with self._cond:
            task_def = self._task_defs.get(task_def_name)
        ordered = self._order_variables(task_def, variables)
        wf_run = _wf_run_id(wf_run_id or uuid.uuid4().hex)
        if parent_wf_run_id is not None:
            wf_run.parent_wf_run_id.CopyFrom(_wf_run_id(parent_wf_run_id))
        run_id = TaskRunId(wf_run_id=wf_run, task_guid=f"{thread_run_number}-{position}")
        task = ScheduledTask(
            task_run_id=run_id,
            task_def_id=TaskDefId(name=task_def_name),
            attempt_number=attempt_number,
            variables=ordered,
            created_at=_now(),
            source=TaskRunSource(
                task_node=TaskNodeReference(
                    node_run_id=NodeRunId(
                        wf_run_id=run_id.wf_run_id,
                        thread_run_number=thread_run_number,
                        position=position,
                    )
                )
            ),
        )
        self._enqueue(task, tenant)
        return run_id

    def retry_task(self, task_run_id: TaskRunId, *, tenant: str = DEFAULT_TENANT) -> int:
        """Schedule the next attempt of an existing TaskRun; returns its attempt number.

        Like the server's retry: same TaskRunId (hence same idempotency key), same inputs,
        attempt_number one above the highest scheduled so far.
        """
        key = task_run_key(task_run_id, tenant)
        with self._cond:
            attempts = self._scheduled.get(key)
            if not attempts:
                raise KeyError(f"no TaskRun {key} was scheduled")
            retry = ScheduledTask()
            retry.CopyFrom(attempts[-1])
            retry.attempt_number = max(a.attempt_number for a in attempts) + 1
            retry.created_at.CopyFrom(_now())
            self._enqueue(retry, tenant)
            return retry.attempt_number

    def _order_variables(
        self, task_def: TaskDef | None, variables: Mapping[str, Any]
    ) -> list[VarNameAndVal]:
        values = {
            name: value if isinstance(value, VariableValue) else to_variable_value(value)
            for name, value in variables.items()
        }
        if task_def is None:
            return [VarNameAndVal(var_name=name, value=value) for name, value in values.items()]
        expected = [var.name for var in task_def.input_vars]
        if sorted(expected) != sorted(values):
            raise ValueError(f"TaskDef {task_def.id.name!r} takes {expected}, got {sorted(values)}")
        ordered = []
        for var in task_def.input_vars:
            value = values[var.name]
            oneof = value.WhichOneof("value")
            wanted = _ONEOF_FOR_TYPE.get(var.type_def.primitive_type)
            raw = variables[var.name]
            if not isinstance(raw, VariableValue) and oneof is not None and oneof != wanted:
                raise ValueError(
                    f"{task_def.id.name}.{var.name} is "
                    f"{VariableType.Name(var.type_def.primitive_type)}, got {oneof}"
                )
            ordered.append(
                VarNameAndVal(var_name=var.name, value=value, masked=var.type_def.masked)
            )
        return ordered

    def _enqueue(self, task: ScheduledTask, tenant: str) -> None:
        with self._cond:
            stored = ScheduledTask()
            stored.CopyFrom(task)
            key = task_run_key(task.task_run_id, tenant)
            if key in self._scheduled and task.attempt_number == 0:
                raise ValueError(f"TaskRun {key} exists already: pass another wf_run_id")
            self._scheduled.setdefault(key, []).append(stored)
            self._queues[(tenant, task.task_def_id.name)].append(task)
            self._cond.notify_all()

    # ------------------------------------------------------------------ observing

    def wait_report(
        self,
        task_run_id: TaskRunId,
        *,
        attempt_number: int | None = None,
        timeout: float = 5.0,
        tenant: str = DEFAULT_TENANT,
    ) -> ReportTaskRun:
        """Block until the worker reports `attempt_number` of the TaskRun (default: the latest
        attempt scheduled) and return the first such report. Raises TimeoutError.
        """
        key = task_run_key(task_run_id, tenant)
        deadline = time.monotonic() + timeout
        with self._cond:
            if attempt_number is None:
                attempts = self._scheduled.get(key)
                if not attempts:
                    raise KeyError(f"no TaskRun {key} was scheduled")
                attempt_number = max(a.attempt_number for a in attempts)
            while True:
                for reporter, report in self._reports:
                    if (
                        task_run_key(report.task_run_id, reporter) == key
                        and report.attempt_number == attempt_number
                    ):
                        return report
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"no report for TaskRun {key} attempt {attempt_number} within {timeout} s"
                    )
                self._cond.wait(remaining)

    async def await_report(
        self,
        task_run_id: TaskRunId,
        *,
        attempt_number: int | None = None,
        # The wait happens on a thread blocked on a threading.Condition, which asyncio.timeout
        # could not interrupt; the deadline has to travel with it.
        timeout: float = 5.0,  # noqa: ASYNC109
        tenant: str = DEFAULT_TENANT,
    ) -> ReportTaskRun:
        """`wait_report` for code running on the worker's event loop."""
        return await asyncio.to_thread(
            self.wait_report,
            task_run_id,
            attempt_number=attempt_number,
            timeout=timeout,
            tenant=tenant,
        )

    def reported_at(
        self, task_run_id: TaskRunId, attempt_number: int = 0, *, tenant: str = DEFAULT_TENANT
    ) -> float | None:
        """Wall-clock time (`time.time()`) the first report of that attempt arrived, if any:
        the end of a dispatch-to-report measurement, taken on the server's own thread."""
        with self._cond:
            return self._report_times.get((task_run_key(task_run_id, tenant), attempt_number))

    def pollers(self, task_def_name: str) -> int:
        """Open PollTask streams that have asked for `task_def_name`."""
        with self._cond:
            return sum(
                1 for s in self._streams if not s.closed and s.task_def_name == task_def_name
            )

    def wait_for_poller(self, task_def_name: str, *, timeout: float = 5.0) -> None:
        """Block until some worker has an open poll for `task_def_name`."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.pollers(task_def_name) > 0, timeout):
                raise TimeoutError(f"no worker polled {task_def_name!r} within {timeout} s")

    @property
    def task_defs(self) -> dict[str, TaskDef]:
        with self._cond:
            return dict(self._task_defs)

    @property
    def wf_specs(self) -> list[PutWfSpecRequest]:
        """Every PutWfSpec request received, in order."""
        with self._cond:
            return list(self._wf_specs)

    @property
    def reports(self) -> list[ReportTaskRun]:
        """Every ReportTaskRun received, in arrival order (duplicates kept)."""
        with self._cond:
            return [report for _, report in self._reports]

    @property
    def refused_reports(self) -> list[RefusedReport]:
        """Reports the real server would not have stored (too large: the report itself, or
        the TaskRun record it would have made); they are not in `reports`."""
        with self._cond:
            return list(self._refused)

    @property
    def registrations(self) -> list[RegisterTaskWorkerRequest]:
        """Every RegisterTaskWorker (heartbeat) received."""
        with self._cond:
            return list(self._registrations)

    def queued(self, task_def_name: str, *, tenant: str = DEFAULT_TENANT) -> int:
        """Scheduled tasks not yet handed to a worker."""
        with self._cond:
            return len(self._queues[(tenant, task_def_name)])

    @property
    def in_flight(self) -> int:
        """Attempts handed to a worker and not yet reported."""
        with self._cond:
            return len(self._in_flight)

    @property
    def max_in_flight(self) -> int:
        """Highest `in_flight` seen. With LHW_NUM_WORKER_THREADS=N the SDK claims up to N+1:
        it keeps one poll outstanding while all N slots are busy, and the claimed task waits.
        """
        with self._cond:
            return self._max_in_flight

    def reset_max_in_flight(self) -> None:
        """Start measuring `max_in_flight` afresh (from the current `in_flight`)."""
        with self._cond:
            self._max_in_flight = len(self._in_flight)

    @property
    def handed_out(self) -> int:
        """Total attempts handed to workers."""
        with self._cond:
            return self._handed_out

    @property
    def empty_replies(self) -> int:
        """Polls answered with no task (only with `poll_hold_seconds` set)."""
        with self._cond:
            return self._empty_replies

    # ------------------------------------------------------------------ RPC handlers

    def _put_task_def(self, request: PutTaskDefRequest, context: grpc.ServicerContext) -> TaskDef:
        if not _NAME_RE.match(request.name):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"Invalid TaskDef name {request.name!r}"
            )
        with self._cond:
            refusal = self._put_task_def_refusal
        if refusal is not None:
            context.abort(refusal, f"not allowed to put TaskDef {request.name}")
        with self._cond:
            existing = self._task_defs.get(request.name)
            if existing is not None:
                same = (
                    list(existing.input_vars) == list(request.input_vars)
                    and existing.return_type == request.return_type
                    and existing.description == request.description
                )
                if same:
                    return existing
                # TaskDefs are immutable on the real server too.
                context.abort(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"TaskDef {request.name} already exists and is immutable.",
                )
            task_def = TaskDef(
                id=TaskDefId(name=request.name),
                input_vars=request.input_vars,
                return_type=request.return_type if request.HasField("return_type") else None,
                description=request.description,
                created_at=_now(),
            )
            self._task_defs[request.name] = task_def
            self._readable_at[request.name] = time.monotonic() + self._commit_delay
            return task_def

    def _get_task_def(self, request: TaskDefId, context: grpc.ServicerContext) -> TaskDef:
        with self._cond:
            task_def = self._task_defs.get(request.name)
            committed = time.monotonic() >= self._readable_at.get(request.name, 0.0)
        if task_def is None or not committed:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Couldn't find TaskDef {request.name}")
        return task_def

    def _register_task_worker(
        self, request: RegisterTaskWorkerRequest
    ) -> RegisterTaskWorkerResponse:
        with self._cond:
            self._registrations.append(request)
            advertised = self._advertised or [self.address]
        # The worker polls the hosts listed here, not LHC_API_HOST: an empty list would leave
        # it registered but idle.
        hosts = [
            LHHostInfo(host=h.rsplit(":", 1)[0], port=int(h.rsplit(":", 1)[1])) for h in advertised
        ]
        return RegisterTaskWorkerResponse(your_hosts=hosts, is_cluster_healthy=True)

    def _report_task(
        self, request: ReportTaskRun, tenant: str, context: grpc.ServicerContext
    ) -> Empty:
        key = task_run_key(request.task_run_id, tenant)
        if request.ByteSize() > RECORD_LIMIT:
            # The real server cannot write the report's command to Kafka.
            with self._cond:
                self._refused.append(
                    RefusedReport(tenant, request, request.ByteSize(), "UNAVAILABLE")
                )
            context.abort(grpc.StatusCode.UNAVAILABLE, REPORT_TOO_LARGE)
        with self._cond:
            size = self._record_size(key) + _attempt_size(request)
            late = (key, request.attempt_number) in self._timed_out
            if size > RECORD_LIMIT and not late:
                # The real server answers OK and drops the update (a few hundred bytes under
                # the limit its processing stops instead); the attempt then times out.
                self._refused.append(RefusedReport(tenant, request, size, "OK"))
                self._cond.notify_all()
                return Empty()
            self._reports.append((tenant, request))
            self._report_times.setdefault((key, request.attempt_number), time.time())
            self._in_flight.discard((key, request.attempt_number))
            self._cond.notify_all()
        return Empty()

    def _record_size(self, key: TaskRunKey) -> int:
        """Bytes of the TaskRun's record on the real server: its inputs and what the reports
        it took so far keep (a late report of a timed-out attempt is ignored there)."""
        scheduled = self._scheduled.get(key) or []
        inputs = sum(v.ByteSize() for v in scheduled[-1].variables) if scheduled else 0
        kept = sum(
            _attempt_size(report)
            for reporter, report in self._reports
            if task_run_key(report.task_run_id, reporter) == key
            and (key, report.attempt_number) not in self._timed_out
        )
        return RECORD_OVERHEAD + inputs + kept

    def _put_wf_spec(self, request: PutWfSpecRequest, context: grpc.ServicerContext) -> WfSpec:
        if not _NAME_RE.match(request.name):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid WfSpec name {request.name!r}")
        with self._cond:
            revision = sum(1 for spec in self._wf_specs if spec.name == request.name)
            self._wf_specs.append(request)
        return WfSpec(
            id=WfSpecId(name=request.name, major_version=0, revision=revision),
            created_at=_now(),
            thread_specs=request.thread_specs,
            entrypoint_thread_name=request.entrypoint_thread_name,
        )

    def _poll_task(
        self, request_iterator: Iterator[PollTaskRequest], context: grpc.ServicerContext
    ) -> Iterator[PollTaskResponse]:
        with self._cond:
            stream = _PollStream(
                pending=collections.deque(), generation=self._generation, tenant=_tenant(context)
            )
            self._streams.append(stream)

        def read_requests() -> None:
            # Reading happens on its own thread so the handler can still wake up (new task,
            # stop()) while the client has no poll outstanding.
            try:
                # The iterator raises once the RPC is cancelled or the server stops.
                with contextlib.suppress(Exception):
                    for request in request_iterator:
                        with self._cond:
                            stream.pending.append((request, time.monotonic()))
                            stream.task_def_name = request.task_def_id.name
                            stream.client_id = request.client_id
                            self._cond.notify_all()
            finally:
                with self._cond:
                    stream.closed = True
                    self._cond.notify_all()

        threading.Thread(target=read_requests, name="fake-lh-poll-reader", daemon=True).start()
        try:
            while True:
                response = self._next_poll_response(stream)
                if response is _STOPPING:
                    # What a worker sees when its server goes away mid-stream.
                    context.abort(grpc.StatusCode.UNAVAILABLE, "fake LittleHorse server stopped")
                if response is _ENDED_OK:
                    return  # status OK
                if not isinstance(response, PollTaskResponse):
                    return
                yield response
        finally:
            with self._cond:
                stream.closed = True
                self._streams.remove(stream)
                self._cond.notify_all()

    def _next_poll_response(self, stream: _PollStream) -> PollTaskResponse | object:
        """Wait for work for the stream's oldest poll; `_STOPPING` / `_CLOSED` end the stream."""
        with self._cond:
            while True:
                if self._stopping:
                    return _STOPPING
                if stream.generation < self._generation:
                    return _ENDED_OK
                if stream.claimed and not self._holding_handouts:
                    # Claimed before the client half-closed: sent all the same.
                    return stream.claimed.popleft()
                if stream.closed:
                    if stream.claimed:
                        self._cond.wait()
                        continue
                    # Half-closed by the client (LHTaskWorker.stop()): no longer a poller, so
                    # a task scheduled now stays queued.
                    return _CLOSED
                if stream.pending:
                    request, received = stream.pending[0]
                    queue = self._queues[(stream.tenant, request.task_def_id.name)]
                    if queue:
                        stream.pending.popleft()
                        task = queue.popleft()
                        key = task_run_key(task.task_run_id, stream.tenant)
                        self._in_flight.add((key, task.attempt_number))
                        self._max_in_flight = max(self._max_in_flight, len(self._in_flight))
                        self._handed_out += 1
                        self._handouts.append(
                            Handout(
                                time.monotonic(),
                                stream.client_id,
                                key,
                                task.attempt_number,
                            )
                        )
                        if self._holding_handouts:
                            stream.claimed.append(PollTaskResponse(result=task))
                            continue
                        return PollTaskResponse(result=task)
                    if self._poll_hold_seconds is not None:
                        remaining = received + self._poll_hold_seconds - time.monotonic()
                        if remaining <= 0:
                            stream.pending.popleft()
                            self._empty_replies += 1
                            return PollTaskResponse()
                        self._cond.wait(remaining)
                        continue
                self._cond.wait()


# ---------------------------------------------------------------------- worker lifecycle

# Coroutines the SDK starts with bare asyncio.create_task(); nothing else holds them.
_SDK_TASK_PREFIXES = ("LHConnection.", "LHTaskWorker.")


def _sdk_tasks() -> set[asyncio.Task[Any]]:
    return {
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").startswith(_SDK_TASK_PREFIXES)
    }


async def stop_worker(
    worker: LHTaskWorker, start_task: asyncio.Task[None], *, grace: float = 1.0
) -> None:
    """Stop a worker started as `asyncio.create_task(worker.start())` in well under a second.

    `LHTaskWorker.stop()` only flips flags: `start()` stays asleep in its 60 s heartbeat.
    So: stop() (poll streams half-close, connections end), cancel `start()`, give reports
    already under way `grace` seconds to reach the server, then cancel whatever the SDK left.
    A task still executing is cancelled; the SDK reports that as TASK_FAILED (CancelledError).
    """
    # stop() reads the TaskDef that start() fetches first: AttributeError if it never got it.
    with contextlib.suppress(AttributeError):
        worker.stop()
    start_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await start_task
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    leftovers = _sdk_tasks()
    while leftovers and loop.time() < deadline:
        await asyncio.wait(leftovers, timeout=deadline - loop.time())
        leftovers = _sdk_tasks()
    for task in leftovers:
        task.cancel()
    if leftovers:
        await asyncio.gather(*leftovers, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_worker(
    fake: FakeLittleHorse,
    worker: LHTaskWorker,
    task_def_name: str,
    *,
    ready_timeout: float = 5.0,
) -> AsyncIterator[LHTaskWorker]:
    """Run `worker` on the current event loop until the block exits.

    Enters once the worker has a poll open at `fake` (so a task scheduled inside the block is
    picked up at once); a failing `start()` (TaskDef missing, signature mismatch) is raised.
    """
    loop = asyncio.get_running_loop()
    baseline = fake.pollers(task_def_name)
    start_task = loop.create_task(worker.start(), name=f"lh-worker-{task_def_name}")
    try:
        deadline = loop.time() + ready_timeout
        while fake.pollers(task_def_name) <= baseline:
            if start_task.done():
                start_task.result()
                raise RuntimeError(f"worker for {task_def_name!r} stopped before polling")
            if loop.time() > deadline:
                raise TimeoutError(
                    f"worker for {task_def_name!r} not polling after {ready_timeout} s"
                )
            await asyncio.sleep(0.005)
        yield worker
    finally:
        await stop_worker(worker, start_task)
