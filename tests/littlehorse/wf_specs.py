"""Small WfSpecs for the real server, built with the SDK's builder: one task on a `workflow`
variable, its output kept in `result`, business exceptions recorded in `failure`.

`examples/wfspec.py` gives its task 2100 s; the soak and the benchmark need seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import grpc
from harness import retry_rpc
from littlehorse.config import LHConfig
from littlehorse.model import (
    ExponentialBackoffRetryPolicy,
    GetLatestWfSpecRequest,
    VariableMutationType,
    WfSpec,
)
from littlehorse.workflow import WfRunVariable, Workflow, WorkflowThread

from comfyui_worker.constants import ExceptionName


def _fail_with(name: str, failure: WfRunVariable) -> Callable[[WorkflowThread], None]:
    def handler(thread: WorkflowThread) -> None:
        thread.mutate(failure, VariableMutationType.ASSIGN, name)
        thread.fail(name, f"the task failed with {name}")

    return handler


def one_task_workflow(
    name: str,
    task_def: str,
    *,
    timeout_seconds: int,
    retries: int = 0,
    backoff: ExponentialBackoffRetryPolicy | None = None,
    handled: Iterable[str] = (),
) -> Workflow:
    """`result = task_def(workflow)`; each exception named in `handled` sets `failure` to its
    name and ends the WfRun EXCEPTION with that failure, as `examples/wfspec.py` does."""
    handled = list(handled)

    def entrypoint(wf: WorkflowThread) -> None:
        workflow = wf.declare_json_obj("workflow").required()
        result = wf.declare_json_obj("result")
        failure = wf.declare_str("failure")
        run = wf.execute(
            task_def,
            workflow,
            timeout_seconds=timeout_seconds,
            retries=retries,
            exponential_backoff=backoff,
        )
        for exception_name in handled:
            wf.handle_exception(run, _fail_with(exception_name, failure), exception_name)
        result.assign(run)

    return Workflow(name, entrypoint)


# Every business exception the worker can raise, handled: one the soak does not expect then
# shows up under its own name in `failure`, not as an unhandled EXCEPTION.
WORKER_EXCEPTIONS = tuple(name.value for name in ExceptionName)


def put_wf_spec(config: LHConfig, workflow: Workflow, timeout: float = 30.0) -> WfSpec:
    """PutWfSpec (the TaskDef it names must exist), then read it back until it is there."""
    stub = config.stub()
    request = workflow.compile()
    retry_rpc(lambda: stub.PutWfSpec(request, timeout=10), timeout=timeout)
    spec: WfSpec = retry_rpc(
        lambda: stub.GetLatestWfSpec(GetLatestWfSpecRequest(name=request.name), timeout=5),
        timeout=timeout,
        codes=(grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE),
    )
    return spec
