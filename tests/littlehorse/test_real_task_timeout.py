"""A TaskRun timeout shorter than the job, on the real server: the first attempt times out
(TASK_TIMEOUT) while its prompt runs on, the retry attaches to that prompt instead of running
it again, and the first attempt's late report changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness import LittleHorseServer
from littlehorse.config import LHConfig
from scenario import (
    describe_task_run,
    finish_all,
    image_workflow,
    prompt_id,
    register_wf_spec,
    seconds,
    serving,
    statuses,
    the_task_run,
    wf_status,
)
from wf_runs import variable
from worker_processes import worker_env

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME

pytestmark = [pytest.mark.real_littlehorse, pytest.mark.timeout(120, func_only=True)]

WF_SPEC = "short-timeout"
TIMEOUT = 3  # seconds, the WfSpec's; the job takes longer
JOB = 4.5


def test_a_timed_out_attempt_is_retried_onto_the_running_prompt(
    real_lh_server: LittleHorseServer,
    lh_tenant: str,
    lh_config: LHConfig,
    comfyui_mock: MockHandle,
    tmp_path: Path,
) -> None:
    comfyui_mock.set_job_delay(JOB)
    env = worker_env(real_lh_server, lh_tenant, comfyui_mock, COMFYUI_TASKS=TASK_NAME)
    started = time.monotonic()
    with serving(env, tmp_path) as serve:
        register_wf_spec(lh_config, WF_SPEC, timeout_seconds=TIMEOUT, retries=2)
        (wf_run_id,) = finish_all(lh_config, WF_SPEC, [image_workflow("lh/timeout")], serve)
        # Both attempts report, the first one late; give the late report time to land.
        time.sleep(1.0)
        output = serve.output()
    print(f"\ntimed-out attempt retried onto its prompt in {time.monotonic() - started:.1f} s")

    assert wf_status(lh_config, wf_run_id) == "COMPLETED", output[-4000:]
    task_run = the_task_run(lh_config, wf_run_id)
    where = f"{describe_task_run(task_run)}\n--- serve:\n{output[-4000:]}"
    # The late success of attempt 0 did not overwrite its timeout, nor add an attempt.
    assert statuses(task_run) == ["TASK_TIMEOUT", "TASK_SUCCESS"], where
    assert task_run.status == the_task_run(lh_config, wf_run_id).status
    first, second = task_run.attempts
    # The server timed it out TIMEOUT s after the claim, while the prompt still ran.
    assert seconds(first.end_time) - seconds(first.start_time) >= TIMEOUT * 0.95, where
    assert not first.HasField("output"), where
    # GPU work once: the retry found the prompt running under the TaskRun's prompt id.
    pid = prompt_id(task_run.id, lh_tenant)
    assert comfyui_mock.executions(pid) == 1, where
    result = variable(lh_config, wf_run_id, "result")
    assert (result["prompt_id"], result["reused"]) == (pid, True), where
    assert second.HasField("output")
    # Both attempts ran in this worker; the first one's report was taken without complaint
    # (the server answers OK to a report of a timed-out attempt).
    assert "attempt 0: report" not in output, where
    assert "dropped" not in output, where
