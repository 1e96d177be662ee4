"""`comfyui-worker serve` as a real process, for tests of what the process does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME
from lh.fake_server import FakeLittleHorse, TaskReport, decode_report

# A small job that saves one image: the task every process test runs.
WORKFLOW = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "lh/job"}},
}


def serve_env(fake: FakeLittleHorse, mock: MockHandle, **settings: str) -> dict[str, str]:
    """The environment of a serve process for `fake` and `mock`; `settings` adds or overrides
    variables (e.g. COMFYUI_SHUTDOWN_GRACE="5")."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LHC_", "LHW_", "COMFYUI_"))}
    env.update(
        {
            "LHC_API_HOST": fake.host,
            "LHC_API_PORT": str(fake.port),
            "COMFYUI_BASE_URL": mock.url,
            "COMFYUI_OUTPUT_DIR": str(mock.output_dir),
            "COMFYUI_TEMP_DIR": str(mock.temp_dir),
            "COMFYUI_INPUT_DIR": str(mock.input_dir),
            # Off unless a test asks for it: the default port 8000 may be taken here.
            "COMFYUI_WORKER_HEALTH_PORT": "0",
        }
    )
    env.update(settings)
    return env


async def start_serve(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    """Start `comfyui-worker serve`; stdout and stderr go to one pipe."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "comfyui_worker.cli",
        "serve",
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def wait_polling(
    proc: asyncio.subprocess.Process,
    fake: FakeLittleHorse,
    task_def_name: str,
    pollers: int = 1,
    timeout: float = 30,  # noqa: ASYNC109
) -> None:
    """Wait until `pollers` poll streams are open; fail with the output if the process died."""
    async with asyncio.timeout(timeout):
        while fake.pollers(task_def_name) < pollers:
            if proc.returncode is not None:
                assert proc.stdout is not None
                raise AssertionError((await proc.stdout.read()).decode())
            await asyncio.sleep(0.05)


async def serve_one_task(
    fake: FakeLittleHorse, env: dict[str, str], cwd: Path
) -> tuple[TaskReport, str]:
    """Start `serve`, run one `execute-comfyui-workflow` task through it (WORKFLOW), stop it:
    the report and everything the process printed."""
    proc = await start_serve(env, cwd)
    try:
        await wait_polling(proc, fake, TASK_NAME)
        run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
        report = decode_report(await fake.await_report(run_id, timeout=15))
    finally:
        output = await stop_process(proc)
    return report, output


async def stop_process(proc: asyncio.subprocess.Process) -> str:
    """Kill the process if it still runs; return everything it printed."""
    if proc.returncode is None:
        proc.kill()
        await proc.wait()
    assert proc.stdout is not None
    return (await proc.stdout.read()).decode()


async def terminate(proc: asyncio.subprocess.Process, timeout: float = 10) -> None:  # noqa: ASYNC109
    """SIGTERM (a drain), then SIGKILL if the process is still there after `timeout` s."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    try:
        async with asyncio.timeout(timeout):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
