"""The real littlehorse-client `LHTaskWorker` against FakeLittleHorse.

These pin down both the fake and the SDK behaviour the comfyui worker relies on: how results,
business exceptions and crashes are reported, what a retry looks like from inside a task, and
what TaskDef `create_task_def` registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import littlehorse
import pytest
from littlehorse.exceptions import LHTaskException
from littlehorse.model import (
    LHErrorType,
    LHTaskError,
    LittleHorseStub,
    PollTaskRequest,
    ReportTaskRun,
    TaskDefId,
    TaskStatus,
    VariableType,
)
from littlehorse.utils import extract_value
from littlehorse.worker import LHTaskWorker, WorkerContext

from lh.fake_server import (
    RECORD_LIMIT,
    FakeLittleHorse,
    StreamEnd,
    decode_report,
    running_worker,
    task_run_key,
)

# --- task functions: the SDK maps their annotations to the TaskDef -----------------------


async def greet(name: str, ctx: WorkerContext) -> str:
    ctx.log(f"greeting {name}")
    return f"hello {name}"


async def describe(payload: dict[str, Any]) -> dict[str, Any]:
    return {"keys": sorted(payload), "count": len(payload)}


async def reject(payload: dict[str, Any]) -> dict[str, Any]:
    raise LHTaskException(
        "comfyui-validation-error",
        "node 3 has no class_type",
        littlehorse.to_variable_value({"node_id": "3", "field": "class_type"}),
    )


async def crash(name: str) -> str:
    raise RuntimeError(f"cannot greet {name}")


# --- tests --------------------------------------------------------------------------------


async def test_success_reports_output_and_log(fake: FakeLittleHorse) -> None:
    config = fake.config(num_worker_threads=2)
    littlehorse.create_task_def(greet, "greet", config)
    async with running_worker(fake, LHTaskWorker(greet, "greet", config), "greet"):
        scheduled_at = time.time()
        run_id = fake.schedule_task("greet", {"name": "ada"})
        assert fake.reported_at(run_id) is None
        report = decode_report(await fake.await_report(run_id))
        received_at = time.time()

    assert report.status == "TASK_SUCCESS"
    reported_at = fake.reported_at(run_id)
    assert reported_at is not None and scheduled_at <= reported_at <= received_at
    assert fake.reported_at(run_id, attempt_number=1) is None
    assert report.output == "hello ada"
    assert report.attempt_number == 0
    assert report.task_run_id == run_id
    assert report.log_output is not None and "greeting ada" in report.log_output
    assert report.exception_name is None and report.error_message is None
    assert fake.in_flight == 0


async def test_json_obj_round_trip(fake: FakeLittleHorse) -> None:
    config = fake.config()
    littlehorse.create_task_def(describe, "describe", config)
    async with running_worker(fake, LHTaskWorker(describe, "describe", config), "describe"):
        run_id = fake.schedule_task("describe", {"payload": {"b": [1, 2], "a": {"x": None}}})
        report = decode_report(await fake.await_report(run_id))

    assert report.status == "TASK_SUCCESS"
    assert report.output == {"keys": ["a", "b"], "count": 2}
    # A dict comes back as JSON_OBJ, not as a string the workflow would have to parse.
    assert (await fake.await_report(run_id)).output.WhichOneof("value") == "json_obj"


async def test_business_exception_is_task_exception_with_content(fake: FakeLittleHorse) -> None:
    config = fake.config()
    littlehorse.create_task_def(reject, "reject", config)
    async with running_worker(fake, LHTaskWorker(reject, "reject", config), "reject"):
        run_id = fake.schedule_task("reject", {"payload": {"3": {}}})
        report = decode_report(await fake.await_report(run_id))

    assert report.status == "TASK_EXCEPTION"
    assert report.exception_name == "comfyui-validation-error"
    assert report.exception_message == "node 3 has no class_type"
    assert report.exception_content == {"node_id": "3", "field": "class_type"}
    assert report.output is None and report.error_type is None


async def test_plain_exception_is_task_failed_with_traceback(fake: FakeLittleHorse) -> None:
    config = fake.config()
    littlehorse.create_task_def(crash, "crash", config)
    async with running_worker(fake, LHTaskWorker(crash, "crash", config), "crash"):
        run_id = fake.schedule_task("crash", {"name": "bob"})
        report = decode_report(await fake.await_report(run_id))

    # TASK_FAILED is the status the server retries; TASK_ERROR is the failure type a
    # WfSpec's handle_error would match.
    assert report.status == "TASK_FAILED"
    assert report.error_type == "TASK_ERROR"
    assert report.error_message is not None
    assert "RuntimeError: cannot greet bob" in report.error_message
    assert "Traceback" in report.error_message
    assert report.exception_name is None


async def test_retry_keeps_idempotency_key_and_counts_attempts(fake: FakeLittleHorse) -> None:
    seen: list[tuple[str, int, str]] = []

    async def flaky(name: str, ctx: WorkerContext) -> str:
        seen.append((ctx.idempotency_key, ctx.attempt_number, ctx.wf_run_id.id))
        if ctx.attempt_number == 0:
            raise ConnectionError("ComfyUI went away")
        return f"done {name}"

    config = fake.config()
    littlehorse.create_task_def(flaky, "flaky", config)
    async with running_worker(fake, LHTaskWorker(flaky, "flaky", config), "flaky"):
        run_id = fake.schedule_task("flaky", {"name": "x"}, position=3, wf_run_id="wf-1")
        first = decode_report(await fake.await_report(run_id, attempt_number=0))
        assert first.status == "TASK_FAILED"

        assert fake.retry_task(run_id) == 1
        second = decode_report(await fake.await_report(run_id))

    assert second.status == "TASK_SUCCESS"
    assert second.attempt_number == 1
    assert second.output == "done x"
    # The idempotency key is the TaskRun's task_guid, "<thread>-<position>" as the real
    # server makes it: the same for every attempt.
    assert seen == [("0-3", 0, "wf-1"), ("0-3", 1, "wf-1")]


async def test_tasks_run_concurrently_up_to_worker_threads(fake: FakeLittleHorse) -> None:
    running = 0
    peak = 0
    release = asyncio.Event()

    async def slow(name: str) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return name

    config = fake.config(num_worker_threads=2)
    littlehorse.create_task_def(slow, "slow", config)
    async with running_worker(fake, LHTaskWorker(slow, "slow", config), "slow"):
        run_ids = [fake.schedule_task("slow", {"name": str(i)}) for i in range(5)]
        deadline = time.monotonic() + 5
        while fake.in_flight < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        # Two execute; the SDK has also claimed a third that waits for a free slot.
        assert (peak, fake.in_flight, fake.queued("slow")) == (2, 3, 2)
        assert fake.max_in_flight == 3
        fake.reset_max_in_flight()
        assert fake.max_in_flight == 3
        release.set()
        reports = [decode_report(await fake.await_report(r)) for r in run_ids]

    assert [r.output for r in reports] == ["0", "1", "2", "3", "4"]
    assert peak == 2
    assert fake.in_flight == 0


async def test_create_task_def_maps_annotations(fake: FakeLittleHorse) -> None:
    config = fake.config()
    littlehorse.create_task_def(describe, "describe", config)
    littlehorse.create_task_def(greet, "greet", config)

    described = fake.task_defs["describe"]
    assert [(v.name, v.type_def.primitive_type) for v in described.input_vars] == [
        ("payload", VariableType.JSON_OBJ)
    ]
    assert described.return_type.return_type.primitive_type == VariableType.JSON_OBJ
    # WorkerContext is not an input variable.
    greeted = fake.task_defs["greet"]
    assert [(v.name, v.type_def.primitive_type) for v in greeted.input_vars] == [
        ("name", VariableType.STR)
    ]
    # The worker fetches it back the same way.
    fetched = config.stub().GetTaskDef(TaskDefId(name="describe"))
    assert fetched == described


def test_re_put_identical_task_def_is_accepted(fake: FakeLittleHorse) -> None:
    config = fake.config()
    littlehorse.create_task_def(describe, "describe", config)
    created_at = fake.task_defs["describe"].created_at
    littlehorse.create_task_def(describe, "describe", config)
    assert fake.task_defs["describe"].created_at == created_at


def test_conflicting_task_def_is_already_exists(fake: FakeLittleHorse) -> None:
    config = fake.config()
    littlehorse.create_task_def(describe, "describe", config)

    async def describe_v2(payload: dict[str, Any], limit: int) -> dict[str, Any]:
        return payload

    with pytest.raises(grpc.RpcError) as excinfo:
        littlehorse.create_task_def(describe_v2, "describe", config)
    assert excinfo.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert len(fake.task_defs["describe"].input_vars) == 1


def test_task_def_name_must_be_kebab_case(fake: FakeLittleHorse) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        littlehorse.create_task_def(greet, "greet_user", fake.config())
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fake.task_defs == {}


def test_get_missing_task_def_is_not_found(fake: FakeLittleHorse) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        fake.config().stub().GetTaskDef(TaskDefId(name="nope"))
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND


async def test_worker_for_missing_task_def_fails_to_start(fake: FakeLittleHorse) -> None:
    config = fake.config()
    with pytest.raises(grpc.RpcError) as excinfo:
        async with running_worker(fake, LHTaskWorker(greet, "greet", config), "greet"):
            pytest.fail("the worker should not have started")
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND


async def test_heartbeat_advertises_the_fake_as_the_host_to_poll(fake: FakeLittleHorse) -> None:
    config = fake.config(extra={"LHW_TASK_WORKER_ID": "worker-under-test"})
    littlehorse.create_task_def(greet, "greet", config)
    async with running_worker(fake, LHTaskWorker(greet, "greet", config), "greet"):
        registrations = fake.registrations
    assert [(r.task_worker_id, r.task_def_id.name) for r in registrations] == [
        ("worker-under-test", "greet")
    ]


def test_schedule_checks_inputs_against_the_task_def(fake: FakeLittleHorse) -> None:
    littlehorse.create_task_def(greet, "greet", fake.config())
    with pytest.raises(ValueError, match="takes"):
        fake.schedule_task("greet", {"nom": "x"})
    with pytest.raises(ValueError, match="STR"):
        fake.schedule_task("greet", {"name": 42})


async def test_stop_ends_a_workers_poll_with_unavailable(
    fake: FakeLittleHorse, caplog: pytest.LogCaptureFixture
) -> None:
    config = fake.config()
    littlehorse.create_task_def(greet, "greet", config)
    async with running_worker(fake, LHTaskWorker(greet, "greet", config), "greet"):
        started = time.monotonic()
        await asyncio.to_thread(fake.stop)
        assert time.monotonic() - started < 1.5
        assert fake.pollers("greet") == 0
        await asyncio.sleep(0.05)
    # The SDK logs the broken stream and drops that connection until its next heartbeat.
    assert any(r.name == "LHConnection" and "UNAVAILABLE" in r.getMessage() for r in caplog.records)


@contextlib.contextmanager
def _open_poll(
    fake: FakeLittleHorse,
    task_def_name: str,
    half_close: threading.Event | None = None,
    *,
    tenant: str | None = None,
) -> Iterator[Iterator[Any]]:
    """A raw PollTask stream with one poll sent and the request side held open (until
    `half_close` is set, if given)."""
    release = half_close or threading.Event()

    def requests() -> Iterator[PollTaskRequest]:
        yield PollTaskRequest(task_def_id=TaskDefId(name=task_def_name), client_id="raw")
        release.wait(10)

    stub = LittleHorseStub(grpc.insecure_channel(fake.address))
    metadata = [("tenantid", tenant)] if tenant else None
    responses = stub.PollTask(requests(), metadata=metadata)
    try:
        yield responses
    finally:
        release.set()
        responses.cancel()


def test_stop_aborts_open_poll_stream_with_unavailable(fake: FakeLittleHorse) -> None:
    with _open_poll(fake, "greet") as responses:
        fake.wait_for_poller("greet")
        fake.stop()
        with pytest.raises(grpc.RpcError) as excinfo:
            next(responses)
    assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE


def test_poll_hold_answers_empty_when_no_work() -> None:
    with FakeLittleHorse(poll_hold_seconds=0.05) as fake, _open_poll(fake, "greet") as responses:
        started = time.monotonic()
        reply = next(responses)
        assert not reply.HasField("result")
        assert 0.04 <= time.monotonic() - started < 1
        assert fake.empty_replies == 1


def test_queued_task_is_handed_to_a_raw_poll(fake: FakeLittleHorse) -> None:
    run_id = fake.schedule_task("anything", {"n": 1, "s": "x"}, wf_run_id="w")
    with _open_poll(fake, "anything") as responses:
        task = next(responses).result
    assert task.task_run_id == run_id
    assert task.attempt_number == 0
    assert [(v.var_name, v.value.WhichOneof("value")) for v in task.variables] == [
        ("n", "int"),
        ("s", "str"),
    ]
    assert task.source.task_node.node_run_id.wf_run_id.id == "w"
    assert task.task_run_id.task_guid == "0-1"  # the first task of its WfRun
    assert fake.in_flight == 1 and fake.handed_out == 1
    with pytest.raises(TimeoutError):
        fake.wait_report(run_id, timeout=0.05)


def test_a_held_handout_still_reaches_a_stream_half_closed_since(fake: FakeLittleHorse) -> None:
    half_close = threading.Event()
    with _open_poll(fake, "greet", half_close) as responses:
        fake.wait_for_poller("greet")
        fake.hold_handouts()
        run_id = fake.schedule_task("greet", {"name": "ada"})
        deadline = time.monotonic() + 5
        while fake.handed_out == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake.handed_out == 1 and fake.in_flight == 1 and fake.queued("greet") == 0
        half_close.set()
        while fake.pollers("greet") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake.pollers("greet") == 0
        fake.schedule_task("greet", {"name": "bob"})
        fake.release_handouts()
        assert next(responses).result.task_run_id == run_id
        # Then the stream ends; the task scheduled after the half-close stays queued.
        assert next(responses, None) is None
    assert fake.queued("greet") == 1 and fake.handed_out == 1


async def test_restart_keeps_port_and_task_defs(fake: FakeLittleHorse) -> None:
    port = fake.port
    littlehorse.create_task_def(greet, "greet", fake.config())
    fake.stop()
    fake.start()
    assert fake.port == port
    config = fake.config()
    async with running_worker(fake, LHTaskWorker(greet, "greet", config), "greet"):
        run_id = fake.schedule_task("greet", {"name": "again"})
        report = decode_report(await fake.await_report(run_id))
    assert report.output == "hello again"


@pytest.mark.parametrize("end_streams", list(StreamEnd))
def test_restart_ends_open_streams_then_answers_on_the_same_port(
    fake: FakeLittleHorse, end_streams: StreamEnd
) -> None:
    port = fake.port
    with _open_poll(fake, "greet") as responses:
        fake.wait_for_poller("greet")
        fake.restart(end_streams=end_streams, downtime=0.2)
        if end_streams is StreamEnd.OK:
            with pytest.raises(StopIteration):  # the stream ended with status OK
                next(responses)
        else:
            with pytest.raises(grpc.RpcError) as excinfo:
                next(responses)
            assert excinfo.value.code() == grpc.StatusCode.UNAVAILABLE
    assert fake.port == port and fake.restarts == 1
    run_id = fake.schedule_task("greet", {"name": "x"})
    with _open_poll(fake, "greet") as responses:  # a new stream is served again
        assert next(responses).result.task_run_id == run_id


async def test_the_sdk_worker_goes_deaf_when_its_stream_ends_ok(fake: FakeLittleHorse) -> None:
    # What the supervisor compensates for: the SDK never replaces a stream that ended OK.
    config = fake.config()
    littlehorse.create_task_def(greet, "greet", config)
    worker = LHTaskWorker(greet, "greet", config)
    async with running_worker(fake, worker, "greet"):
        await asyncio.to_thread(fake.restart, end_streams=StreamEnd.OK)
        await asyncio.sleep(0.3)
        assert fake.pollers("greet") == 0
        assert worker.health().healthy  # and it still looks healthy
        assert all(c.running for c in worker._connections.values())


def test_time_out_redelivers_unreported_attempts_as_the_next_attempt(
    fake: FakeLittleHorse,
) -> None:
    first = fake.schedule_task("anything", {"n": 1})
    second = fake.schedule_task("anything", {"n": 2})
    with _open_poll(fake, "anything") as responses:
        assert next(responses).result.task_run_id == first
    assert [(h.client_id, h.attempt_number) for h in fake.handouts] == [("raw", 0)]
    assert fake.time_out(client_id="someone-else") == []
    assert fake.time_out(client_id="raw") == [(first, 1)]
    assert fake.timed_out(first, 0) and not fake.timed_out(second, 0)
    assert fake.in_flight == 0 and fake.queued("anything") == 2
    with _open_poll(fake, "anything") as responses:
        assert next(responses).result.task_run_id == second
    with _open_poll(fake, "anything") as responses:
        redelivered = next(responses).result
    assert (redelivered.task_run_id, redelivered.attempt_number) == (first, 1)


def _report(task: Any, size: int, attempt: int = 0, **fields: Any) -> ReportTaskRun:
    report = ReportTaskRun(
        task_run_id=task.task_run_id,
        attempt_number=attempt,
        status=TaskStatus.TASK_SUCCESS,
        output=littlehorse.to_variable_value({"blob": "x" * size}),
        **fields,
    )
    report.time.GetCurrentTime()
    return report


def test_a_report_over_the_record_limit_is_unavailable(fake: FakeLittleHorse) -> None:
    run_id = fake.schedule_task("anything", {"n": 1})
    with _open_poll(fake, "anything") as responses:
        task = next(responses).result
    stub = LittleHorseStub(grpc.insecure_channel(fake.address))
    with pytest.raises(grpc.RpcError) as refused:
        stub.ReportTask(_report(task, 1_100_000), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == "Failed recording task claim to Kafka"
    assert fake.reports == []
    (kept,) = fake.refused_reports
    assert (kept.answered, kept.report.task_run_id) == ("UNAVAILABLE", run_id)


def test_a_report_whose_task_run_record_would_be_too_large_is_dropped(
    fake: FakeLittleHorse,
) -> None:
    # The report fits, but the record keeps the 300 KB of inputs and the first attempt too.
    run_id = fake.schedule_task("anything", {"s": "i" * 300_000})
    with _open_poll(fake, "anything") as responses:
        task = next(responses).result
    stub = LittleHorseStub(grpc.insecure_channel(fake.address))
    failed = _report(
        task,
        0,
        error=LHTaskError(type=LHErrorType.TASK_ERROR, message="e" * 40_000),
        log_output=littlehorse.to_variable_value("l" * 30_000),
    )
    failed.status = TaskStatus.TASK_FAILED
    failed.ClearField("output")
    stub.ReportTask(failed, timeout=5)
    fake.retry_task(run_id)
    with _open_poll(fake, "anything") as responses:
        assert next(responses).result.attempt_number == 1
    stub.ReportTask(_report(task, 700_000, attempt=1), timeout=5)  # answered OK...
    assert [r.attempt_number for r in fake.reports] == [0]  # ...and not kept
    (dropped,) = fake.refused_reports
    assert dropped.answered == "OK" and dropped.size > RECORD_LIMIT
    # One that leaves the record under the limit is kept.
    stub.ReportTask(_report(task, 600_000, attempt=1), timeout=5)
    assert [r.attempt_number for r in fake.reports] == [0, 1]


def test_task_guids_repeat_across_wf_runs_as_on_the_real_server(fake: FakeLittleHorse) -> None:
    first = fake.schedule_task("anything", {"n": 1})
    second = fake.schedule_task("anything", {"n": 2})
    later_node = fake.schedule_task("anything", {"n": 3}, wf_run_id=first.wf_run_id, position=4)
    assert first.task_guid == second.task_guid == "0-1"
    assert first.wf_run_id.id != second.wf_run_id.id
    assert later_node.task_guid == "0-4" and later_node.wf_run_id.id == first.wf_run_id.id
    with pytest.raises(ValueError, match="exists already"):
        fake.schedule_task("anything", {"n": 4}, wf_run_id=first.wf_run_id)


def test_a_child_wf_run_names_its_parent(fake: FakeLittleHorse) -> None:
    run_id = fake.schedule_task("anything", {"n": 1}, wf_run_id="child", parent_wf_run_id="p")
    with _open_poll(fake, "anything") as responses:
        task = next(responses).result
    assert task.task_run_id.wf_run_id.id == "child"
    assert task.task_run_id.wf_run_id.parent_wf_run_id.id == "p"
    # Its key tells it from a child of the same id under another parent.
    assert task_run_key(run_id) == ("default", ("p", "child"), "0-1")


def test_a_poll_gets_only_its_own_tenants_tasks(fake: FakeLittleHorse) -> None:
    theirs = fake.schedule_task("anything", {"n": 1}, wf_run_id="same", tenant="acme")
    ours = fake.schedule_task("anything", {"n": 2}, wf_run_id="same")
    assert theirs == ours  # the same TaskRunId, in two tenants
    with _open_poll(fake, "anything") as responses:
        assert extract_value(next(responses).result.variables[0].value) == 2
    assert fake.queued("anything", tenant="acme") == 1
    with _open_poll(fake, "anything", tenant="acme") as responses:
        assert extract_value(next(responses).result.variables[0].value) == 1
    assert fake.queued("anything", tenant="acme") == 0
