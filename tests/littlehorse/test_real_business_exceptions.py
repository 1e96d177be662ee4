"""Business exceptions on the real server: a workflow that can never succeed fails its WfRun
with the exception's name, through the handler examples/wfspec.py installs, after exactly one
attempt (the server never retries a TASK_EXCEPTION)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from harness import LittleHorseServer
from littlehorse.config import LHConfig
from littlehorse.model import LHStatus, ThreadType
from scenario import (
    EXAMPLE,
    describe_task_run,
    finish_all,
    image_workflow,
    load_example,
    node_runs,
    prompt_id,
    serving,
    statuses,
    the_task_run,
)
from wf_runs import describe_node_runs, variable, wait_wf_run
from worker_processes import worker_env

from comfyui_mock.handle import MockHandle

pytestmark = [pytest.mark.real_littlehorse, pytest.mark.timeout(120, func_only=True)]

EXAMPLE_MODULE = load_example()
WF_SPEC = "comfyui-generate"

# name -> (workflow, runs in ComfyUI)
CASES: dict[str, tuple[dict[str, Any], bool]] = {
    # No class_type: refused by the worker before ComfyUI sees it.
    "comfyui-invalid-workflow": ({"1": {"inputs": {}}}, False),
    # ComfyUI's 400 for a class it does not have.
    "comfyui-missing-node": (
        {**image_workflow("lh/missing"), "9": {"class_type": "NoSuchCustomNode", "inputs": {}}},
        False,
    ),
    # ComfyUI's 400 for a required input left out.
    "comfyui-validation-error": (
        {
            "1": {"class_type": "EmptyImage", "inputs": {"height": 64, "batch_size": 1}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
        },
        False,
    ),
    # A node raises while the prompt runs (the mock fails every ImageInvert).
    "comfyui-execution-error": (
        {
            **image_workflow("lh/exec"),
            "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
            "4": {
                "class_type": "SaveImage",
                "inputs": {"images": ["3", 0], "filename_prefix": "lh/inverted"},
            },
        },
        True,
    ),
}


def test_each_business_exception_fails_the_wf_run_after_one_attempt(
    real_lh_server: LittleHorseServer,
    lh_tenant: str,
    lh_config: LHConfig,
    comfyui_mock: MockHandle,
    tmp_path: Path,
) -> None:
    comfyui_mock.fail_node("ImageInvert", "a node failed on purpose", "ValueError", times=None)
    env = worker_env(real_lh_server, lh_tenant, comfyui_mock)
    started = time.monotonic()
    with serving(env, tmp_path) as serve:
        example = subprocess.run(
            [sys.executable, str(EXAMPLE)], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert example.returncode == 0, example.stderr
        workflows = [workflow for workflow, _ in CASES.values()]
        ids = dict(zip(CASES, finish_all(lh_config, WF_SPEC, workflows, serve), strict=True))
    print(
        f"\n{len(CASES)} business exceptions through the real server in "
        f"{time.monotonic() - started:.1f} s (serve start and stop included)"
    )

    for name, wf_run_id in ids.items():
        wf_run = wait_wf_run(lh_config, wf_run_id)
        where = f"{name}:\n{describe_node_runs(lh_config, wf_run_id)}"
        assert LHStatus.Name(wf_run.status) == "EXCEPTION", where
        task_run = the_task_run(lh_config, wf_run_id)
        # Never retried by the server, though the WfSpec allows 3 retries.
        assert statuses(task_run) == ["TASK_EXCEPTION"], describe_task_run(task_run)
        assert task_run.attempts[0].exception.name == name
        assert task_run.attempts[0].exception.message
        # Handled where the example handles it: the task's NodeRun failed with that name, a
        # failure-handler thread for that name took it and failed the WfRun with the name
        # and the example's message.
        (task_node,) = [run for run in node_runs(lh_config, wf_run_id) if run.HasField("task")]
        (failure,) = task_node.failures
        assert failure.failure_name == name, where
        (handler,) = [t for t in wf_run.thread_runs if t.type == ThreadType.FAILURE_HANDLER]
        assert handler.number == failure.failure_handler_threadrun_id, where
        assert handler.thread_spec_name.endswith(f"-{name}"), handler.thread_spec_name
        message = EXAMPLE_MODULE.BUSINESS_EXCEPTIONS[name]
        assert (LHStatus.Name(handler.status), handler.error_message) == ("EXCEPTION", message)
        entrypoint = wf_run.thread_runs[0]
        assert (LHStatus.Name(entrypoint.status), entrypoint.error_message) == (
            "EXCEPTION",
            message,
        )
        assert variable(lh_config, wf_run_id, "failure") == name
        assert variable(lh_config, wf_run_id, "result") is None

        runs_in_comfyui = CASES[name][1]
        pid = prompt_id(task_run.id, lh_tenant)
        assert comfyui_mock.executions(pid) == (1 if runs_in_comfyui else 0), name
