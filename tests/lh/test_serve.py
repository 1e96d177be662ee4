"""`comfyui-worker serve`, the production entrypoint, as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME
from lh.fake_server import FakeLittleHorse, decode_report
from lh.serve_process import serve_env, serve_one_task, start_serve

WORKFLOW = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "srv"}},
}


async def test_serve_registers_runs_tasks_and_stops_on_sigterm(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    proc = await start_serve(serve_env(fake, comfyui_mock), tmp_path)
    try:
        async with asyncio.timeout(20):
            while fake.pollers(TASK_NAME) == 0:
                assert proc.returncode is None, await proc.stdout.read()  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
        assert TASK_NAME in fake.task_defs  # serve created the TaskDef itself
        run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        report = decode_report(await fake.await_report(run_id, timeout=15))
        assert report.status == "TASK_SUCCESS", report.error_message
        assert Path(report.output["outputs"][0]).is_file()
        # Claims sized to the GPU: LHW_NUM_WORKER_THREADS defaults to COMFYUI_MAX_IN_FLIGHT.
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = (await proc.stdout.read()).decode()  # type: ignore[union-attr]
    assert "2 task slot(s) per LittleHorse host" in output
    assert "signal received: draining" in output and "drained: exiting" in output


async def test_serve_starts_when_its_new_task_def_is_not_readable_at_once(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    # As on a fresh real server: the TaskDef serve puts is NOT_FOUND for a read or two.
    fake.delay_commits(0.5)
    report, output = await serve_one_task(fake, serve_env(fake, comfyui_mock), tmp_path)
    assert report.status == "TASK_SUCCESS", report.error_message
    assert "NOT_FOUND" not in output


async def test_serve_fails_clearly_when_littlehorse_is_unreachable(
    comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LHC_", "LHW_"))}
    env.update(
        {
            "LHC_API_HOST": "127.0.0.1",
            "LHC_API_PORT": "9",
            "COMFYUI_BASE_URL": comfyui_mock.url,
            "COMFYUI_OUTPUT_DIR": str(comfyui_mock.output_dir),
            "COMFYUI_TEMP_DIR": str(comfyui_mock.temp_dir),
            "COMFYUI_WORKER_HEALTH_PORT": "0",
        }
    )
    proc = await start_serve(env, tmp_path)
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode == 5  # unavailable: a supervisor's retry may find it
    assert b"comfyui-worker: error:" in out and b"UNAVAILABLE" in out


async def test_serve_with_credentials_that_may_not_write_task_defs(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    env = serve_env(fake, comfyui_mock)
    # An admin registered the TaskDefs; the worker's own credentials may only run tasks.
    register = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfyui_worker.cli", "register", env=env, cwd=tmp_path
    )
    assert await register.wait() == 0
    fake.refuse_put_task_def(grpc.StatusCode.PERMISSION_DENIED)
    report, output = await serve_one_task(fake, env, tmp_path)
    assert report.status == "TASK_SUCCESS", report.error_message
    assert "PERMISSION_DENIED" in output and "exists with this worker's signature" in output
