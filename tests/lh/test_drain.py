"""Drain on SIGTERM: a real `comfyui-worker serve` process, the fake LittleHorse server and
the mock ComfyUI."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME
from lh.fake_server import FakeLittleHorse, decode_report, task_run_key
from lh.identities import prompt_id_of
from lh.serve_process import WORKFLOW, serve_env, start_serve, stop_process, wait_polling


async def claimed(fake: FakeLittleHorse, count: int = 1) -> None:
    async with asyncio.timeout(20):
        while fake.handed_out < count:
            await asyncio.sleep(0.02)


async def test_sigterm_lets_a_job_inside_the_grace_finish_and_report_success(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    comfyui_mock.set_job_delay(3)
    env = serve_env(fake, comfyui_mock, COMFYUI_SHUTDOWN_GRACE="15")
    proc = await start_serve(env, tmp_path)
    try:
        await wait_polling(proc, fake, TASK_NAME)
        run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW}, wf_run_id="drain-ok")
        await claimed(fake)
        await asyncio.sleep(0.5)  # the job is running in ComfyUI
        proc.send_signal(signal.SIGTERM)
        # Claiming stops at once: a task dispatched now stays in LittleHorse.
        async with asyncio.timeout(5):
            while fake.pollers(TASK_NAME):
                await asyncio.sleep(0.02)
        later = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        report = decode_report(await fake.await_report(run_id, timeout=20))
        reported = time.monotonic()
        assert report.status == "TASK_SUCCESS", report.error_message
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        # It exits as soon as nothing is in flight, not at the end of the grace.
        assert time.monotonic() - reported < 5
        assert fake.queued(TASK_NAME) == 1 and fake.handed_out == 1
        assert task_run_key(later) not in [h.key for h in fake.handouts]
    finally:
        output = await stop_process(proc)
    assert "signal received: draining" in output
    assert comfyui_mock.executions(prompt_id_of("drain-ok")) == 1


@pytest.mark.parametrize("interrupt", [False, True], ids=["left-running", "interrupted"])
async def test_sigterm_past_the_grace_reports_a_retryable_failure(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path, interrupt: bool
) -> None:
    comfyui_mock.set_job_delay(6)
    env = serve_env(
        fake,
        comfyui_mock,
        COMFYUI_SHUTDOWN_GRACE="1",
        COMFYUI_INTERRUPT_ON_SHUTDOWN=str(interrupt).lower(),
    )
    guid = f"drain-late-{interrupt}"
    proc = await start_serve(env, tmp_path)
    try:
        await wait_polling(proc, fake, TASK_NAME)
        run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW}, wf_run_id=guid)
        await claimed(fake)
        await asyncio.sleep(0.5)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        report = decode_report(await fake.await_report(run_id, timeout=15))
        assert report.status == "TASK_FAILED" and report.exception_name is None
        assert "COMFYUI_SHUTDOWN_GRACE" in (report.error_message or "")
        async with asyncio.timeout(15):
            assert await proc.wait() == 0
        assert time.monotonic() - signalled < 1 + 6  # the grace plus a few seconds
    finally:
        output = await stop_process(proc)
    assert "still running after the 1 s COMFYUI_SHUTDOWN_GRACE" in output
    pid = prompt_id_of(guid)
    async with httpx.AsyncClient(base_url=comfyui_mock.url, timeout=10) as http:
        async with asyncio.timeout(15):
            while not (history := (await http.get(f"/history/{pid}")).json()):
                await asyncio.sleep(0.1)
    status = history[pid]["status"]
    events = [message[0] for message in status["messages"]]
    if interrupt:
        assert "execution_interrupted" in events
    else:  # left for a retry to attach to: it ran to the end
        assert status["status_str"] == "success"


async def test_a_second_signal_exits_at_once(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    comfyui_mock.set_job_delay(20)
    proc = await start_serve(serve_env(fake, comfyui_mock, COMFYUI_SHUTDOWN_GRACE="25"), tmp_path)
    try:
        await wait_polling(proc, fake, TASK_NAME)
        fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await claimed(fake)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(1)
        assert proc.returncode is None  # draining
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(5):
            assert await proc.wait() == 128 + signal.SIGINT
    finally:
        output = await stop_process(proc)
    assert "second SIGINT: exiting now" in output


async def test_a_task_waiting_for_a_slot_when_the_grace_ends_is_reported_too(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    """One slot: the second task claimed waits for it. It is reported as not started when the
    drain begins; cancelling the first at the end of the grace frees the slot, and nothing
    may start in it then and go unreported at exit."""
    comfyui_mock.set_job_delay(8)
    env = serve_env(fake, comfyui_mock, COMFYUI_SHUTDOWN_GRACE="1", COMFYUI_MAX_IN_FLIGHT="1")
    proc = await start_serve(env, tmp_path)
    try:
        await wait_polling(proc, fake, TASK_NAME)
        first = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW}, wf_run_id="slot-1")
        await claimed(fake)
        second = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW}, wf_run_id="slot-2")
        await claimed(fake, 2)  # the poll outstanding beside the one slot
        proc.send_signal(signal.SIGTERM)
        for run_id, reason in ((first, "COMFYUI_SHUTDOWN_GRACE"), (second, "not started")):
            report = decode_report(await fake.await_report(run_id, timeout=20))
            assert report.status == "TASK_FAILED", report
            assert reason in (report.error_message or "")
        async with asyncio.timeout(15):
            assert await proc.wait() == 0
    finally:
        output = await stop_process(proc)
    assert "exiting before its report reached LittleHorse" not in output


async def test_a_task_claimed_beside_full_slots_is_not_started_by_a_drain(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    """One slot: the second task claimed waits for it. The first finishes inside the grace;
    the slot it frees used to start the second, new GPU work while shutting down. It is
    reported at once instead, for LittleHorse to retry on another worker."""
    comfyui_mock.set_job_delay(2)
    env = serve_env(fake, comfyui_mock, COMFYUI_SHUTDOWN_GRACE="15", COMFYUI_MAX_IN_FLIGHT="1")
    proc = await start_serve(env, tmp_path)
    try:
        await wait_polling(proc, fake, TASK_NAME)
        first = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await claimed(fake)
        second = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await claimed(fake, 2)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        report = decode_report(await fake.await_report(second, timeout=10))
        assert time.monotonic() - signalled < 1.5  # at once, not when a slot frees
        assert fake.reported_at(first) is None
        assert report.status == "TASK_FAILED" and report.exception_name is None
        assert "not started" in (report.error_message or ""), report.error_message
        assert decode_report(await fake.await_report(first, timeout=10)).succeeded
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        output = await stop_process(proc)
    assert comfyui_mock.request_count("/prompt", "POST") == 1  # the first task's only
    assert "not started" in output


async def test_prompts_interrupted_at_exit_are_asked_at_once_not_one_by_one(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    """With COMFYUI_INTERRUPT_ON_SHUTDOWN and a ComfyUI slow to answer, each interrupt may take
    its 5 s bound: asked one after another, three prompts kept the process 15 s past the grace
    instead of the few seconds the README promises."""
    comfyui_mock.set_job_delay(20)
    env = serve_env(
        fake,
        comfyui_mock,
        COMFYUI_SHUTDOWN_GRACE="1",
        COMFYUI_MAX_IN_FLIGHT="3",
        COMFYUI_INTERRUPT_ON_SHUTDOWN="true",
    )
    proc = await start_serve(env, tmp_path)
    try:
        await wait_polling(proc, fake, TASK_NAME)
        for _ in range(3):
            fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await claimed(fake, 3)
        await asyncio.sleep(0.5)
        comfyui_mock.set_response_delay(20, path="/queue")  # the interrupt's first request
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
        # The grace, the reports, then one 5 s bound for all three (one by one: 15 s).
        assert time.monotonic() - signalled < 1 + 11
    finally:
        output = await stop_process(proc)
    assert output.count("could not interrupt prompt") == 3
