"""The supervisor keeps polling through LittleHorse restarts: the real SDK connection code,
the fake LittleHorse server restarted under it, the mock ComfyUI."""

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
from comfyui_worker.lh import connection
from comfyui_worker.lh.supervisor import Supervisor
from lh import supervising
from lh.fake_server import FakeLittleHorse, StreamEnd, decode_report
from lh.serve_process import WORKFLOW


async def wait_for(condition: object, timeout: float, what: str) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def supervised(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, **kwargs: Any
) -> AsyncIterator[Supervisor]:
    """`execute-comfyui-workflow` alone, two slots."""
    async with supervising.supervised(
        fake, comfyui_mock, settings={"tasks": (TASK_NAME,)}, **kwargs
    ) as supervisor:
        yield supervisor


async def claim_delay(fake: FakeLittleHorse, since: float) -> float:
    """Schedule a task and return how long after `since` a worker claimed it."""
    before = len(fake.handouts)
    run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
    report = decode_report(await fake.await_report(run_id, timeout=30))
    assert report.status == "TASK_SUCCESS", report.error_message
    return fake.handouts[before].at - since


@pytest.mark.parametrize(
    ("end_streams", "downtime"),
    [(StreamEnd.UNAVAILABLE, 1.5), (StreamEnd.OK, 0.0), (StreamEnd.OK, 1.5)],
    ids=["unavailable", "ok", "ok-then-down"],
)
async def test_polls_again_within_5_s_of_littlehorse_answering(
    fake: FakeLittleHorse,
    comfyui_mock: MockHandle,
    end_streams: StreamEnd,
    downtime: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with supervised(fake, comfyui_mock) as supervisor:
        assert supervisor.polling and supervisor.lh_reconnects == 0
        # A task claimed before the restart and finished after it is still reported.
        comfyui_mock.set_job_delay(downtime + 1.0)
        before = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await wait_for(lambda: fake.handed_out == 1, 10, "first claim")
        await asyncio.to_thread(fake.restart, end_streams=end_streams, downtime=downtime)
        answering = time.monotonic()
        comfyui_mock.set_job_delay(0)
        delay = await claim_delay(fake, answering)
        print(f"{end_streams.value} restart, {downtime} s down: next claim after {delay:.2f} s")
        assert delay < 5.0
        report = decode_report(await fake.await_report(before, timeout=30))
        assert report.status == "TASK_SUCCESS", report.error_message
        assert supervisor.lh_reconnects >= 1 and supervisor.polling
    assert "reconnecting" in caplog.text


async def test_registers_through_an_advertised_host_when_its_own_does_not_answer(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, caplog: pytest.LogCaptureFixture
) -> None:
    # A cluster of two reached at the first one's address (LHC_API_HOST): the first goes
    # down for good, then the second one's stream ends. Registering only at LHC_API_HOST,
    # the worker would never poll the second one again.
    caplog.set_level(logging.INFO)
    with FakeLittleHorse() as other:
        for server in (fake, other):
            server.advertise([fake.address, other.address])
        async with supervised(fake, comfyui_mock) as supervisor:
            await wait_for(lambda: other.pollers(TASK_NAME) > 0, 15, "polling the other")
            fake.stop()
            await asyncio.to_thread(other.restart)
            answering = time.monotonic()
            delay = await claim_delay(other, answering)
            print(f"own host down, the other restarted: next claim after {delay:.2f} s")
            assert delay < 5.0
            assert supervisor.polling
    assert f"registered {TASK_NAME!r} through {other.address}, a host it advertised" in (
        caplog.text
    )


async def test_backs_off_while_littlehorse_is_down_and_resumes(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with supervised(fake, comfyui_mock) as supervisor:
        registrations = len(fake.registrations)
        fake.stop()
        await wait_for(lambda: not supervisor.polling, 10, "stream end")
        await asyncio.sleep(4)  # a few seconds down: a handful of tries, not a busy loop
        assert not supervisor.polling
        fake.start()
        answering = time.monotonic()
        delay = await claim_delay(fake, answering)
        assert delay < 5.0
        # Back-off: the tries while down (which the fake did not see) plus a few after.
        assert len(fake.registrations) - registrations <= 4
    assert "LittleHorse is not answering" in caplog.text
    assert "LittleHorse answers again" in caplog.text


async def test_a_report_that_cannot_be_sent_now_is_retried_until_littlehorse_is_back(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, caplog: pytest.LogCaptureFixture
) -> None:
    async with supervised(fake, comfyui_mock):
        comfyui_mock.set_job_delay(0.5)
        run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await wait_for(lambda: fake.handed_out == 1, 10, "claim")
        fake.stop()
        await asyncio.sleep(2.5)  # the task finished while LittleHorse was away
        fake.start()
        report = decode_report(await fake.await_report(run_id, timeout=30))
        assert report.status == "TASK_SUCCESS"
    assert f"{run_id.wf_run_id.id}/{run_id.task_guid} attempt 0: report TASK_SUCCESS failed" in (
        caplog.text
    )


async def test_claims_nothing_while_the_gate_is_closed(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    ready = True
    async with supervised(fake, comfyui_mock, ready=lambda: ready) as supervisor:
        ready = False
        supervisor.wake()
        await wait_for(lambda: fake.pollers(TASK_NAME) == 0, 10, "polls stopped")
        assert not supervisor.polling and not supervisor.comfyui_ready
        run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await asyncio.sleep(0.5)
        assert fake.handed_out == 0 and fake.queued(TASK_NAME) == 1
        ready = True
        supervisor.wake()
        report = decode_report(await fake.await_report(run_id, timeout=10))
        assert report.status == "TASK_SUCCESS"
        assert supervisor.lh_reconnects == 0  # a gate is not a reconnection


async def test_a_report_given_up_is_logged_with_its_task_run_id(
    fake: FakeLittleHorse,
    comfyui_mock: MockHandle,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "REPORT_ATTEMPTS", 2)  # instead of about a minute of tries
    async with supervised(fake, comfyui_mock) as supervisor:
        comfyui_mock.set_job_delay(0.5)
        run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await wait_for(lambda: fake.handed_out == 1, 10, "claim")
        fake.stop()  # and it stays away
        await supervisor.in_flight.wait_empty(15)
        assert len(supervisor.in_flight) == 0
    name = f"{run_id.wf_run_id.id}/{run_id.task_guid} attempt 0"
    assert f"{name}: report TASK_SUCCESS dropped after 2 tries" in caplog.text
    assert fake.reports == []
