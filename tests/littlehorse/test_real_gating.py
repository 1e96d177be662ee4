"""Gating and drain against the real server: while ComfyUI does not answer the worker claims
nothing (the real server drops the poll of a half-closed stream), and on SIGTERM a running job
finishes and is reported within COMFYUI_SHUTDOWN_GRACE, while a claimed task that has not
started is handed back for a retry."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from harness import LittleHorseServer
from littlehorse.config import LHConfig
from scenario import (
    describe_task_run,
    image_workflow,
    prompt_id,
    readyz,
    register_wf_spec,
    seconds,
    serving,
    started,
    statuses,
    task_runs,
    the_task_run,
    wait_for,
    wf_status,
)
from wf_runs import run_wf, wait_wf_run
from worker_processes import ServeProcess, worker_env

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME

pytestmark = [pytest.mark.real_littlehorse, pytest.mark.timeout(120, func_only=True)]

WF_SPEC = "gating"
DOWNTIME = 5.0


def test_nothing_is_claimed_while_comfyui_does_not_answer(
    real_lh_server: LittleHorseServer,
    lh_tenant: str,
    lh_config: LHConfig,
    comfyui_mock: MockHandle,
    tmp_path: Path,
) -> None:
    env = worker_env(real_lh_server, lh_tenant, comfyui_mock, COMFYUI_TASKS=TASK_NAME)
    with serving(env, tmp_path) as serve:
        register_wf_spec(lh_config, WF_SPEC, timeout_seconds=30, retries=2)
        outage = threading.Thread(target=comfyui_mock.restart, kwargs={"downtime": DOWNTIME})
        outage.start()
        # The worker notices and half-closes its poll streams.
        wait_for(lambda: "comfyui" in readyz(serve)["failed"], 10, "readyz naming comfyui")
        ids = [
            run_wf(lh_config, WF_SPEC, {"workflow": image_workflow(f"lh/gated{n}")})
            for n in range(2)
        ]
        scheduled = time.time()
        time.sleep(1.0)
        # Scheduled, and not claimed: no attempt has started.
        waiting = [run for wf_run_id in ids for run in task_runs(lh_config, wf_run_id)]
        assert len(waiting) == 2 and not any(
            started(attempt) for run in waiting for attempt in run.attempts
        ), "\n".join(map(describe_task_run, waiting))
        outage.join()
        answering = time.time()
        for wf_run_id in ids:
            wait_wf_run(lh_config, wf_run_id)
        output = serve.output()

    claims = []
    for wf_run_id in ids:
        task_run = the_task_run(lh_config, wf_run_id)
        where = f"{describe_task_run(task_run)}\n--- serve:\n{output[-3000:]}"
        assert wf_status(lh_config, wf_run_id) == "COMPLETED", where
        # One attempt, claimed once ComfyUI answered: no retry burnt on the outage.
        assert statuses(task_run) == ["TASK_SUCCESS"], where
        claims.append(seconds(task_run.attempts[0].start_time))
        assert claims[-1] >= answering - 0.5, where
        assert comfyui_mock.executions(prompt_id(task_run.id, lh_tenant)) == 1
    print(
        f"\nComfyUI down {DOWNTIME:g} s: the tasks waited unclaimed in LittleHorse "
        f"{answering - scheduled:.1f} s, claimed {max(claims) - answering:.1f} s after it "
        "answered again"
    )


GRACE = 10.0
JOB = 3.0


def test_sigterm_mid_job_finishes_and_reports_it_then_exits_0(
    real_lh_server: LittleHorseServer,
    lh_tenant: str,
    lh_config: LHConfig,
    comfyui_mock: MockHandle,
    tmp_path: Path,
) -> None:
    comfyui_mock.set_job_delay(JOB)
    # One job at a time: the second task is claimed beside it and waits for the slot.
    env = worker_env(
        real_lh_server,
        lh_tenant,
        comfyui_mock,
        COMFYUI_TASKS=TASK_NAME,
        COMFYUI_MAX_IN_FLIGHT="1",
        COMFYUI_SHUTDOWN_GRACE=str(GRACE),
    )
    with ServeProcess(env, tmp_path) as serve:
        serve.wait_ready()
        register_wf_spec(lh_config, WF_SPEC, timeout_seconds=30, retries=2)
        running, waiting = (
            run_wf(lh_config, WF_SPEC, {"workflow": image_workflow(f"lh/drain{n}")})
            for n in range(2)
        )
        running_run = wait_for(lambda: task_runs(lh_config, running), 10, "the first TaskRun")[0]
        wait_for(
            lambda: comfyui_mock.executions(prompt_id(running_run.id, lh_tenant)) == 1,
            10,
            "the first prompt running",
        )
        wait_for(
            lambda: (
                all(
                    started(attempt)
                    for wf_run_id in (running, waiting)
                    for run in task_runs(lh_config, wf_run_id)
                    for attempt in run.attempts
                )
                and len(task_runs(lh_config, waiting)) == 1
            ),
            10,
            "both tasks claimed",
        )
        signalled = time.monotonic()
        signalled_at = time.time()
        code = serve.stop(grace=GRACE + 10)
        took = time.monotonic() - signalled
        output = serve.output()
    assert code == 0, output[-4000:]
    print(f"\nSIGTERM mid-job: the job finished, was reported, and serve exited in {took:.1f} s")
    assert took < GRACE, output[-4000:]

    # The running job finished and was reported before the exit, as its one attempt.
    wait_wf_run(lh_config, running)
    task_run = the_task_run(lh_config, running)
    where = f"{describe_task_run(task_run)}\n--- serve:\n{output[-4000:]}"
    assert wf_status(lh_config, running) == "COMPLETED", where
    assert statuses(task_run) == ["TASK_SUCCESS"], where
    assert signalled_at < seconds(task_run.attempts[0].end_time) < signalled_at + took, where
    # The one waiting for the slot was handed back at once, not started: a retryable failure
    # the server retries (on the next worker), with nothing of it run in ComfyUI.
    (handed_back,) = task_runs(lh_config, waiting)
    assert statuses(handed_back)[0] == "TASK_FAILED", describe_task_run(handed_back)
    assert "not started: the worker is shutting down" in handed_back.attempts[0].error.message
    assert comfyui_mock.executions(prompt_id(handed_back.id, lh_tenant)) == 0

    # A new worker takes the retry and runs it, once.
    comfyui_mock.set_job_delay(0.1)
    with serving(env, tmp_path):
        wait_wf_run(lh_config, waiting, timeout=30)
    handed_back = the_task_run(lh_config, waiting)
    assert wf_status(lh_config, waiting) == "COMPLETED", describe_task_run(handed_back)
    assert statuses(handed_back) == ["TASK_FAILED", "TASK_SUCCESS"]
    assert comfyui_mock.executions(prompt_id(handed_back.id, lh_tenant)) == 1
