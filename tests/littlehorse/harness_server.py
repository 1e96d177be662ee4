"""One LittleHorse server process, and retries for what a real server answers while busy."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.empty_pb2 import Empty
from harness_jars import Jars
from harness_jvm import HOST, START_TIMEOUT, JavaProcess, clean_env, free_ports, wait_until
from harness_kafka import Kafka
from littlehorse.config import LHConfig
from littlehorse.model import PutTenantRequest, TenantId
from littlehorse.model.service_pb2_grpc import LittleHorseStub

CLUSTER_ID = "comfyui-test"
# Re-put (idempotent) to learn whether writes go through; never used for anything else.
PROBE_TENANT = "harness-probe"

# What upstream's own e2e setup gives each server; the defaults size RocksDB for production
# and would not fit two servers and Kafka on a small CI machine.
SERVER_MEMORY_CAPS = {
    "LHS_CORE_MEMTABLE_SIZE_BYTES": "8388608",
    "LHS_ROCKSDB_TOTAL_MEMTABLE_BYTES": "104857600",
    "LHS_ROCKSDB_TOTAL_BLOCK_CACHE_BYTES": "104857600",
}
SERVER_JVM_FLAGS = [
    "-Xmx1g",
    "-XX:+UseZGC",
    # Logging stays up while the server shuts down, so its last words reach the log.
    "-Dlog4j.shutdownHookEnabled=false",
    # RocksDB loads a native library; without this Java 25 warns on every start.
    "--enable-native-access=ALL-UNNAMED",
]

T = TypeVar("T")


def retry_rpc(
    call: Callable[[], T],
    *,
    timeout: float = 10.0,
    codes: Iterable[grpc.StatusCode] = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE),
    interval: float = 0.1,
) -> T:
    """`call()` until it stops failing with one of `codes`, for at most `timeout` s.

    The server answers a Put before the metadata is committed, so a read right after it can
    say NOT_FOUND; a server that just started can say UNAVAILABLE.
    """
    retried = set(codes)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() not in retried or time.monotonic() >= deadline:
                raise
        time.sleep(interval)


class LittleHorseServer:
    """One LittleHorse server process (LHS_INSTANCE_ID `instance_id`) with its own ports and
    state folder, which survives kill() and restart()."""

    def __init__(
        self,
        java: Path,
        jars: Jars,
        kafka: Kafka,
        instance_id: int,
        workdir: Path,
        partitions: int,
    ) -> None:
        self.instance_id = instance_id
        self.port, self.internal_port, self.health_port = free_ports(3)
        self.state_dir = workdir / f"server-{instance_id}-state"
        self.version = ""
        env = clean_env("LHS_", "LHC_", "LHW_", "LOG_LEVEL", "KAFKA_LOG_LEVEL", "CLASSPATH")
        env.update(
            {
                "LHS_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
                "LHS_CLUSTER_ID": CLUSTER_ID,
                "LHS_INSTANCE_ID": str(instance_id),
                "LHS_STATE_DIR": str(self.state_dir),
                "LHS_LISTENERS": f"PLAIN:{self.port}",
                "LHS_ADVERTISED_LISTENERS": f"PLAIN://{HOST}:{self.port}",
                "LHS_INTERNAL_BIND_PORT": str(self.internal_port),
                "LHS_INTERNAL_ADVERTISED_PORT": str(self.internal_port),
                "LHS_INTERNAL_ADVERTISED_HOST": HOST,
                "LHS_HEALTH_SERVICE_PORT": str(self.health_port),
                "LHS_REPLICATION_FACTOR": "1",
                "LHS_CLUSTER_PARTITIONS": str(partitions),
                "LHS_SHOULD_CREATE_TOPICS": "true",
                # A killed server's partitions move (or come back) after this, not after 60 s.
                "LHS_STREAMS_SESSION_TIMEOUT": "10000",
                "LHS_CORE_STREAM_THREADS": "1",
                **SERVER_MEMORY_CAPS,
            }
        )
        self.process = JavaProcess(
            f"littlehorse-server-{instance_id}",
            [str(java), *SERVER_JVM_FLAGS, "-cp", jars.classpath, "io.littlehorse.App"],
            env,
            workdir / f"server-{instance_id}.log",
            workdir,
        )

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def env(self, tenant: str | None = None) -> dict[str, str]:
        """The LHC_* variables of a client of this server (for subprocesses)."""
        env = {
            "LHC_API_HOST": HOST,
            "LHC_API_PORT": str(self.port),
            "LHC_API_PROTOCOL": "PLAINTEXT",
        }
        if tenant:
            env["LHC_TENANT_ID"] = tenant
        return env

    def config(self, tenant: str | None = None, **extra: str) -> LHConfig:
        """An LHConfig for this server that ignores the process environment.

        LHConfig reads LHC_*/LHW_* from the environment in its constructor and lets them win
        over load(); a shell that points at another cluster must not send tests there.
        """
        config = LHConfig()
        config._configs = {**self.env(tenant), **{k.upper(): v for k, v in extra.items()}}
        return config

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://{HOST}:{self.health_port}/readiness", timeout=1.0
            ) as reply:
                if reply.status != 200:
                    return False
        except (urllib.error.URLError, OSError):
            return False
        # /readiness can say OK before RPCs work. A fresh channel each try: a cached one sits
        # in gRPC's reconnect back-off after a restart.
        channel = grpc.insecure_channel(self.address)
        try:
            version = LittleHorseStub(channel).GetServerVersion(Empty(), timeout=2.0)
        except grpc.RpcError:
            return False
        finally:
            channel.close()
        self.version = f"{version.major_version}.{version.minor_version}.{version.patch_version}"
        return True

    def start(self, timeout: float = START_TIMEOUT) -> float:
        """Start (on the existing state folder, if any) and wait until an RPC works; the
        seconds it took."""
        started = time.monotonic()
        self.process.start()
        wait_until(self.process, self._answers, timeout, f"LittleHorse server {self.instance_id}")
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: nothing flushed, no goodbye to the consumer group."""
        self.process.kill()

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (the server leaves its consumer group, so the others take over its
        partitions at once), SIGKILL after `grace` s."""
        self.process.stop(grace)

    def restart(self, timeout: float = START_TIMEOUT) -> float:
        """SIGKILL, then start again on the same state folder and ports; the seconds until
        RPCs answer. Writes may take longer: see wait_writable()."""
        self.kill()
        return self.start(timeout)

    def wait_writable(self, timeout: float = 60.0) -> float:
        """Until a write goes through the server's processor; the seconds it took.

        After a SIGKILL and restart, /readiness and reads are back within seconds, but writes
        answer UNAVAILABLE ("Kafka Streams not ready yet") until the consumer group has let go
        of the killed instance, up to LHS_STREAMS_SESSION_TIMEOUT after the kill.
        """
        started = time.monotonic()
        stub = self.config().stub()
        retry_rpc(
            lambda: stub.PutTenant(PutTenantRequest(id=PROBE_TENANT), timeout=5),
            timeout=timeout,
            codes=(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED),
            interval=0.2,
        )
        return time.monotonic() - started

    @property
    def running(self) -> bool:
        return self.process.running

    def create_tenant(self, tenant: str, timeout: float = 30.0) -> None:
        """PutTenant, then wait until the server knows it (requests in an unknown tenant are
        refused)."""
        stub = self.config().stub()
        retry_rpc(lambda: stub.PutTenant(PutTenantRequest(id=tenant), timeout=5), timeout=timeout)
        retry_rpc(lambda: stub.GetTenant(TenantId(id=tenant), timeout=5), timeout=timeout)
