"""The harness's restarts and second server do what the later restart and cluster tests will
rely on."""

from __future__ import annotations

import time

import pytest
from harness import LittleHorseServer, RealLittleHorse, retry_rpc
from littlehorse.config import LHConfig
from littlehorse.model import (
    PutTaskDefRequest,
    RegisterTaskWorkerRequest,
    TaskDefId,
    TypeDefinition,
    VariableDef,
    VariableType,
)

pytestmark = [pytest.mark.real_littlehorse, pytest.mark.timeout(120, func_only=True)]


def _put_and_read(config: LHConfig, name: str, timeout: float = 30.0) -> None:
    request = PutTaskDefRequest(
        name=name,
        input_vars=[
            VariableDef(name="x", type_def=TypeDefinition(primitive_type=VariableType.STR))
        ],
    )
    stub = config.stub()
    retry_rpc(lambda: stub.PutTaskDef(request, timeout=5), timeout=timeout)
    retry_rpc(lambda: stub.GetTaskDef(TaskDefId(name=name), timeout=5), timeout=timeout)


def test_a_killed_server_restarts_on_its_state(
    real_lh: RealLittleHorse, real_lh_server: LittleHorseServer, lh_tenant: str
) -> None:
    _put_and_read(real_lh_server.config(lh_tenant), "before-the-kill")

    answering = real_lh_server.restart()
    config = real_lh_server.config(lh_tenant)
    # Reads come from the restored store at once...
    config.stub().GetTaskDef(TaskDefId(name="before-the-kill"), timeout=5)
    # ...writes only once the consumer group has let go of the killed instance.
    writable = real_lh_server.wait_writable()
    _put_and_read(config, "after-the-kill", timeout=5)
    real_lh.timings["server 1 restarted (RPCs)"] = answering
    real_lh.timings["then writable"] = writable


def test_the_server_carries_on_after_kafka_restarts(
    real_lh: RealLittleHorse, real_lh_server: LittleHorseServer, lh_tenant: str
) -> None:
    assert real_lh.kafka is not None
    real_lh.timings["Kafka restarted"] = real_lh.kafka.restart()
    started = time.monotonic()
    _put_and_read(real_lh_server.config(lh_tenant), "after-kafka")
    real_lh.timings["then a write"] = time.monotonic() - started
    assert real_lh_server.running


def test_a_second_server_joins_the_cluster(
    real_lh_cluster: RealLittleHorse, lh_tenant: str
) -> None:
    first, second = real_lh_cluster.servers
    assert second.instance_id == 2 and second.port != first.port
    _put_and_read(first.config(lh_tenant), "seen-by-both")
    # Metadata is global: server 2 serves what server 1 took.
    stub = second.config(lh_tenant).stub()
    retry_rpc(lambda: stub.GetTaskDef(TaskDefId(name="seen-by-both"), timeout=5))

    # A worker that registers through one server is told to poll both (the advertised
    # listeners), once the group has settled; until then RegisterTaskWorker is UNAVAILABLE
    # ("Kafka Streams not ready yet") although /readiness says OK.
    request = RegisterTaskWorkerRequest(
        task_worker_id="harness-test", task_def_id=TaskDefId(name="seen-by-both")
    )

    def hosts() -> set[int]:
        reply = retry_rpc(lambda: stub.RegisterTaskWorker(request, timeout=5), timeout=30)
        return {host.port for host in reply.your_hosts}

    started = time.monotonic()
    while (seen := hosts()) != {first.port, second.port}:
        if time.monotonic() - started > 30:
            raise AssertionError(f"your_hosts: {seen}, want {first.port} and {second.port}")
        time.sleep(0.5)
    real_lh_cluster.timings["then both advertised"] = time.monotonic() - started
