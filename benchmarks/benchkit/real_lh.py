"""Through a real LittleHorse server (the harness of `tests/littlehorse/`, or one you run):
WfRuns of a one-task WfSpec run by `comfyui-worker serve`, the same WfSpec shape with a task
that does nothing run by the SDK's own `LHTaskWorker` (LittleHorse's floor), and bursts of
WfRuns started at once, all in a tenant of the run's own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from harness import RealLittleHorse, retry_rpc
from harness_jvm import HOST
from littlehorse.config import LHConfig
from littlehorse.model import (
    LHStatus,
    ListTaskRunsRequest,
    PutTenantRequest,
    RunWfRequest,
    TaskAttempt,
    TaskDefId,
    TenantId,
    WfRun,
    WfRunId,
)
from littlehorse.model.service_pb2_grpc import LittleHorseStub
from littlehorse.utils import to_variable_value
from littlehorse.workflow import Workflow
from wf_specs import one_task_workflow, put_wf_spec

from comfyui_worker.constants import TASK_NAME
from lh.serve_process import terminate

from .comfy import JOB_TIMEOUT, Target, tiny_workflow
from .serve import free_port

NOOP_TASK = "bench-noop-task"
SERVE_WF_SPEC = "bench-comfyui"
NOOP_WF_SPEC = "bench-noop"
NOOP_WORKER = Path(__file__).with_name("noop_worker.py")
START_TIMEOUT = 60.0
# How often a WfRun is looked at while it runs: often enough for the figures to be within a
# millisecond or two, seldom enough not to load the server that is being measured.
POLL_SECONDS = 0.002
BURST_POLL_SECONDS = 0.02
TERMINAL = (LHStatus.COMPLETED, LHStatus.ERROR, LHStatus.EXCEPTION, LHStatus.HALTED)


@dataclass
class RealLH:
    host: str
    port: int
    tenant: str
    stub: LittleHorseStub  # asyncio channel, in the tenant

    def env(self) -> dict[str, str]:
        """The process environment of a client of this server in this tenant, without the
        shell's LHC_*/LHW_*/COMFYUI_* (a shell set up for another cluster changes nothing)."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LHC_", "LHW_", "COMFYUI_")) and k != "PYTHONDONTWRITEBYTECODE"
        }
        env.update(
            {
                "LHC_API_HOST": self.host,
                "LHC_API_PORT": str(self.port),
                "LHC_API_PROTOCOL": "PLAINTEXT",
                "LHC_TENANT_ID": self.tenant,
            }
        )
        return env

    def config(self) -> LHConfig:
        """An LHConfig for this server and tenant whatever LHC_* the process has (LHConfig
        reads the environment in its constructor and lets it win over load())."""
        config = LHConfig()
        config._configs = {k: v for k, v in self.env().items() if k.startswith("LHC_")}
        return config


def _lh_config(host: str, port: int, tenant: str | None = None) -> LHConfig:
    config = LHConfig()
    config._configs = {
        "LHC_API_HOST": host,
        "LHC_API_PORT": str(port),
        "LHC_API_PROTOCOL": "PLAINTEXT",
        **({"LHC_TENANT_ID": tenant} if tenant else {}),
    }
    return config


def _create_tenant(host: str, port: int, tenant: str) -> None:
    stub = _lh_config(host, port).stub()
    retry_rpc(lambda: stub.PutTenant(PutTenantRequest(id=tenant), timeout=5), timeout=60)
    retry_rpc(lambda: stub.GetTenant(TenantId(id=tenant), timeout=5), timeout=30)


@contextlib.asynccontextmanager
async def real_littlehorse(address: str | None) -> AsyncIterator[RealLH]:
    """The server at `address` (host:port), or one started here with its Kafka (a JDK 25 and
    the jars are needed; see tests/littlehorse/README.md); a fresh tenant on it."""
    started: RealLittleHorse | None = None
    if address is None:
        started = RealLittleHorse()
        await asyncio.to_thread(started.start)
        host, port = HOST, started.server.port
    else:
        name, _, number = address.rpartition(":")
        host, port = name or HOST, int(number)
    try:
        tenant = f"bench-{uuid.uuid4().hex[:10]}"
        await asyncio.to_thread(_create_tenant, host, port, tenant)
        channel = _lh_config(host, port, tenant).establish_channel(async_channel=True)
        try:
            yield RealLH(host, port, tenant, LittleHorseStub(channel))
        finally:
            await channel.close()
    finally:
        if started is not None:
            await asyncio.to_thread(started.stop)


@dataclass(frozen=True, slots=True)
class Worker:
    """A process serving a WfSpec's task: `serve` or the no-op LHTaskWorker."""

    pid: int
    wf_spec: str


@contextlib.asynccontextmanager
async def _process(
    args: list[str], env: dict[str, str], log_path: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *args, env=env, cwd=log_path.parent, stdout=log, stderr=log
        )
        try:
            yield proc
        finally:
            await terminate(proc)


async def _wait_ready(proc: asyncio.subprocess.Process, url: str, log_path: Path) -> None:
    """Until `serve`'s /readyz is 200: ComfyUI answers and a poll stream is open."""
    deadline = time.monotonic() + START_TIMEOUT
    async with httpx.AsyncClient(timeout=1.0) as http:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    return
            if proc.returncode is not None or time.monotonic() > deadline:
                log = await asyncio.to_thread(log_path.read_text)
                raise RuntimeError(f"serve is not ready: {log[-2000:]}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def serve_on_real_lh(
    lh: RealLH, target: Target, max_in_flight: int, workdir: Path
) -> AsyncIterator[Worker]:
    """`comfyui-worker serve` on the real server, serving only the workflow TaskDef, with the
    defaults for the rest; its WfSpec put once it has registered the TaskDef."""
    health = free_port()
    env = lh.env() | {
        "COMFYUI_BASE_URL": target.url,
        "COMFYUI_OUTPUT_DIR": str(target.output_dir),
        "COMFYUI_TEMP_DIR": str(target.temp_dir),
        "COMFYUI_MAX_IN_FLIGHT": str(max_in_flight),
        "COMFYUI_TASKS": TASK_NAME,
        "COMFYUI_WORKER_HEALTH_HOST": "127.0.0.1",
        "COMFYUI_WORKER_HEALTH_PORT": str(health),
    }
    log_path = workdir / f"serve-real-{max_in_flight}.log"
    args = [sys.executable, "-m", "comfyui_worker.cli", "serve"]
    async with _process(args, env, log_path) as proc:
        await _wait_ready(proc, f"http://127.0.0.1:{health}/readyz", log_path)
        await asyncio.to_thread(put_wf_spec, lh.config(), _workflow(SERVE_WF_SPEC, TASK_NAME))
        yield Worker(proc.pid, SERVE_WF_SPEC)


@contextlib.asynccontextmanager
async def noop_worker(lh: RealLH, workdir: Path) -> AsyncIterator[Worker]:
    """The SDK's LHTaskWorker with a task that returns at once, and its WfSpec."""
    log_path = workdir / "noop-worker.log"
    args = [sys.executable, str(NOOP_WORKER), NOOP_TASK]
    async with _process(args, lh.env(), log_path) as proc:
        config = lh.config()
        stub = config.stub()

        def registered() -> None:
            retry_rpc(lambda: stub.GetTaskDef(TaskDefId(name=NOOP_TASK), timeout=5), timeout=60)

        await asyncio.to_thread(registered)
        await asyncio.to_thread(put_wf_spec, config, _workflow(NOOP_WF_SPEC, NOOP_TASK))
        if proc.returncode is not None:
            log = await asyncio.to_thread(log_path.read_text)
            raise RuntimeError(f"the no-op worker exited: {log[-2000:]}")
        yield Worker(proc.pid, NOOP_WF_SPEC)


def _workflow(name: str, task_def: str) -> Workflow:
    # No retries: a failed task is a failed benchmark, reported as such.
    return one_task_workflow(name, task_def, timeout_seconds=int(JOB_TIMEOUT))


async def _run_wf(lh: RealLH, wf_spec: str) -> str:
    wf_run_id = f"b-{uuid.uuid4().hex}"
    request = RunWfRequest(
        wf_spec_name=wf_spec,
        id=wf_run_id,
        variables={"workflow": to_variable_value(tiny_workflow())},
    )
    await lh.stub.RunWf(request, timeout=10)
    return wf_run_id


async def _ended(lh: RealLH, wf_run_id: str, poll: float, timeout: float) -> WfRun:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        wf_run: WfRun = await lh.stub.GetWfRun(WfRunId(id=wf_run_id), timeout=10)
        if wf_run.status in TERMINAL:
            if wf_run.status != LHStatus.COMPLETED:
                raise RuntimeError(f"WfRun {wf_run_id} ended {LHStatus.Name(wf_run.status)}")
            return wf_run
        if time.monotonic() > deadline:
            raise RuntimeError(f"WfRun {wf_run_id} still {LHStatus.Name(wf_run.status)}")
        await asyncio.sleep(poll)


async def _ended_attempt(lh: RealLH, wf_run_id: str) -> TaskAttempt:
    """The WfRun's one task attempt, once the TaskRun shows it ended: for a moment after
    GetWfRun says COMPLETED, ListTaskRuns can still show the attempt TASK_RUNNING."""
    deadline = time.monotonic() + 10
    while True:
        runs = await lh.stub.ListTaskRuns(
            ListTaskRunsRequest(wf_run_id=WfRunId(id=wf_run_id)), timeout=10
        )
        (attempt,) = runs.results[0].attempts
        if attempt.HasField("end_time"):
            return attempt
        if time.monotonic() > deadline:
            raise RuntimeError(f"WfRun {wf_run_id} ended, its task attempt still shows no end")
        await asyncio.sleep(0.01)


def _seconds(stamp: object) -> float:
    return stamp.seconds + stamp.nanos / 1e9  # type: ignore[attr-defined]


async def timed_wf_run(lh: RealLH, worker: Worker) -> tuple[float, float, float]:
    """One WfRun: milliseconds from RunWf to GetWfRun saying COMPLETED; on the server's own
    clock (whole milliseconds) from the WfRun's start to its end, and its task attempt's start
    (the server's claim, before the claim goes through Kafka and the task to the worker) to
    its end (the time the worker's report carries)."""
    start = time.perf_counter()
    wf_run_id = await _run_wf(lh, worker.wf_spec)
    wf_run = await _ended(lh, wf_run_id, POLL_SECONDS, JOB_TIMEOUT)
    took = (time.perf_counter() - start) * 1000
    attempt = await _ended_attempt(lh, wf_run_id)
    return (
        took,
        (_seconds(wf_run.end_time) - _seconds(wf_run.start_time)) * 1000,
        (_seconds(attempt.end_time) - _seconds(attempt.start_time)) * 1000,
    )


async def wf_run_burst(lh: RealLH, worker: Worker, count: int) -> float:
    """`count` WfRuns started at once (concurrent RunWf calls); WfRuns/s from the first
    RunWf to the end of the last WfRun (the server's end_time: this host's clock)."""
    start = time.time()
    wf_run_ids = await asyncio.gather(*(_run_wf(lh, worker.wf_spec) for _ in range(count)))
    ends = [
        _seconds((await _ended(lh, wf_run_id, BURST_POLL_SECONDS, JOB_TIMEOUT + count)).end_time)
        for wf_run_id in wf_run_ids
    ]
    return count / (max(ends) - start)
