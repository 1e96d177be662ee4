"""The soak's cluster: real `comfyui-worker serve` processes, mock ComfyUI servers and the fake
LittleHorse server, and the faults injected into them."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO

from littlehorse.model import TaskRunId

from comfyui_mock import MockComfyUIThread
from lh.fake_server import FakeLittleHorse, StreamEnd, task_run_key
from lh.serve_process import serve_env

SHUTDOWN_GRACE = 2.0
COMFYUI_DOWNTIME = 5.0
JOB_DELAY = 0.05


class Fault(StrEnum):
    HTTP_5XX = "5xx on /prompt"
    WS_DROP = "websocket drop mid-run"
    SLOW = "slow answers"
    COMFYUI_RESTART = "mock ComfyUI restart"
    LH_RESTART_UNAVAILABLE = "LittleHorse restart (streams UNAVAILABLE)"
    LH_RESTART_OK = "LittleHorse restart (streams OK)"
    SIGTERM = "SIGTERM of a worker + restart"
    SIGKILL = "SIGKILL of a worker + redelivery"


@dataclass
class Outage:
    mock: int
    down: float
    up: float


@dataclass
class Worker:
    slot: int
    mock: int
    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    _log: IO[bytes] | None = None
    _log_start: int = 0  # where this run's lines begin in the log file

    @property
    def client_id(self) -> str:
        return self.env["LHW_TASK_WORKER_ID"]

    async def start(self) -> None:
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "comfyui_worker.cli",
            "serve",
            env=self.env,
            cwd=self.log_path.parent,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )

    async def serving(self, timeout: float = 60) -> None:  # noqa: ASYNC109
        """Wait until this run logged that it serves: its signal handlers are in place from
        then on (a SIGTERM while it still imports ends it like any process, exit -15)."""
        async with asyncio.timeout(timeout):
            while b"serving '" not in self.log_path.read_bytes()[self._log_start :]:
                await asyncio.sleep(0.1)

    async def stop(self, sig: signal.Signals, timeout: float) -> int:  # noqa: ASYNC109
        assert self.proc is not None and self._log is not None
        self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            self._log.close()
        return code


@dataclass
class Cluster:
    fake: FakeLittleHorse
    mocks: list[MockComfyUIThread]
    workers: list[Worker]
    rng: random.Random
    faults: Counter[Fault] = field(default_factory=Counter)
    outages: list[Outage] = field(default_factory=list)
    mock_restarts: list[tuple[int, float]] = field(default_factory=list)
    redeliveries: list[tuple[TaskRunId, int]] = field(default_factory=list)
    bad_exits: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls, fake: FakeLittleHorse, mocks: list[MockComfyUIThread], workers: int, root: Path
    ) -> Cluster:
        cluster = cls(fake, mocks, [], random.Random(7))
        for slot in range(workers):
            index = slot % len(mocks)
            env = serve_env(
                fake,
                mocks[index],  # type: ignore[arg-type]
                LHW_TASK_WORKER_ID=f"soak-worker-{slot}",
                COMFYUI_SHUTDOWN_GRACE=str(SHUTDOWN_GRACE),
                COMFYUI_JOB_DEADLINE="20",
                COMFYUI_RECONCILE_INTERVAL="1",
                COMFYUI_POLL_INTERVAL="0.05",
                COMFYUI_REQUEST_TIMEOUT="5",
                COMFYUI_RETRIES="2",
                COMFYUI_BACKOFF_BASE="0.05",
                COMFYUI_BACKOFF_MAX="0.2",
            )
            cluster.workers.append(Worker(slot, index, env, root / f"worker-{slot}.log"))
        return cluster

    def workers_on(self, mock: int) -> list[Worker]:
        return [w for w in self.workers if w.mock == mock]

    async def inject(self, fault: Fault) -> None:
        self.faults[fault] += 1
        mock_index = self.rng.randrange(len(self.mocks))
        mock = self.mocks[mock_index]
        if fault is Fault.HTTP_5XX:
            mock.fail_http(count=self.rng.randint(1, 4), path="POST /prompt", status=500)
        elif fault is Fault.WS_DROP:
            mock.drop_websockets(after_events=self.rng.randint(2, 6))
        elif fault is Fault.SLOW:
            mock.set_response_delay(0.3)
            await asyncio.sleep(2)
            mock.set_response_delay(0.0)
        elif fault is Fault.COMFYUI_RESTART:
            down = time.monotonic()
            self.mock_restarts.append((mock_index, down))
            await asyncio.to_thread(mock.restart, COMFYUI_DOWNTIME)
            self.outages.append(Outage(mock_index, down, time.monotonic()))
        elif fault is Fault.LH_RESTART_UNAVAILABLE:
            await asyncio.to_thread(self.fake.restart, downtime=1.0)
        elif fault is Fault.LH_RESTART_OK:
            await asyncio.to_thread(self.fake.restart, end_streams=StreamEnd.OK)
        else:
            await self._signal_worker(fault)

    async def _signal_worker(self, fault: Fault) -> None:
        """Signal a worker in the middle of a task: its ComfyUI is slowed down so that the
        task runs past the signal, sometimes finishing inside the grace, sometimes not."""
        worker = self.rng.choice(self.workers)
        await worker.serving()
        mock = self.mocks[worker.mock]
        mock.set_job_delay(self.rng.choice([1.0, 1.0, SHUTDOWN_GRACE + 2.0]))
        try:
            async with asyncio.timeout(5):
                while worker.client_id not in self._busy_clients():
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pass  # idle: signal it anyway
        await asyncio.sleep(0.3)
        if fault is Fault.SIGTERM:
            started = time.monotonic()
            code = await worker.stop(signal.SIGTERM, SHUTDOWN_GRACE + 15)
            took = time.monotonic() - started
            if code != 0 or took > SHUTDOWN_GRACE + 8:
                self.bad_exits.append(f"{worker.client_id}: SIGTERM -> exit {code} in {took:.1f} s")
        else:
            await worker.stop(signal.SIGKILL, 10)
            await asyncio.sleep(0.3)  # its poll streams are gone
            # LittleHorse times out what the dead worker held and redelivers it.
            self.redeliveries += self.fake.time_out(client_id=worker.client_id)
        mock.set_job_delay(JOB_DELAY)
        await worker.start()

    def _busy_clients(self) -> set[str | None]:
        """Client ids holding an attempt not reported yet."""
        reported = {(task_run_key(r.task_run_id), r.attempt_number) for r in self.fake.reports}
        return {
            h.client_id
            for h in self.fake.handouts[-50:]
            if (h.key, h.attempt_number) not in reported
        }

    async def stop_all(self) -> None:
        for worker in self.workers:
            # One restarted by the last fault may still be starting: its drain is the test.
            await worker.serving()
            code = await worker.stop(signal.SIGTERM, SHUTDOWN_GRACE + 15)
            if code != 0:
                self.bad_exits.append(f"{worker.client_id}: final SIGTERM -> exit {code}")
