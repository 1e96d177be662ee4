"""Two LittleHorse servers: the worker polls both hosts the cluster advertises, and when one
is SIGKILLed the work goes on through the other."""

from __future__ import annotations

import concurrent.futures
import re
import time
from pathlib import Path

import grpc
import pytest
from harness import RealLittleHorse, retry_rpc
from littlehorse.config import LHConfig
from littlehorse.model import RegisterTaskWorkerRequest, RunWfRequest, TaskDefId
from littlehorse.utils import to_variable_value
from scenario import (
    describe_task_run,
    image_workflow,
    kafka_partition,
    prompt_id,
    register_wf_spec,
    serving,
    statuses,
    the_task_run,
    wait_for,
)
from wf_runs import run_wf, wait_wf_run
from worker_processes import worker_env

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME

pytestmark = [pytest.mark.real_littlehorse, pytest.mark.timeout(180, func_only=True)]

WF_SPEC = "cluster"


WORKER_ID = "cluster-worker"


def _advertised(config: LHConfig) -> set[int]:
    """The ports RegisterTaskWorker lists to the worker (UNAVAILABLE while the group
    rebalances). Asked as that worker: the server shares the hosts out among the workers
    registered for a TaskDef, so a probe under an id of its own would take one for itself."""
    request = RegisterTaskWorkerRequest(
        task_worker_id=WORKER_ID, task_def_id=TaskDefId(name=TASK_NAME)
    )
    stub = config.stub()
    reply = retry_rpc(lambda: stub.RegisterTaskWorker(request, timeout=5), timeout=30)
    return {host.port for host in reply.your_hosts}


def _run_wf_retrying(config: LHConfig, wf_run_id: str, prefix: str, timeout: float) -> float:
    """RunWf with this id until a server takes it: UNAVAILABLE (or DEADLINE_EXCEEDED) while
    the partition of the id is with the killed server. The seconds it took."""
    request = RunWfRequest(
        wf_spec_name=WF_SPEC,
        id=wf_run_id,
        variables={"workflow": to_variable_value(image_workflow(prefix))},
    )
    stub = config.stub()
    started = time.monotonic()
    while True:
        try:
            stub.RunWf(request, timeout=10)
            break
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                break  # an earlier try went through after all
            retried = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if exc.code() not in retried or time.monotonic() - started > timeout:
                raise
        time.sleep(0.2)
    return time.monotonic() - started


def _ids_on_every_partition(prefix: str, partitions: int, each: int) -> list[str]:
    """WfRun ids, `each` on every partition: whichever the killed server had, some of them
    wait for its partitions to move."""
    ids: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while any(len(found) < each for found in ids.values()):
        wf_run_id = f"{prefix}-{n}"
        found = ids[kafka_partition(wf_run_id, partitions)]
        if len(found) < each:
            found.append(wf_run_id)
        n += 1
    return [wf_run_id for found in ids.values() for wf_run_id in found]


def test_the_worker_polls_both_servers_and_goes_on_through_one(
    real_lh_cluster: RealLittleHorse,
    lh_tenant: str,
    comfyui_mock: MockHandle,
    tmp_path: Path,
) -> None:
    first, second = real_lh_cluster.servers
    config_1, config_2 = first.config(lh_tenant), second.config(lh_tenant)
    env = worker_env(
        first, lh_tenant, comfyui_mock, COMFYUI_TASKS=TASK_NAME, LHW_TASK_WORKER_ID=WORKER_ID
    )
    with serving(env, tmp_path, stop=False) as serve:
        register_wf_spec(config_1, WF_SPEC, timeout_seconds=20, retries=2)
        # Told about both through server 1 (once the group has settled), it polls both.
        wait_for(lambda: _advertised(config_1) == {first.port, second.port}, 30, "both advertised")
        polled = wait_for(
            lambda: (
                set(map(int, re.findall(r"polling 127\.0\.0\.1:(\d+)", serve.output())))
                >= {first.port, second.port}
            ),
            30,
            "the worker polling both servers",
        )
        assert polled
        before = run_wf(config_1, WF_SPEC, {"workflow": image_workflow("lh/both")})
        wait_wf_run(config_1, before)

        after = _ids_on_every_partition(lh_tenant, real_lh_cluster.partitions, 2)
        killed_at = time.monotonic()
        first.kill()
        # Those on the partitions server 1 had wait for the group to give them to server 2
        # (LHS_STREAMS_SESSION_TIMEOUT after the kill); the others go through at once.
        with concurrent.futures.ThreadPoolExecutor(len(after)) as pool:
            accepted = list(
                pool.map(
                    lambda wf_run_id: _run_wf_retrying(
                        config_2, wf_run_id, f"lh/{wf_run_id}", timeout=60
                    ),
                    after,
                )
            )
        for wf_run_id in after:
            wait_wf_run(config_2, wf_run_id, timeout=60)
        failover = time.monotonic() - killed_at

        # Server 2 restarts while server 1 is still down: its poll stream ends, and the
        # worker can register again only through server 2, the one host that answers.
        answered = second.restart()
        restarted_at = time.monotonic()
        last = f"{lh_tenant}-last"
        _run_wf_retrying(config_2, last, "lh/last", timeout=60)
        wait_wf_run(config_2, last, timeout=60)
        resumed = time.monotonic() - restarted_at
        output = serve.output()
        assert serve.stop() == 0, output[-4000:]

    print(
        f"\nserver 1 SIGKILLed: of {len(after)} WfRuns started through server 2, RunWf took "
        f"{min(accepted):.1f}-{max(accepted):.1f} s; all completed {failover:.1f} s after the "
        "kill"
    )
    print(
        f"then server 2 restarted alone: answering after {answered:.1f} s, a WfRun through it "
        f"completed {resumed:.1f} s after that"
    )
    # Some WfRuns had to wait for server 1's partitions, and did not wait in vain.
    assert max(accepted) > 5.0
    for wf_run_id in (before, *after, last):
        task_run = the_task_run(config_2, wf_run_id)
        assert statuses(task_run)[-1] == "TASK_SUCCESS", f"{describe_task_run(task_run)}\n{output}"
        assert comfyui_mock.executions(prompt_id(task_run.id, lh_tenant)) == 1
