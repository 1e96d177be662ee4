"""The task records what it does: metrics move, `/jobs`' board fills and empties, and the
NodeRun log gets progress lines at most every 10 % (real SDK worker, fake LittleHorse, mock
ComfyUI)."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from littlehorse.worker import LHTaskWorker

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME
from comfyui_worker.execution import Executor
from comfyui_worker.lh.task import make_task_function
from comfyui_worker.lh.worker import register
from comfyui_worker.observability.metrics import REGISTRY
from comfyui_worker.observability.progress import JOBS
from lh.fake_server import FakeLittleHorse, decode_report, running_worker
from lh.identities import prompt_id_of
from mock_settings import settings_for
from observability.workflows import blur_workflow, slow_blur

WORKFLOW = blur_workflow("obs")


# The task's TaskDef, no template: the labels every job counter and duration carries.
LABELS = {"task": TASK_NAME, "template": ""}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def worker(fake: FakeLittleHorse, comfyui_mock: MockHandle) -> AsyncIterator[Executor]:
    executor = Executor(settings_for(comfyui_mock, reconcile_interval=1))
    config = fake.config(num_worker_threads=2)
    task = make_task_function(executor)
    register(config, task)
    async with running_worker(fake, LHTaskWorker(task, TASK_NAME, config), TASK_NAME):
        yield executor
    await executor.aclose()


async def run_task(fake: FakeLittleHorse, **kwargs: object) -> object:
    run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW}, **kwargs)  # type: ignore[arg-type]
    return decode_report(await fake.await_report(run_id, timeout=15))


async def test_a_job_with_many_steps_logs_progress_sparingly_and_shows_on_the_board(
    worker: Executor, fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    slow_blur(comfyui_mock, steps=40, seconds=1.0)
    before = {
        "ok": sample(
            "comfyui_worker_jobs_finished_total", **LABELS, outcome="success", exception=""
        ),
        "slot": sample("comfyui_worker_slot_wait_seconds_count"),
        "queue": sample("comfyui_worker_comfyui_queue_wait_seconds_count"),
        "exec": sample("comfyui_worker_execution_seconds_count"),
        "e2e": sample("comfyui_worker_job_duration_seconds_count", **LABELS),
        "detect": sample("comfyui_worker_completion_detection_seconds_count"),
        "files": sample("comfyui_worker_outputs_delivered_total"),
        "bytes": sample("comfyui_worker_output_bytes_delivered_total"),
    }
    run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW}, wf_run_id="g-progress")
    pid = prompt_id_of("g-progress")
    seen: list[dict[str, object]] = []
    async with asyncio.timeout(15):
        # Past node 1 (33 %) and some steps into node 2.
        while not seen or seen[-1].get("percent", 0) < 40:  # type: ignore[operator]
            seen.extend(row for row in JOBS.snapshot() if row["prompt_id"] == pid)
            await asyncio.sleep(0.02)
    assert sample("comfyui_worker_jobs_in_flight") >= 1
    row = seen[-1]
    assert row["state"] == "running" and row["node"] == "2" and row["node_type"] == "ImageBlur"
    assert row["wf_run_id"] == "g-progress" and row["task_run_id"] == "0-1"
    assert row["attempt"] == 0
    assert "node 2 (ImageBlur) step" in str(row["detail"])
    report = decode_report(await fake.await_report(run_id, timeout=15))
    assert report.status == "TASK_SUCCESS", report.error_message

    percents = [float(p) for p in re.findall(r": (\d+)%, node", report.log_output or "")]
    # 40 steps: 120 figures, a line at most every 10 % (or 10 s, far longer than this job).
    assert 3 <= len(percents) <= 11, report.log_output
    assert percents == sorted(percents)
    assert all(b - a >= 10 for a, b in itertools.pairwise(percents))
    assert all(r["prompt_id"] != pid for r in JOBS.snapshot())  # gone from the board

    (path,) = report.output["outputs"]
    size = Path(path).stat().st_size
    assert sample(
        "comfyui_worker_jobs_finished_total", **LABELS, outcome="success", exception=""
    ) == (before["ok"] + 1)
    for key, name in [
        ("slot", "comfyui_worker_slot_wait_seconds_count"),
        ("queue", "comfyui_worker_comfyui_queue_wait_seconds_count"),
        ("exec", "comfyui_worker_execution_seconds_count"),
        ("detect", "comfyui_worker_completion_detection_seconds_count"),
    ]:
        assert sample(name) == before[key] + 1, name
    assert sample("comfyui_worker_job_duration_seconds_count", **LABELS) == before["e2e"] + 1
    assert sample("comfyui_worker_outputs_delivered_total") == before["files"] + 1
    assert sample("comfyui_worker_output_bytes_delivered_total") == before["bytes"] + size
    # ComfyUI ran the blur for at least its one-second delay, by its own clock.
    assert sample("comfyui_worker_execution_seconds_sum") >= 1.0


async def test_failures_retries_and_websocket_drops_are_counted(
    worker: Executor, fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    business = ("business_exception", "comfyui-execution-error")
    failed_before = sample(
        "comfyui_worker_jobs_finished_total", **LABELS, outcome=business[0], exception=business[1]
    )
    retries_before = sample("comfyui_worker_http_retries_total", endpoint="POST /prompt")
    history_before = sample("comfyui_worker_http_retries_total", endpoint="GET /history/{id}")
    lost_before = sample(
        "comfyui_worker_jobs_finished_total", **LABELS, outcome="failed", exception="ServerError"
    )
    reconnects_before = sample("comfyui_worker_websocket_reconnects_total")

    comfyui_mock.fail_node("2", message="boom")
    report = await run_task(fake)
    assert report.exception_name == "comfyui-execution-error"  # type: ignore[attr-defined]
    assert sample(
        "comfyui_worker_jobs_finished_total", **LABELS, outcome=business[0], exception=business[1]
    ) == (failed_before + 1)

    comfyui_mock.fail_http(count=1, path="POST /prompt", status=503)
    assert (await run_task(fake)).status == "TASK_SUCCESS"  # type: ignore[attr-defined]
    assert sample("comfyui_worker_http_retries_total", endpoint="POST /prompt") == (
        retries_before + 1
    )

    comfyui_mock.fail_http(count=10, path=f"/history/{prompt_id_of('g-5xx')}", status=500)
    assert (await run_task(fake, wf_run_id="g-5xx")).status == "TASK_FAILED"  # type: ignore[attr-defined]
    assert sample("comfyui_worker_http_retries_total", endpoint="GET /history/{id}") > (
        history_before
    )
    assert sample(
        "comfyui_worker_jobs_finished_total", **LABELS, outcome="failed", exception="ServerError"
    ) == (lost_before + 1)
    comfyui_mock.reset_controls()

    comfyui_mock.set_cache_enabled(False)  # a cached run sends no `executing` to drop after
    comfyui_mock.set_job_delay(0.5)
    comfyui_mock.drop_websockets(after_event="executing")
    assert (await run_task(fake)).status == "TASK_SUCCESS"  # type: ignore[attr-defined]
    assert sample("comfyui_worker_websocket_reconnects_total") >= reconnects_before + 1

    comfyui_mock.reset_controls()
    fallbacks_before = sample("comfyui_worker_websocket_fallbacks_total")
    comfyui_mock.fail_http(count=1, path="/ws", status=503)  # the handshake is refused
    report = await run_task(fake)
    assert report.status == "TASK_SUCCESS"  # type: ignore[attr-defined]
    assert "falling back to polling" in report.log_output  # type: ignore[attr-defined]
    assert sample("comfyui_worker_websocket_fallbacks_total") == fallbacks_before + 1
