"""Readiness gating and warmup: a real `comfyui-worker serve` process claims nothing while
its (mock) ComfyUI does not answer, and resumes soon after it does."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from comfyui_mock.handle import MockHandle
from comfyui_worker.cli import main
from comfyui_worker.constants import TASK_NAME
from comfyui_worker.exceptions import ConfigurationError, InvalidWorkflowError
from comfyui_worker.lh.readiness import ComfyUIReadiness
from comfyui_worker.lh.worker import serve
from comfyui_worker.observability.metrics import REGISTRY
from lh.fake_server import FakeLittleHorse, decode_report
from lh.serve_process import WORKFLOW, serve_env, start_serve, stop_process, wait_polling
from mock_settings import executor_for, settings_for

WARMUP = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}


def warmup_file(tmp_path: Path, workflow: object = WARMUP) -> Path:
    path = tmp_path / "warmup.json"
    path.write_text(json.dumps(workflow))
    return path


async def claim_after(fake: FakeLittleHorse, since: float, timeout: float = 20) -> float:  # noqa: ASYNC109
    """Seconds after `since` at which the next task was claimed."""
    before = len(fake.handouts)
    async with asyncio.timeout(timeout):
        while len(fake.handouts) == before:
            await asyncio.sleep(0.02)
    return fake.handouts[before].at - since


async def test_waits_for_comfyui_before_the_first_claim_and_gates_on_outages(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    # ComfyUI is down when serve starts.
    down = asyncio.create_task(asyncio.to_thread(comfyui_mock.restart, 4.0))
    await asyncio.sleep(0.3)
    proc = await start_serve(serve_env(fake, comfyui_mock), tmp_path)
    try:
        first = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await asyncio.sleep(2)  # registered and connected to LittleHorse, but not claiming
        assert fake.handed_out == 0 and fake.pollers(TASK_NAME) == 0
        await down
        up = time.monotonic()
        assert await claim_after(fake, up) < 2.0
        assert decode_report(await fake.await_report(first, timeout=15)).succeeded
        # An outage while serving: claims stop, and resume once ComfyUI answers again.
        down = asyncio.create_task(asyncio.to_thread(comfyui_mock.restart, 4.0))
        async with asyncio.timeout(10):
            while fake.pollers(TASK_NAME):
                await asyncio.sleep(0.05)
        second = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await asyncio.sleep(0.5)
        assert fake.handed_out == 1
        await down
        up = time.monotonic()
        assert await claim_after(fake, up) < 2.0
        assert decode_report(await fake.await_report(second, timeout=15)).succeeded
    finally:
        output = await stop_process(proc)
    assert "waiting for ComfyUI at" in output
    assert "does not answer: claiming no tasks until it does" in output


async def test_a_task_reaching_serve_while_comfyui_stays_down_fails_after_comfyui_ready_wait(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    """The task LittleHorse claimed for the last poll before the gate closed arrives after it:
    it waits COMFYUI_READY_WAIT for ComfyUI, then fails retryably without reaching it."""
    proc = await start_serve(serve_env(fake, comfyui_mock, COMFYUI_READY_WAIT="1.5"), tmp_path)
    try:
        await wait_polling(proc, fake, TASK_NAME)
        fake.hold_handouts()
        run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        async with asyncio.timeout(10):
            while fake.handed_out == 0:
                await asyncio.sleep(0.02)
        down = asyncio.create_task(asyncio.to_thread(comfyui_mock.restart, 8.0))
        async with asyncio.timeout(10):
            while fake.pollers(TASK_NAME):
                await asyncio.sleep(0.02)
        fake.release_handouts()
        released = time.monotonic()
        report = decode_report(await fake.await_report(run_id, timeout=15))
        waited = time.monotonic() - released
        assert report.status == "TASK_FAILED" and report.exception_name is None
        assert "COMFYUI_READY_WAIT" in (report.error_message or ""), report.error_message
        assert 1.4 <= waited < 5
        await down
        assert comfyui_mock.request_count("/prompt", "POST") == 0
    finally:
        output = await stop_process(proc)
    assert "claimed while ComfyUI does not answer" in output


async def test_warmup_runs_before_the_first_claim_and_after_a_comfyui_restart(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    # The first warmup fails on a transient 5xx and is retried.
    comfyui_mock.fail_http(count=4, path="POST /prompt", status=503)
    env = serve_env(
        fake,
        comfyui_mock,
        COMFYUI_WARMUP_WORKFLOW=str(warmup_file(tmp_path)),
        COMFYUI_RETRIES="0",
    )
    proc = await start_serve(env, tmp_path)
    try:
        run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        await wait_polling(proc, fake, TASK_NAME)
        assert decode_report(await fake.await_report(run_id, timeout=15)).succeeded
        submits = comfyui_mock.request_count("/prompt", "POST")
        assert submits >= 2  # the warmup (after its failures) and the task
        # After an outage the warmup runs again before anything is claimed.
        await asyncio.to_thread(comfyui_mock.restart, 2.0)
        again = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        assert decode_report(await fake.await_report(again, timeout=20)).succeeded
        assert comfyui_mock.request_count("/prompt", "POST") == submits + 2
    finally:
        output = await stop_process(proc)
    assert "warmup workflow" in output and "failed" in output and "retrying in" in output
    assert output.count("warmup done in") == 2
    # Order: folders checked, warmup done, then the first task claimed.
    assert output.index("is ComfyUI's temp folder (checked)") < output.index("warmup done in")
    assert output.index("warmup done in") < output.index("claiming tasks")


async def test_a_warmup_that_cannot_succeed_is_logged_and_claims_start(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    comfyui_mock.fail_node("2", message="preview broke", exception_type="ValueError")
    env = serve_env(fake, comfyui_mock, COMFYUI_WARMUP_WORKFLOW=str(warmup_file(tmp_path)))
    proc = await start_serve(env, tmp_path)
    try:
        await wait_polling(proc, fake, TASK_NAME)
        run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        assert decode_report(await fake.await_report(run_id, timeout=15)).succeeded
    finally:
        output = await stop_process(proc)
    assert "(COMFYUI_WARMUP_WORKFLOW) cannot succeed" in output and "preview broke" in output


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "No such file"),
        ({"nodes": [], "links": []}, "UI format"),
        ("{", "not valid JSON"),
        # Over COMFYUI_MAX_WORKFLOW_BYTES (set below): serve would fail to load it later.
        ({**WARMUP, "3": {"class_type": "Note", "inputs": {"text": "x" * 2000}}}, "bytes"),
    ],
)
def test_a_bad_warmup_file_is_a_configuration_error_naming_the_variable(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    content: object,
    problem: str,
) -> None:
    path = tmp_path / "warmup.json"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_text(json.dumps(content))
    monkeypatch.setenv("COMFYUI_WARMUP_WORKFLOW", str(path))
    monkeypatch.setenv("COMFYUI_MAX_WORKFLOW_BYTES", "1000")
    assert main(["serve"]) == 3
    err = capsys.readouterr().err
    assert "invalid configuration: COMFYUI_WARMUP_WORKFLOW:" in err and problem in err


async def test_serve_stops_with_the_error_when_the_readiness_watch_fails(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    """The watch that opens the gate failing (here: its warmup file gone since the settings
    were read) must end serve with the error, not leave it running and claiming nothing."""
    settings = settings_for(comfyui_mock, worker_health_port=0).model_copy(
        update={"warmup_workflow": tmp_path / "gone.json"}
    )
    with pytest.raises(InvalidWorkflowError, match=r"gone\.json"):
        async with asyncio.timeout(20):
            await serve(settings, fake.config())


async def test_the_readiness_check_publishes_comfyui_s_queue_depth(
    comfyui_mock: MockHandle,
) -> None:
    """What an autoscaler reads: every prompt ComfyUI holds, whoever submitted it."""
    comfyui_mock.set_job_delay(1.5)
    async with executor_for(comfyui_mock) as executor, httpx.AsyncClient() as http:
        readiness = ComfyUIReadiness(executor)
        watching = asyncio.create_task(readiness.run())
        try:
            for color in (1, 2):
                prompt = {**WARMUP, "1": {**WARMUP["1"], "inputs": {**WARMUP["1"]["inputs"]}}}
                prompt["1"]["inputs"]["color"] = color
                answer = await http.post(f"{comfyui_mock.url}/prompt", json={"prompt": prompt})
                assert answer.status_code == 200
            depth = "comfyui_worker_comfyui_queue_remaining"
            async with asyncio.timeout(5):
                while REGISTRY.get_sample_value(depth) != 2:
                    await asyncio.sleep(0.05)
            assert readiness.ready
            async with asyncio.timeout(10):
                while REGISTRY.get_sample_value(depth) != 0:
                    await asyncio.sleep(0.05)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)


@pytest.mark.parametrize("folder", ["output", "temp"])
async def test_serve_stops_before_any_claim_when_a_folder_is_not_comfyuis(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, folder: str
) -> None:
    """ComfyUI's `--temp-directory X` keeps its files in X/temp: the setting X (or the
    base folder for output) is found at start, not at the first job with a preview."""
    theirs = getattr(comfyui_mock, f"{folder}_dir")
    settings = settings_for(comfyui_mock, worker_health_port=0, **{f"{folder}_dir": theirs.parent})
    fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
    with pytest.raises(ConfigurationError) as info:
        async with asyncio.timeout(10):
            await serve(settings, fake.config())
    message = str(info.value)
    variable = f"COMFYUI_{folder.upper()}_DIR"
    assert f"{variable}={theirs.parent} is not ComfyUI's {folder} folder" in message
    assert f"set {variable}={theirs}" in message
    assert fake.handed_out == 0
