"""Register the `comfyui-generate` WfSpec: run one ComfyUI workflow through comfyui-worker.

Register the TaskDefs first (`comfyui-worker register`; the docker-compose stack does it),
then, with LHC_API_HOST / LHC_API_PORT pointing at LittleHorse:

    python examples/wfspec.py
    lhctl run comfyui-generate workflow "$(cat my_workflow_api.json)"

The workflow must be ComfyUI's API format ("Export (API)"), not the UI format.

With an optional `job` (a `run-comfyui-job` envelope), a second step passes an image in and
gets a URL out: the worker uploads the job's input image to ComfyUI, runs the job's workflow,
stores the output in the object store and returns a presigned URL, kept in `image_url`:

    lhctl run comfyui-generate workflow "$(cat my_workflow_api.json)" job '{
      "workflow": {...a workflow whose LoadImage reads "photo.png"...},
      "inputs": {"photo.png": {"url": "https://example.com/photo.png"}},
      "output": {"mode": "store", "presign_seconds": 3600}}'
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import littlehorse
from littlehorse.config import LHConfig
from littlehorse.model import ExponentialBackoffRetryPolicy, VariableMutationType
from littlehorse.workflow import NodeOutput, WfRunVariable, Workflow, WorkflowThread

WF_SPEC_NAME = "comfyui-generate"
TASK_DEF_NAME = "execute-comfyui-workflow"
JOB_TASK_DEF_NAME = "run-comfyui-job"

# LittleHorse times a TaskRun out after 60 s unless told otherwise; a diffusion workflow on a
# busy GPU queue easily takes minutes. Keep this above the worker's COMFYUI_JOB_DEADLINE
# (default 1800 s, which already covers waiting for a slot and ComfyUI's queue) plus its
# COMFYUI_READY_WAIT (default 60 s, how long a task claimed while ComfyUI does not answer waits
# for it), or the server gives up on, and retries, a job the worker is still waiting on.
TASK_TIMEOUT_SECONDS = 2100

# Retries cover technical failures only (TASK_FAILED, timeouts: ComfyUI unreachable, worker
# restarted). Business exceptions below are never retried by the server. The worker uses the
# TaskRun's idempotency key, so a retry does not queue the same job in ComfyUI twice.
TASK_RETRIES = 3
RETRY_BACKOFF = ExponentialBackoffRetryPolicy(
    base_interval_ms=5_000, max_delay_ms=120_000, multiplier=3.0
)

# LHTaskException names the worker raises, with the message the WfRun fails with. The
# exception's content (node ids, ComfyUI's error details) stays on the failed NodeRun.
BUSINESS_EXCEPTIONS: dict[str, str] = {
    "comfyui-invalid-workflow": (
        "The workflow is not a runnable ComfyUI API-format graph; export it with 'Export (API)'."
    ),
    "comfyui-validation-error": (
        "ComfyUI rejected the workflow at validation; see the failed task's exception content "
        "for the node errors."
    ),
    "comfyui-missing-node": (
        "The workflow uses a node type this ComfyUI does not have; install the custom node."
    ),
    "comfyui-execution-error": (
        "A node failed while ComfyUI ran the workflow; see the failed task's exception content."
    ),
    "comfyui-unsafe-output-path": (
        "ComfyUI reported an output outside its output/temp directories; it was not returned."
    ),
    "comfyui-prompt-conflict": (
        "ComfyUI holds another job's prompt under this job's prompt id; workers of different "
        "LittleHorse clusters sharing a ComfyUI need different COMFYUI_JOB_NAMESPACE values."
    ),
}
# And those only the job envelope step raises.
JOB_EXCEPTIONS: dict[str, str] = {
    "comfyui-invalid-job": "The job envelope is invalid; the message names each bad field.",
    "comfyui-invalid-input": (
        "An input file of the job cannot be used; the message names the input and the rule."
    ),
    "comfyui-unknown-template": "The job names a template this worker does not have.",
    "comfyui-output-too-large": (
        "The outputs are too large to return inline; use output mode 'store'."
    ),
    "comfyui-output-store-denied": (
        "The object store refused the worker's credentials or has no such bucket."
    ),
}


def _fail_with(
    exception_name: str, message: str, failure: WfRunVariable
) -> Callable[[WorkflowThread], None]:
    def handler(thread: WorkflowThread) -> None:
        # Recorded on the WfRun so a search or dashboard shows why without opening NodeRuns.
        thread.mutate(failure, VariableMutationType.ASSIGN, exception_name)
        thread.fail(exception_name, message)

    return handler


def _run_task(
    wf: WorkflowThread, task_def: str, argument: WfRunVariable, failure: WfRunVariable
) -> NodeOutput:
    run = wf.execute(
        task_def,
        argument,
        timeout_seconds=TASK_TIMEOUT_SECONDS,
        retries=TASK_RETRIES,
        exponential_backoff=RETRY_BACKOFF,
    )
    exceptions = BUSINESS_EXCEPTIONS | (JOB_EXCEPTIONS if task_def == JOB_TASK_DEF_NAME else {})
    for exception_name, message in exceptions.items():
        wf.handle_exception(run, _fail_with(exception_name, message, failure), exception_name)
    return run


def entrypoint(wf: WorkflowThread) -> None:
    workflow = wf.declare_json_obj("workflow").required()
    job = wf.declare_json_obj("job")
    result = wf.declare_json_obj("result")
    image_url = wf.declare_str("image_url")
    failure = wf.declare_str("failure")

    result.assign(_run_task(wf, TASK_DEF_NAME, workflow, failure))

    def image_in_url_out(body: WorkflowThread) -> None:
        delivered = _run_task(body, JOB_TASK_DEF_NAME, job, failure)
        # The first output's presigned URL (store mode with presign_seconds).
        image_url.assign(delivered.with_json_path("$.files[0].url"))

    wf.do_if(job.is_not_equal_to(None), image_in_url_out)


def build_workflow() -> Workflow:
    """A fresh Workflow (`compile()` consumes the builder's threads, so build one per use)."""
    return Workflow(WF_SPEC_NAME, entrypoint)


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    littlehorse.create_workflow_spec(build_workflow(), LHConfig())


if __name__ == "__main__":
    main()
