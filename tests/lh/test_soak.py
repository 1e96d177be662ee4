"""Fault soak: three real `comfyui-worker serve` processes, two mock ComfyUI servers and the
fake LittleHorse server, tasks dispatched at random while every kind of fault is injected.

The test plays LittleHorse's scheduler and the WfSpec's retry policy: a TASK_FAILED attempt
is retried (up to MAX_ATTEMPTS), a business exception or a success ends the task, and an
attempt held by a killed worker is timed out and redelivered. Short by default (500 tasks,
part of the plain test run); `SOAK_TASKS=5000 uv run pytest -m soak` for the long form.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from littlehorse.model import TaskRunId

from comfyui_mock import MockComfyUIThread
from comfyui_worker.constants import TASK_NAME
from lh.fake_server import FakeLittleHorse, decode_report, task_run_key
from lh.identities import prompt_id_of
from lh.soak import JOB_DELAY, Cluster, Fault

TASKS = int(os.environ.get("SOAK_TASKS", "500"))
WORKERS = 3
MOCKS = 2
CONCURRENCY = 12
MAX_ATTEMPTS = 12
# An attempt handed to a worker must be reported within this (job deadline 20 s + grace).
ATTEMPT_DEADLINE = 45.0
# How soon after ComfyUI stops answering its workers must stop claiming.
GATE_SLACK = 2.5
FAULT_GAP = 1.5
# Rounds of every fault kind (in random order) at least, however fast the tasks go.
FAULT_ROUNDS = 2

pytestmark = [pytest.mark.soak, pytest.mark.timeout(120 + TASKS * 0.4)]


class Kind(StrEnum):
    OK = "ok"
    OUT_OF_MEMORY = "out of memory once per ComfyUI"
    INVALID = "invalid workflow"
    VALIDATION = "validation error"
    EXECUTION = "execution error"


EXPECTED = {
    Kind.OK: "success",
    Kind.OUT_OF_MEMORY: "success",
    Kind.INVALID: "comfyui-invalid-workflow",
    Kind.VALIDATION: "comfyui-validation-error",
    Kind.EXECUTION: "comfyui-execution-error",
}


@dataclass
class Task:
    index: int
    kind: Kind
    run_id: TaskRunId
    attempt: int = 0
    # The status first reported for each attempt.
    statuses: dict[int, str] = field(default_factory=dict)
    outcome: str | None = None
    ended_at_attempt: int | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None


def workflow(kind: Kind, i: int) -> dict[str, Any]:
    if kind is Kind.INVALID:
        return {"nodes": [], "links": [], "version": 0.4}
    inputs: dict[str, Any] = {"width": 8, "height": 8, "batch_size": 1, "color": i}
    if kind is Kind.VALIDATION:
        del inputs["width"]
    return {
        "1": {"class_type": "EmptyImage", "inputs": inputs},
        f"s{i}": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": f"soak/t{i}"},
        },
    }


class Ledger:
    """Every task's attempts and outcome, from the reports the fake received."""

    def __init__(self, fake: FakeLittleHorse, cluster: Cluster) -> None:
        self.fake = fake
        self.cluster = cluster
        self.tasks: dict[tuple[str, str], Task] = {}
        self.anomalies: list[str] = []
        self.late_reports = 0
        self.duplicate_reports = 0
        self.cut_by_grace = 0
        self._seen_reports = 0
        self._seen_redeliveries = 0

    def dispatch(self, i: int, kind: Kind, mocks: list[MockComfyUIThread]) -> None:
        if kind is Kind.EXECUTION:
            for mock in mocks:
                mock.fail_node(f"s{i}", "bad tensor shape", "ValueError", times=None)
        elif kind is Kind.OUT_OF_MEMORY:
            for mock in mocks:
                mock.fail_node(f"s{i}", "CUDA out of memory", "torch.OutOfMemoryError", times=1)
        run_id = self.fake.schedule_task(TASK_NAME, {"workflow": workflow(kind, i)})
        self.tasks[task_run_key(run_id)] = Task(i, kind, run_id)

    @property
    def open(self) -> int:
        return sum(1 for t in self.tasks.values() if t.outcome is None)

    def update(self) -> None:
        for run_id, attempt in self.cluster.redeliveries[self._seen_redeliveries :]:
            self.tasks[task_run_key(run_id)].attempt = attempt
        self._seen_redeliveries = len(self.cluster.redeliveries)
        reports = self.fake.reports
        for raw in reports[self._seen_reports :]:
            self._record(raw)
        self._seen_reports = len(reports)

    def _record(self, raw: Any) -> None:
        report = decode_report(raw)
        task = self.tasks[task_run_key(report.task_run_id)]
        if self.fake.timed_out(report.task_run_id, report.attempt_number):
            self.late_reports += 1
            return
        seen = task.statuses.get(report.attempt_number)
        task.statuses.setdefault(report.attempt_number, report.status)
        if seen is not None:  # this attempt was reported before
            if seen == report.status:
                # Sent again after LittleHorse lost the answer to the first one (a restart
                # mid-call); the real server ignores a report for a finished attempt.
                self.duplicate_reports += 1
            else:
                self.anomalies.append(
                    f"task {task.index}: attempt {report.attempt_number} reported {seen} "
                    f"and then {report.status}"
                )
            return
        if task.outcome is not None or report.attempt_number != task.attempt:
            self.anomalies.append(
                f"task {task.index}: report {report.status} for attempt "
                f"{report.attempt_number} while at attempt {task.attempt}, outcome {task.outcome}"
            )
            return
        if "COMFYUI_SHUTDOWN_GRACE" in (report.error_message or ""):
            self.cut_by_grace += 1
        if report.status == "TASK_FAILED" and task.attempt + 1 < MAX_ATTEMPTS:
            task.attempt = self.fake.retry_task(task.run_id)
            return
        task.outcome = {
            "TASK_SUCCESS": "success",
            "TASK_EXCEPTION": report.exception_name,
            "TASK_FAILED": f"failed after {MAX_ATTEMPTS} attempts: {report.error_message}",
        }.get(report.status, report.status)
        task.ended_at_attempt = report.attempt_number
        task.finished = time.monotonic()

    def check_hangs(self) -> None:
        now = time.monotonic()
        handed = {(h.key, h.attempt_number): h.at for h in self.fake.handouts}
        for key, task in self.tasks.items():
            if task.outcome is not None:
                continue
            at = handed.get((key, task.attempt))
            if at is not None and now - at > ATTEMPT_DEADLINE:
                raise AssertionError(
                    f"task {task.index} ({task.kind}) attempt {task.attempt} claimed "
                    f"{now - at:.0f} s ago and never reported"
                )
            if at is None and now - task.started > 120:
                raise AssertionError(f"task {task.index} not claimed for {now - task.started} s")


@pytest.fixture
def mocks(tmp_path: Path) -> Iterator[list[MockComfyUIThread]]:
    started = [
        MockComfyUIThread.in_directory(tmp_path / f"comfyui-{i}", job_delay=JOB_DELAY).start()
        for i in range(MOCKS)
    ]
    for mock in started:
        for folder in (mock.output_dir, mock.temp_dir, mock.input_dir):
            folder.mkdir(parents=True, exist_ok=True)
    try:
        yield started
    finally:
        for mock in started:
            mock.stop()


async def test_fault_soak(
    fake: FakeLittleHorse,
    mocks: list[MockComfyUIThread],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cluster = Cluster.build(fake, mocks, WORKERS, tmp_path)
    ledger = Ledger(fake, cluster)
    rng = cluster.rng
    kinds = list(Kind)
    weights = [80, 5, 5, 5, 5]
    rounds_done = asyncio.Event()

    async def inject_faults() -> None:
        rounds = 0
        while True:
            order = list(Fault)
            rng.shuffle(order)
            for fault in order:
                await asyncio.sleep(FAULT_GAP)
                await cluster.inject(fault)
            rounds += 1
            if rounds >= FAULT_ROUNDS:
                rounds_done.set()

    started = time.monotonic()
    for worker in cluster.workers:
        await worker.start()
    injector = asyncio.create_task(inject_faults())
    try:
        # At least TASKS tasks, and more while the rounds of faults are still going, so that
        # every kind of fault hits tasks in flight.
        i = 0
        while i < TASKS or not rounds_done.is_set():
            while ledger.open >= CONCURRENCY:
                ledger.update()
                ledger.check_hangs()
                await asyncio.sleep(0.02)
            ledger.dispatch(i, rng.choices(kinds, weights)[0], mocks)
            i += 1
        while ledger.open:
            ledger.update()
            ledger.check_hangs()
            await asyncio.sleep(0.05)
    finally:
        injector.cancel()
        await asyncio.gather(injector, return_exceptions=True)
        for mock in mocks:
            mock.reset_controls()
        await cluster.stop_all()
    wall = time.monotonic() - started
    tasks = list(ledger.tasks.values())
    with capsys.disabled():
        print(table(tasks, cluster, ledger, wall))

    # Every task reached exactly one terminal outcome, the one its kind calls for.
    assert not ledger.anomalies, ledger.anomalies[:5]
    wrong = [(t.index, t.kind.value, t.outcome) for t in tasks if t.outcome != EXPECTED[t.kind]]
    assert not wrong, wrong[:5]
    # Business errors are never retried: no attempt after the one that reported it.
    for key, task in ledger.tasks.items():
        if task.outcome not in ("success", None):
            assert task.ended_at_attempt == task.attempt
            assert max(h.attempt_number for h in fake.handouts if h.key == key) == task.attempt
    # A prompt that succeeded on a ComfyUI is never executed there again: only a restart of
    # that ComfyUI (history gone) or an injected out-of-memory failure allows another run.
    for task in tasks:
        if task.kind not in (Kind.OK, Kind.OUT_OF_MEMORY):
            continue
        pid = prompt_id_of(task.run_id)
        for index, mock in enumerate(mocks):
            restarts = sum(
                1
                for m, at in cluster.mock_restarts
                if m == index and task.started <= at <= (task.finished or at)
            )
            allowed = 1 + restarts + (task.kind is Kind.OUT_OF_MEMORY)
            assert mock.executions(pid) <= allowed, (task.index, index, mock.executions(pid))
    # No task is claimed by a worker while its ComfyUI does not answer.
    for outage in cluster.outages:
        ids = {w.client_id for w in cluster.workers_on(outage.mock)}
        held = [
            h
            for h in fake.handouts
            if h.client_id in ids and outage.down + GATE_SLACK <= h.at <= outage.up
        ]
        assert not held, (outage, held[:3])
    assert not cluster.bad_exits, cluster.bad_exits
    assert set(cluster.faults) == set(Fault)


def table(tasks: list[Task], cluster: Cluster, ledger: Ledger, wall: float) -> str:
    outcomes = Counter(t.outcome for t in tasks)
    attempts = Counter(t.attempt + 1 for t in tasks)
    kinds = Counter(t.kind for t in tasks)
    lines = [
        "",
        f"fault soak: {len(tasks)} tasks, {len(cluster.workers)} serve processes, "
        f"{len(cluster.mocks)} mock ComfyUI servers, wall {wall:.1f} s",
        "| faults injected | count |",
        "| --- | --- |",
        *(f"| {fault.value} | {cluster.faults[fault]} |" for fault in Fault),
        f"| tasks with an execution error | {kinds[Kind.EXECUTION]} |",
        f"| tasks with out-of-memory (retryable) errors | {kinds[Kind.OUT_OF_MEMORY]} |",
        f"| tasks with an invalid workflow | {kinds[Kind.INVALID]} |",
        f"| tasks with a validation error | {kinds[Kind.VALIDATION]} |",
        f"| attempts redelivered after SIGKILL | {len(cluster.redeliveries)} |",
        f"| attempts reported retryable at SIGTERM past the grace | {ledger.cut_by_grace} |",
        f"| late reports of timed-out attempts | {ledger.late_reports} |",
        f"| reports sent twice (answer lost in a restart) | {ledger.duplicate_reports} |",
        "| outcome | tasks |",
        "| --- | --- |",
        *(f"| {outcome} | {n} |" for outcome, n in sorted(outcomes.items(), key=str)),
        "| attempts per task | tasks |",
        "| --- | --- |",
        *(f"| {n} | {count} |" for n, count in sorted(attempts.items())),
    ]
    return "\n".join(lines)
