"""Tasks claimed but not started: a task that reaches the worker while its ComfyUI does not
answer waits for it instead of failing into it, and a drain starts none of them. The real SDK
connection code, the fake LittleHorse server, the mock ComfyUI stopped under the worker and
the real readiness watch in front of it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME
from comfyui_worker.execution import Executor
from comfyui_worker.lh.admission import Admission
from comfyui_worker.lh.readiness import ComfyUIReadiness
from comfyui_worker.lh.supervisor import Supervisor
from lh import supervising
from lh.fake_server import FakeLittleHorse, decode_report
from lh.serve_process import WORKFLOW
from mock_settings import settings_for


async def wait_for(condition: Any, timeout: float, what: str) -> None:  # noqa: ASYNC109
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


@contextlib.asynccontextmanager
async def gated(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, **kwargs: Any
) -> AsyncIterator[Supervisor]:
    """`execute-comfyui-workflow` claimed only while the readiness watch says ComfyUI answers,
    as `serve` does it."""
    executor = Executor(settings_for(comfyui_mock))
    readiness = ComfyUIReadiness(executor)
    watcher = asyncio.create_task(readiness.run())
    try:
        await wait_for(lambda: readiness.ready, 10, "ComfyUI ready")
        async with supervising.supervised(
            fake,
            comfyui_mock,
            settings={"tasks": (TASK_NAME,)},
            ready=lambda: readiness.ready,
            **kwargs,
        ) as supervisor:
            readiness.on_change = supervisor.wake
            yield supervisor
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await executor.aclose()


def comfyui_down(mock: MockHandle, seconds: float) -> asyncio.Task[None]:
    """ComfyUI refuses connections for `seconds` (its queue and history gone), then answers."""
    return asyncio.create_task(asyncio.to_thread(mock.restart, seconds))


async def test_a_task_that_arrives_after_the_gate_closed_waits_for_comfyui_then_runs(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """LittleHorse claimed the task for the poll outstanding just before ComfyUI went away and
    sends it after the worker stopped polling (the race the server can win). It used to run at
    once, fail on the dead ComfyUI and burn a retry."""
    caplog.set_level(logging.INFO)
    async with gated(fake, comfyui_mock) as supervisor:
        fake.hold_handouts()
        run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await wait_for(lambda: fake.handed_out == 1, 10, "the task claimed")
        down = comfyui_down(comfyui_mock, 3.0)
        await wait_for(lambda: not supervisor.comfyui_ready, 10, "the gate closed")
        # Closing the gate ends the outstanding polls at once, not when they are cut 5 s later.
        await wait_for(lambda: fake.pollers(TASK_NAME) == 0, 0.5, "polls ended")
        fake.release_handouts()
        await down
        back = time.time()
        report = decode_report(await fake.await_report(run_id, timeout=30))
        assert report.status == "TASK_SUCCESS", report.error_message
        reported = fake.reported_at(run_id)
        assert reported is not None and reported > back
        assert fake.handed_out == 1
    assert "claimed while ComfyUI does not answer" in caplog.text


async def test_a_task_claimed_beside_full_slots_waits_for_comfyui_instead_of_failing_into_it(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    """One slot: the second task claimed waits for it. The gate closes, then ComfyUI dies
    under the first; the slot frees at once (the first fails) and the second used to start
    into the dead ComfyUI. The gate is the test's here, so that it is known to have closed
    before the slot freed (the readiness watch takes up to a second or so to notice)."""
    ready = True
    comfyui_mock.set_job_delay(3)
    async with supervising.supervised(
        fake, comfyui_mock, threads=1, settings={"tasks": (TASK_NAME,)}, ready=lambda: ready
    ) as supervisor:
        first = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await wait_for(lambda: fake.handed_out == 1, 10, "the first claimed")
        second = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await wait_for(lambda: fake.handed_out == 2, 10, "the second claimed")
        await asyncio.sleep(0.3)  # the first is running in ComfyUI
        ready = False
        supervisor.wake()
        down = comfyui_down(comfyui_mock, 2.0)
        assert decode_report(await fake.await_report(first, timeout=20)).status == "TASK_FAILED"
        await down
        comfyui_mock.set_job_delay(0)
        await asyncio.sleep(0.3)
        assert fake.reported_at(second) is None  # still waiting, not failed
        ready = True
        supervisor.wake()
        report = decode_report(await fake.await_report(second, timeout=30))
        assert report.status == "TASK_SUCCESS", report.error_message


async def test_a_task_waiting_for_comfyui_when_the_drain_begins_is_handed_back_at_once(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    async with gated(fake, comfyui_mock) as supervisor:
        fake.hold_handouts()
        run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await wait_for(lambda: fake.handed_out == 1, 10, "the task claimed")
        down = comfyui_down(comfyui_mock, 5.0)
        await wait_for(lambda: fake.pollers(TASK_NAME) == 0, 10, "the gate closed")
        fake.release_handouts()
        await asyncio.sleep(0.5)  # it reached the worker
        started = time.monotonic()
        cancelled = await supervisor.drain(20)
        assert time.monotonic() - started < 2  # not the grace, not ComfyUI's return
        report = decode_report(await fake.await_report(run_id, timeout=5))
        assert report.status == "TASK_FAILED" and report.exception_name is None
        assert "not started" in (report.error_message or "")
        assert "shutting down" in (report.error_message or "")
        assert cancelled == []
        assert comfyui_mock.request_count("/prompt", "POST") == 0
        await down


@pytest.mark.parametrize("freed_in_the_same_turn", [False, True], ids=["held", "freed"])
async def test_a_slot_wait_ended_by_the_drain_keeps_no_slot(freed_in_the_same_turn: bool) -> None:
    """A claim waiting for a slot when the drain begins takes none, even when the slot frees
    in the same turn: the slot is there for nobody else afterwards otherwise."""
    admission = Admission()
    slots = asyncio.Semaphore(1)
    await slots.acquire()  # the running task's
    waiting = asyncio.create_task(admission.take_slot(slots))
    await asyncio.sleep(0.01)
    if freed_in_the_same_turn:
        slots.release()
    admission.drain()
    assert await waiting is False
    if not freed_in_the_same_turn:
        slots.release()
    await asyncio.sleep(0.01)
    assert not slots.locked()
    await slots.acquire()
    assert slots.locked()  # exactly one slot, as before
