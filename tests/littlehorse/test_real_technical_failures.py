"""Technical failures on the real server: what the worker reports as TASK_FAILED is retried by
the server with the WfSpec's backoff, each attempt visible in the TaskRun, and the prompt runs
in ComfyUI as often as the worker promises (README, *No duplicate GPU work*)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from harness import LittleHorseServer
from littlehorse.config import LHConfig
from littlehorse.model import ExponentialBackoffRetryPolicy, TaskRun
from scenario import (
    BACKOFF,
    describe_task_run,
    finish_all,
    image_workflow,
    prompt_id,
    register_wf_spec,
    seconds,
    serving,
    statuses,
    task_runs,
    the_task_run,
    wait_for,
    wf_status,
)
from wf_runs import run_wf, variable, wait_wf_run
from worker_processes import worker_env

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME

pytestmark = [pytest.mark.real_littlehorse, pytest.mark.timeout(120, func_only=True)]

WF_SPEC = "technical-failures"
RETRIES = 2
BASE = BACKOFF.base_interval_ms / 1000
# A multiplier large enough to tell exponential from constant under the timers' jitter.
STEEP = ExponentialBackoffRetryPolicy(base_interval_ms=500, max_delay_ms=5_000, multiplier=4.0)
# The worker's own HTTP retries, kept short: one retry of a failed request.
HTTP_RETRIES = {
    "COMFYUI_RETRIES": "1",
    "COMFYUI_BACKOFF_BASE": "0.05",
    "COMFYUI_BACKOFF_MAX": "0.1",
    "COMFYUI_TASKS": TASK_NAME,
}


def _env(server: LittleHorseServer, tenant: str, mock: MockHandle) -> dict[str, str]:
    return worker_env(server, tenant, mock, **HTTP_RETRIES)


def _gaps(config: LHConfig, wf_run_id: str) -> list[float]:
    """Seconds from each attempt's end to the next attempt's start."""
    attempts = the_task_run(config, wf_run_id).attempts
    return [
        seconds(later.start_time) - seconds(earlier.end_time)
        for earlier, later in itertools.pairwise(attempts)
    ]


def test_5xx_beyond_the_workers_retries_is_retried_by_the_server(
    real_lh_server: LittleHorseServer,
    lh_tenant: str,
    lh_config: LHConfig,
    comfyui_mock: MockHandle,
    tmp_path: Path,
) -> None:
    # Both tries of the first attempt's POST /prompt answer 500; the second attempt's go in.
    comfyui_mock.fail_http(count=2, path="POST /prompt", status=503)
    with serving(_env(real_lh_server, lh_tenant, comfyui_mock), tmp_path) as serve:
        register_wf_spec(lh_config, WF_SPEC, retries=RETRIES)
        (wf_run_id,) = finish_all(lh_config, WF_SPEC, [image_workflow("lh/5xx")], serve)

    assert wf_status(lh_config, wf_run_id) == "COMPLETED"
    task_run = the_task_run(lh_config, wf_run_id)
    assert statuses(task_run) == ["TASK_FAILED", "TASK_SUCCESS"], describe_task_run(task_run)
    assert "503" in task_run.attempts[0].error.message, describe_task_run(task_run)
    # The server waited out the policy's first interval before the retry.
    (gap,) = _gaps(lh_config, wf_run_id)
    assert gap >= BASE * 0.9, describe_task_run(task_run)
    # The failed POSTs enqueued nothing: the prompt ran once, on the second attempt.
    assert comfyui_mock.executions(prompt_id(task_run.id, lh_tenant)) == 1
    assert comfyui_mock.request_count("/prompt", "POST") == 3
    assert variable(lh_config, wf_run_id, "result")["reused"] is False


def test_retries_run_out_with_the_wf_specs_exponential_backoff(
    real_lh_server: LittleHorseServer,
    lh_tenant: str,
    lh_config: LHConfig,
    comfyui_mock: MockHandle,
    tmp_path: Path,
) -> None:
    # Every try of all 1 + RETRIES attempts fails.
    comfyui_mock.fail_http(count=2 * (1 + RETRIES), path="POST /prompt")
    with serving(_env(real_lh_server, lh_tenant, comfyui_mock), tmp_path) as serve:
        register_wf_spec(lh_config, WF_SPEC, retries=RETRIES, backoff=STEEP)
        (wf_run_id,) = finish_all(lh_config, WF_SPEC, [image_workflow("lh/5xx")], serve)

    assert wf_status(lh_config, wf_run_id) == "ERROR"
    task_run = the_task_run(lh_config, wf_run_id)
    assert statuses(task_run) == ["TASK_FAILED"] * (1 + RETRIES), describe_task_run(task_run)
    first, second = _gaps(lh_config, wf_run_id)
    print(f"\nbackoff between attempts: {first:.2f} s, {second:.2f} s")
    # base_interval, then base_interval * multiplier (the server's timers add a little).
    base = STEEP.base_interval_ms / 1000
    assert first >= base * 0.9, describe_task_run(task_run)
    assert second >= base * STEEP.multiplier * 0.9, describe_task_run(task_run)
    assert second > first
    assert comfyui_mock.executions(prompt_id(task_run.id, lh_tenant)) == 0


def test_a_comfyui_crash_mid_job_is_retried_and_runs_the_prompt_again(
    real_lh_server: LittleHorseServer,
    lh_tenant: str,
    lh_config: LHConfig,
    comfyui_mock: MockHandle,
    tmp_path: Path,
) -> None:
    comfyui_mock.set_job_delay(3.0)
    with serving(_env(real_lh_server, lh_tenant, comfyui_mock), tmp_path) as serve:
        register_wf_spec(lh_config, WF_SPEC, retries=RETRIES)
        wf_run_id = run_wf(lh_config, WF_SPEC, {"workflow": image_workflow("lh/crash")})
        task_run = wait_for(lambda: _task_run_or_none(lh_config, wf_run_id), 10, "a TaskRun")
        pid = prompt_id(task_run.id, lh_tenant)
        wait_for(lambda: comfyui_mock.executions(pid) == 1, 10, "the prompt running")
        # ComfyUI crashes mid-job and is back a second later with nothing of it left.
        crashed_at = time.time()
        comfyui_mock.restart(downtime=1.0)
        comfyui_mock.set_job_delay(0.5)
        wait_wf_run(lh_config, wf_run_id, timeout=60)
        output = serve.output()

    assert wf_status(lh_config, wf_run_id) == "COMPLETED", output[-4000:]
    task_run = the_task_run(lh_config, wf_run_id)
    assert statuses(task_run) == ["TASK_FAILED", "TASK_SUCCESS"], describe_task_run(task_run)
    # Unreachable while it was down, or the prompt gone once it was back: either way a
    # plain failure, which the server retries.
    error = task_run.attempts[0].error.message
    assert "unreachable" in error or "PromptLost" in error, error[-1000:]
    # The retry started once ComfyUI answered again, not into the outage.
    assert seconds(task_run.attempts[1].start_time) >= crashed_at + 1.0, describe_task_run(task_run)
    # ComfyUI lost the first run with its queue and history, so the retry ran it again,
    # under the same prompt id: twice in all, once to completion.
    assert comfyui_mock.executions(pid) == 2
    result = variable(lh_config, wf_run_id, "result")
    assert (result["prompt_id"], result["reused"]) == (pid, False)


def _task_run_or_none(config: LHConfig, wf_run_id: str) -> TaskRun | None:
    runs = task_runs(config, wf_run_id)
    return runs[0] if runs else None
