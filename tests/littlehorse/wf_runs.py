"""Starting WfRuns on a real server and reading them back, with the retries a real server
needs (metadata is committed a moment after the Put answers)."""

from __future__ import annotations

import time
from typing import Any

import grpc
from harness import retry_rpc
from littlehorse.config import LHConfig
from littlehorse.model import (
    LHStatus,
    ListNodeRunsRequest,
    RunWfRequest,
    VariableId,
    WfRun,
    WfRunId,
)
from littlehorse.utils import extract_value, to_variable_value

TERMINAL = {LHStatus.COMPLETED, LHStatus.ERROR, LHStatus.EXCEPTION, LHStatus.HALTED}


def run_wf(config: LHConfig, wf_spec_name: str, variables: dict[str, Any]) -> str:
    """RunWf, retried while the WfSpec is not visible yet; the new WfRun's id."""
    request = RunWfRequest(
        wf_spec_name=wf_spec_name,
        variables={name: to_variable_value(value) for name, value in variables.items()},
    )
    stub = config.stub()
    wf_run: WfRun = retry_rpc(lambda: stub.RunWf(request, timeout=10), timeout=15)
    return str(wf_run.id.id)


def wait_wf_run(
    config: LHConfig,
    wf_run_id: str,
    timeout: float = 30.0,
) -> WfRun:
    """GetWfRun until it has ended; on timeout the assertion shows its NodeRuns."""
    stub = config.stub()
    deadline = time.monotonic() + timeout
    while True:
        wf_run: WfRun = retry_rpc(lambda: stub.GetWfRun(WfRunId(id=wf_run_id), timeout=5))
        if wf_run.status in TERMINAL:
            return wf_run
        if time.monotonic() > deadline:
            raise AssertionError(
                f"WfRun {wf_run_id} still {LHStatus.Name(wf_run.status)} after {timeout:.0f} s:\n"
                f"{describe_node_runs(config, wf_run_id)}"
            )
        time.sleep(0.1)


def describe_node_runs(config: LHConfig, wf_run_id: str) -> str:
    try:
        runs = config.stub().ListNodeRuns(
            ListNodeRunsRequest(wf_run_id=WfRunId(id=wf_run_id)), timeout=5
        )
    except grpc.RpcError as exc:
        return f"(ListNodeRuns failed: {exc.code().name})"
    return "\n".join(
        f"  {run.id.position} {run.node_name}: {LHStatus.Name(run.status)}"
        + (f" {[f.failure_name for f in run.failures]}" if run.failures else "")
        for run in runs.results
    )


def variable(config: LHConfig, wf_run_id: str, name: str, thread_run_number: int = 0) -> Any:
    """GetVariable, decoded (a JSON_OBJ comes back as a dict)."""
    found = retry_rpc(
        lambda: config.stub().GetVariable(
            VariableId(
                wf_run_id=WfRunId(id=wf_run_id), thread_run_number=thread_run_number, name=name
            ),
            timeout=5,
        )
    )
    return extract_value(found.value)
