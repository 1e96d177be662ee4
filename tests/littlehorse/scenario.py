"""What the scenario tests share: a WfSpec of their own with short timeouts, `serve` running
against a mock, and the server's records of a WfRun's tasks (TaskRuns, their attempts, the
prompt id each TaskRun gets)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import littlehorse
from harness import retry_rpc
from littlehorse.config import LHConfig
from littlehorse.model import (
    ExponentialBackoffRetryPolicy,
    LHStatus,
    ListNodeRunsRequest,
    NodeRun,
    TaskAttempt,
    TaskRun,
    TaskRunId,
    TaskStatus,
    WfRunId,
)
from littlehorse.workflow import Workflow, WorkflowThread
from wf_runs import run_wf, wait_wf_run
from worker_processes import ServeProcess

from comfyui_worker.constants import TASK_NAME
from comfyui_worker.lh.identity import JobIdentity, JobScope

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "wfspec.py"


def load_example() -> ModuleType:
    """examples/wfspec.py as a module (its handlers' names and messages)."""
    spec = importlib.util.spec_from_file_location("wfspec_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Short enough that a retry comes within a second, long enough to tell the steps apart.
BACKOFF = ExponentialBackoffRetryPolicy(base_interval_ms=500, max_delay_ms=5_000, multiplier=2.0)


def register_wf_spec(
    config: LHConfig,
    name: str,
    *,
    timeout_seconds: int = 30,
    retries: int = 2,
    backoff: ExponentialBackoffRetryPolicy = BACKOFF,
    task_def: str = TASK_NAME,
) -> None:
    """A one-task WfSpec: `result = <task_def>(workflow)`, with these timeout and retries and
    no failure handlers (a failure the server does not retry fails the WfRun)."""

    def entrypoint(wf: WorkflowThread) -> None:
        workflow = wf.declare_json_obj("workflow").required()
        result = wf.declare_json_obj("result")
        result.assign(
            wf.execute(
                task_def,
                workflow,
                timeout_seconds=timeout_seconds,
                retries=retries,
                exponential_backoff=backoff,
            )
        )

    # The TaskDef may not be committed yet when `serve` has just put it.
    retry_rpc(
        lambda: littlehorse.create_workflow_spec(Workflow(name, entrypoint), config),
        codes=(
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        timeout=15,
    )


@contextlib.contextmanager
def serving(env: Mapping[str, str], cwd: Path, *, stop: bool = True) -> Iterator[ServeProcess]:
    """`comfyui-worker serve` polling, stopped (SIGTERM) afterwards and expected to exit 0."""
    with ServeProcess(env, cwd) as serve:
        serve.wait_ready()
        yield serve
        if stop:
            code = serve.stop()
            assert code == 0, f"serve exited {code}:\n{serve.output()[-4000:]}"


def finish_all(
    config: LHConfig,
    wf_spec: str,
    workflows: list[dict[str, Any]],
    serve: ServeProcess | None = None,
    timeout: float = 60.0,
) -> list[str]:
    """Start a WfRun per workflow at once, wait for all of them to end; their ids."""
    ids = [run_wf(config, wf_spec, {"workflow": workflow}) for workflow in workflows]
    for wf_run_id in ids:
        try:
            wait_wf_run(config, wf_run_id, timeout=timeout)
        except AssertionError as exc:
            tail = f"\n--- serve:\n{serve.output()[-6000:]}" if serve is not None else ""
            raise AssertionError(f"{exc}{tail}") from None
    return ids


def node_runs(config: LHConfig, wf_run_id: str) -> list[NodeRun]:
    stub = config.stub()
    reply = retry_rpc(
        lambda: stub.ListNodeRuns(ListNodeRunsRequest(wf_run_id=WfRunId(id=wf_run_id)), timeout=5)
    )
    return list(reply.results)


def task_runs(config: LHConfig, wf_run_id: str) -> list[TaskRun]:
    """The TaskRun of every TASK NodeRun of the WfRun, in NodeRun order."""
    stub = config.stub()
    ids = [run.task.task_run_id for run in node_runs(config, wf_run_id) if run.HasField("task")]
    return [retry_rpc(lambda i=i: stub.GetTaskRun(i, timeout=5)) for i in ids]


def the_task_run(config: LHConfig, wf_run_id: str) -> TaskRun:
    (only,) = task_runs(config, wf_run_id)
    return only


def statuses(task_run: TaskRun) -> list[str]:
    """Each attempt's status, e.g. ["TASK_FAILED", "TASK_SUCCESS"]."""
    return [TaskStatus.Name(attempt.status) for attempt in task_run.attempts]


def describe_task_run(task_run: TaskRun) -> str:
    lines = [
        f"TaskRun {task_run.id.wf_run_id.id}/{task_run.id.task_guid}: "
        f"{TaskStatus.Name(task_run.status)}, {len(task_run.attempts)} attempt(s)"
    ]
    for n, attempt in enumerate(task_run.attempts):
        detail = ""
        if attempt.HasField("error"):
            detail = f" error: {attempt.error.message[-300:]!r}"
        elif attempt.HasField("exception"):
            detail = f" exception: {attempt.exception.name}"
        lines.append(
            f"  {n}: {TaskStatus.Name(attempt.status)}"
            f" scheduled {seconds(attempt.schedule_time):.3f}"
            f" started {seconds(attempt.start_time):.3f} ended {seconds(attempt.end_time):.3f}"
            f" by {attempt.task_worker_id or '-'}{detail}"
        )
    return "\n".join(lines)


def seconds(stamp: Any) -> float:
    """A protobuf Timestamp as time.time() seconds (0.0 when unset)."""
    return float(stamp.seconds + stamp.nanos / 1e9)


def prompt_id(task_run_id: TaskRunId, tenant: str, namespace: str = "") -> str:
    """The ComfyUI prompt id the worker uses for every attempt of this TaskRun."""
    return JobIdentity.of(task_run_id, JobScope(tenant=tenant, namespace=namespace)).prompt_id


def wf_status(config: LHConfig, wf_run_id: str) -> str:
    return LHStatus.Name(wait_wf_run(config, wf_run_id).status)


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """`check()` until it returns something truthy, for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(interval)
    return value


def started(attempt: TaskAttempt) -> bool:
    return attempt.HasField("start_time")


def image_workflow(prefix: str) -> dict[str, Any]:
    """EmptyImage -> SaveImage: one small file."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def kafka_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` (murmur2, as in its Utils): the
    server puts a WfRun's commands on the partition of its id."""
    data = key.encode()
    m, length = 0x5BD1E995, len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[length & ~3 :]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions


def readyz(serve: ServeProcess) -> dict[str, Any]:
    """`serve`'s /readyz body (200 or 503 alike)."""
    url = f"http://127.0.0.1:{serve.health_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as reply:
            body: dict[str, Any] = json.load(reply)
    except urllib.error.HTTPError as refused:
        body = json.load(refused)
    return body
