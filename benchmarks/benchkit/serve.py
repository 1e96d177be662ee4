"""The `serve` side: a real `comfyui-worker serve` process under the fake LittleHorse server,
timed from the scheduler's side (task dispatched -> report received)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from comfyui_worker.constants import TASK_NAME
from lh.fake_server import FakeLittleHorse, decode_report
from lh.serve_process import terminate

from .comfy import JOB_TIMEOUT, Target, tiny_workflow

START_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Serve:
    fake: FakeLittleHorse
    pid: int
    max_in_flight: int


def serve_env(target: Target, fake: FakeLittleHorse, max_in_flight: int) -> dict[str, str]:
    """Defaults for everything but where ComfyUI and LittleHorse are and the in-flight limit:
    the figures are those of an out-of-the-box worker. Python writes its bytecode cache, as
    the Docker image has it (without it every start compiles every module again, and the
    compiler's leftovers stay in serve's memory: about 5 MB)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LHC_", "LHW_", "COMFYUI_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        {
            "LHC_API_HOST": fake.host,
            "LHC_API_PORT": str(fake.port),
            "COMFYUI_BASE_URL": target.url,
            "COMFYUI_OUTPUT_DIR": str(target.output_dir),
            "COMFYUI_TEMP_DIR": str(target.temp_dir),
            "COMFYUI_MAX_IN_FLIGHT": str(max_in_flight),
            # The health server is on out of the box; a free port, not 8000, on a shared host.
            "COMFYUI_WORKER_HEALTH_PORT": str(free_port()),
        }
    )
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_process(target: Target, max_in_flight: int, workdir: Path) -> AsyncIterator[Serve]:
    """`comfyui-worker serve` with its own fake LittleHorse, once it polls for tasks."""
    log_path = workdir / f"serve-{max_in_flight}.log"
    with FakeLittleHorse() as fake, log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "comfyui_worker.cli",
            "serve",
            env=serve_env(target, fake, max_in_flight),
            cwd=workdir,  # no stray .env file
            stdout=log,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while fake.pollers(TASK_NAME) == 0:
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"comfyui-worker serve is not polling: {log_path.read_text()[-2000:]}"
                    )
                await asyncio.sleep(0.02)
            yield Serve(fake, proc.pid, max_in_flight)
        finally:
            await terminate(proc)


async def task_job(serve: Serve) -> tuple[float, str, float]:
    """One task, dispatch to report: (milliseconds, its prompt id, wall time of the report)."""
    start = time.time()
    run_id = serve.fake.schedule_task(TASK_NAME, {"workflow": tiny_workflow()})
    report = decode_report(await serve.fake.await_report(run_id, timeout=JOB_TIMEOUT))
    if not report.succeeded:
        raise RuntimeError(f"task failed: {report.error_message or report.exception_message}")
    arrived = serve.fake.reported_at(run_id)
    assert arrived is not None
    return (arrived - start) * 1000, str(report.output["prompt_id"]), arrived


async def lh_burst(serve: Serve, count: int) -> tuple[float, list[str]]:
    """`count` tasks dispatched at once; jobs/s from dispatch to the last report, and the
    prompt ids they ran as."""
    start = time.time()
    run_ids = [
        serve.fake.schedule_task(TASK_NAME, {"workflow": tiny_workflow()}) for _ in range(count)
    ]
    prompt_ids = []
    for run_id in run_ids:
        report = decode_report(await serve.fake.await_report(run_id, timeout=JOB_TIMEOUT + count))
        if not report.succeeded:
            raise RuntimeError(f"task failed: {report.error_message or report.exception_message}")
        prompt_ids.append(str(report.output["prompt_id"]))
    end = max(t for r in run_ids if (t := serve.fake.reported_at(r)) is not None)
    return count / (end - start), prompt_ids


async def idle_usage(pid: int, seconds: float) -> tuple[list[float], float]:
    """Resident memory (MB, sampled 10 times a second) and CPU (% of one core) of an idle
    process over `seconds`, from /proc (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    rss: list[float] = []
    cpu_start, start = _cpu_ticks(pid), time.monotonic()
    while time.monotonic() - start < seconds:
        rss.append(_rss_mb(pid))
        await asyncio.sleep(0.1)
    cpu = (_cpu_ticks(pid) - cpu_start) / ticks / (time.monotonic() - start) * 100
    return rss, cpu


def process_cpu_s(pid: int) -> float:
    """CPU seconds all threads of a process have used, to the nanosecond (Linux schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
