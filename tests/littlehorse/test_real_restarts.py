"""The LittleHorse server SIGKILLed and restarted, and Kafka restarted, with tasks in flight in
the worker and more queued in the server: every WfRun completes, no prompt runs twice, and the
time from the server answering again to the worker's next claim is measured."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import LittleHorseServer, RealLittleHorse
from littlehorse.config import LHConfig
from scenario import (
    describe_task_run,
    image_workflow,
    prompt_id,
    register_wf_spec,
    seconds,
    serving,
    started,
    task_runs,
    wait_for,
    wf_status,
)
from wf_runs import run_wf, wait_wf_run
from worker_processes import ServeProcess, worker_env

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME

pytestmark = [pytest.mark.real_littlehorse, pytest.mark.timeout(180, func_only=True)]

WF_SPEC = "restarts"
RUNS = 6
JOB = 1.5  # seconds per prompt in the mock
# A claim the restart lost is retried after this; short, so such a loss costs seconds.
TIMEOUT = 15


def _attempts_started(config: LHConfig, wf_run_ids: list[str]) -> list[float]:
    """When each attempt of these WfRuns' TaskRuns was claimed (server time)."""
    return [
        seconds(attempt.start_time)
        for wf_run_id in wf_run_ids
        for task_run in task_runs(config, wf_run_id)
        for attempt in task_run.attempts
        if started(attempt)
    ]


def _run_through(
    outage: Callable[[], float],
    what: str,
    server: LittleHorseServer,
    tenant: str,
    config: LHConfig,
    mock: MockHandle,
    cwd: Path,
) -> None:
    """RUNS WfRuns, `outage()` (it returns when the server answers again) once some are in
    flight in the worker and the others wait in the server, then every WfRun to its end."""
    mock.set_job_delay(JOB)
    env = worker_env(server, tenant, mock, COMFYUI_TASKS=TASK_NAME, COMFYUI_MAX_IN_FLIGHT="2")
    with serving(env, cwd) as serve:
        register_wf_spec(config, WF_SPEC, timeout_seconds=TIMEOUT, retries=2)
        ids = [
            run_wf(config, WF_SPEC, {"workflow": image_workflow(f"lh/restart{n}")})
            for n in range(RUNS)
        ]
        # In flight: a prompt running in ComfyUI, one queued there, one claimed waiting for
        # a slot; the rest queued in LittleHorse.
        wait_for(lambda: len(_attempts_started(config, ids)) >= 2, 20, "two tasks claimed")
        in_flight = len(_attempts_started(config, ids))
        down_at = time.time()
        answered_in = outage()
        answering = time.time()
        writable_in = server.wait_writable()
        for wf_run_id in ids:
            wait_wf_run(config, wf_run_id, timeout=90)
        _check_all_ran_once(config, tenant, mock, ids, serve)
        # The first claim after the outage began, as the server stamped it.
        claimed = min(t for t in _attempts_started(config, ids) if t > down_at) - answering
        print(
            f"\n{what}: {in_flight} task(s) claimed before it, {RUNS - in_flight} queued; "
            f"the server answered again {answered_in:.1f} s later and took writes "
            f"{writable_in:.1f} s after that (probe); the next claim {claimed:+.1f} s from it "
            f"answering; all {RUNS} WfRuns done {time.time() - down_at:.1f} s after the outage "
            "began"
        )
        # Claims resume within seconds of the server taking writes again (the worker's
        # reconnect: a registration back-off of at most 2 s, 0.5 s after an empty poll).
        assert claimed < writable_in + 5.0, serve.output()[-4000:]


def _check_all_ran_once(
    config: LHConfig, tenant: str, mock: MockHandle, ids: list[str], serve: ServeProcess
) -> None:
    for wf_run_id in ids:
        (task_run,) = task_runs(config, wf_run_id)
        where = f"{describe_task_run(task_run)}\n--- serve:\n{serve.output()[-4000:]}"
        assert wf_status(config, wf_run_id) == "COMPLETED", where
        # However many attempts the restart cost, the prompt ran once.
        assert mock.executions(prompt_id(task_run.id, tenant)) == 1, where


def test_a_killed_server_restarted_with_tasks_in_flight_and_queued(
    real_lh_server: LittleHorseServer,
    lh_tenant: str,
    lh_config: LHConfig,
    comfyui_mock: MockHandle,
    tmp_path: Path,
) -> None:
    _run_through(
        real_lh_server.restart,
        "server SIGKILLed and restarted",
        real_lh_server,
        lh_tenant,
        lh_config,
        comfyui_mock,
        tmp_path,
    )


def test_kafka_restarted_with_tasks_in_flight_and_queued(
    real_lh: RealLittleHorse,
    real_lh_server: LittleHorseServer,
    lh_tenant: str,
    lh_config: LHConfig,
    comfyui_mock: MockHandle,
    tmp_path: Path,
) -> None:
    assert real_lh.kafka is not None
    _run_through(
        real_lh.kafka.restart,
        "Kafka SIGKILLed and restarted",
        real_lh_server,
        lh_tenant,
        lh_config,
        comfyui_mock,
        tmp_path,
    )
