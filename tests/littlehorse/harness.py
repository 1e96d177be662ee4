"""A real LittleHorse server (and the single-node Kafka it needs) on loopback, without Docker.

The same code serves the pytest fixtures (tests/littlehorse/conftest.py) and people:

    uv run python tests/littlehorse/harness.py up        # Ctrl-C stops it
    uv run python tests/littlehorse/harness.py fetch     # only download the jars

See tests/littlehorse/README.md.
"""

from __future__ import annotations

import argparse
import base64
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import grpc
from google.protobuf.empty_pb2 import Empty
from harness_jars import KAFKA_POM, SERVER_POM, Jars, MissingPrerequisite, fetch, find_java
from harness_jvm import (
    JavaProcess,
    StartupError,
    clean_env,
    free_ports,
    make_workdir,
    remove_workdir,
)
from littlehorse.config import LHConfig
from littlehorse.model import PutTenantRequest, TenantId
from littlehorse.model.service_pb2_grpc import LittleHorseStub

__all__ = [
    "Kafka",
    "LittleHorseServer",
    "MissingPrerequisite",
    "RealLittleHorse",
    "StartupError",
    "retry_rpc",
]

HOST = "127.0.0.1"
CLUSTER_ID = "comfyui-test"
# Re-put (idempotent) to learn whether writes go through; never used for anything else.
PROBE_TENANT = "harness-probe"
START_TIMEOUT = 120.0

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
KAFKA_JVM_FLAGS = ["-Xmx512m", "-Djava.awt.headless=true"]

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


def _kafka_uuid() -> str:
    # What `kafka-storage random-uuid` prints, without starting a JVM for it: 16 random bytes,
    # URL-safe base64, never starting with "-" (Kafka rejects those as command-line ids).
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def _kafka_brokers(port: int) -> int:
    """How many brokers a Metadata request (v4) to 127.0.0.1:`port` lists; 0 while the broker
    is not serving yet. A bare TCP connect is not enough: the port is bound early in start-up."""
    client_id = b"comfyui-test-probe"
    header = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    body = struct.pack(">ib", -1, 0)  # all topics, no auto-creation
    request = header + body
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            reply = b""
            while len(reply) < 16:
                chunk = sock.recv(4096)
                if not chunk:
                    return 0
                reply += chunk
    except OSError:
        return 0
    _size, _correlation, _throttle, brokers = struct.unpack(">iiii", reply[:16])
    return brokers


def _wait(process: JavaProcess, ready: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not ready():
        process.check_alive()
        if time.monotonic() - started > timeout:
            raise StartupError(f"{what} not ready within {timeout:.0f} s\n{process.tail()}")
        time.sleep(0.1)
    return time.monotonic() - started


class Kafka:
    """A single-node KRaft broker+controller with its data in `workdir`."""

    def __init__(self, java: Path, jars: Jars, workdir: Path) -> None:
        self.java = java
        self.jars = jars
        self.port, self.controller_port = free_ports(2)
        self.data_dir = workdir / "kafka-data"
        self.properties = workdir / "kafka.properties"
        self.process = JavaProcess(
            "kafka",
            [
                str(java),
                *KAFKA_JVM_FLAGS,
                "-cp",
                jars.classpath,
                "kafka.Kafka",
                str(self.properties),
            ],
            clean_env("KAFKA_", "CLASSPATH"),
            workdir / "kafka.log",
            workdir,
        )
        self._formatted = False

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def _write_properties(self) -> None:
        self.properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{HOST}:{self.controller_port}",
                    f"listeners=PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://{HOST}:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self.data_dir}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    # One partition, not 50: creating them is most of the first group join.
                    "offsets.topic.num.partitions=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    # After a SIGKILL the controller fences the broker's old registration only
                    # when this expires (default 9 s): a restart took 12.6 s, with 3 s it takes 5-7.
                    "broker.session.timeout.ms=3000",
                    "broker.heartbeat.interval.ms=500",
                    "",
                ]
            )
        )

    def _format(self) -> None:
        self._write_properties()
        command = [
            str(self.java),
            "-cp",
            self.jars.classpath,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _kafka_uuid(),
            "-c",
            str(self.properties),
        ]
        with self.process.log.open("ab") as out:
            done = subprocess.run(
                command, stdout=out, stderr=out, timeout=120, env=self.process.env
            )
        if done.returncode != 0:
            raise StartupError(f"kafka-storage format failed\n{self.process.tail()}")
        self._formatted = True

    def start(self, timeout: float = START_TIMEOUT) -> float:
        """Format (the first time only), start, wait until it serves; the seconds it took."""
        started = time.monotonic()
        if not self._formatted:
            self._format()
        self.process.start()
        _wait(self.process, lambda: _kafka_brokers(self.port) > 0, timeout, "Kafka")
        return time.monotonic() - started

    def kill(self) -> None:
        self.process.kill()

    def restart(self, timeout: float = START_TIMEOUT) -> float:
        """SIGKILL, then start again on the same data and ports."""
        self.kill()
        return self.start(timeout)


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
        _wait(self.process, self._answers, timeout, f"LittleHorse server {self.instance_id}")
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


class RealLittleHorse:
    """Kafka plus one LittleHorse server (more with add_server()), all in a temp folder."""

    def __init__(self, *, partitions: int = 3) -> None:
        self.partitions = partitions
        self.timings: dict[str, float] = {}
        self.workdir: Path | None = None
        self.kafka: Kafka | None = None
        self.servers: list[LittleHorseServer] = []
        self._java: Path | None = None
        self._server_jars: Jars | None = None

    @property
    def server(self) -> LittleHorseServer:
        return self.servers[0]

    def start(self) -> Self:
        """Fetch (or reuse) the jars, start Kafka and server 1. Raises MissingPrerequisite
        when a JDK, mvn or the download is missing, StartupError when a JVM does not start."""
        self._java = find_java()
        kafka_jars = fetch(KAFKA_POM)
        self._server_jars = fetch(SERVER_POM)
        for jars, what in ((kafka_jars, "Kafka"), (self._server_jars, "server")):
            if jars.fetch_seconds is not None:
                self.timings[f"{what} jars fetched"] = jars.fetch_seconds
        self.workdir = make_workdir("real-littlehorse-")
        try:
            self.kafka = Kafka(self._java, kafka_jars, self.workdir)
            self.timings["Kafka up"] = self.kafka.start()
            self.add_server()
        except BaseException:
            self.stop()
            raise
        return self

    def add_server(self, timeout: float = START_TIMEOUT) -> LittleHorseServer:
        """One more server in the same cluster (same Kafka and LHS_CLUSTER_ID), started."""
        assert self._java and self._server_jars and self.kafka and self.workdir
        server = LittleHorseServer(
            self._java,
            self._server_jars,
            self.kafka,
            len(self.servers) + 1,
            self.workdir,
            self.partitions,
        )
        self.servers.append(server)
        self.timings[f"server {server.instance_id} up"] = server.start(timeout)
        return server

    def remove_server(self, server: LittleHorseServer, grace: float = 20.0) -> None:
        server.stop(grace)
        self.servers.remove(server)

    def stop(self) -> None:
        # SIGKILL: the state goes with the folder, so a clean shutdown would buy nothing (and a
        # server whose Kafka has gone ignores SIGTERM while it retries).
        for server in reversed(self.servers):
            server.kill()
        if self.kafka is not None:
            self.kafka.kill()
        if self.workdir is not None:
            remove_workdir(self.workdir)
            self.workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def describe_timings(self) -> str:
        """What took how long so far, e.g. "Kafka up in 3.4 s, server 1 up in 11.0 s"."""
        return ", ".join(f"{what} in {seconds:.1f} s" for what, seconds in self.timings.items())


_HOW_TO_USE = """
In another shell, from the repository:

  export LHC_API_HOST={host} LHC_API_PORT={port}
  uv run comfyui-worker register                 # the TaskDefs
  uv run python examples/wfspec.py               # the comfyui-generate WfSpec
  # a worker, here against the mock ComfyUI (or set COMFYUI_BASE_URL to a real one):
  uv run comfyui-mock --port 8188 --output-dir /tmp/comfy/output \\
      --temp-dir /tmp/comfy/temp --input-dir /tmp/comfy/input &
  COMFYUI_BASE_URL=http://127.0.0.1:8188 COMFYUI_OUTPUT_DIR=/tmp/comfy/output \\
      COMFYUI_TEMP_DIR=/tmp/comfy/temp COMFYUI_INPUT_DIR=/tmp/comfy/input \\
      uv run comfyui-worker serve

Starting a WfRun without lhctl: see tests/littlehorse/README.md. Ctrl-C here stops the
server(s) and Kafka and deletes their state.
"""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _up(servers: int, partitions: int) -> int:
    lh = RealLittleHorse(partitions=partitions)
    # SIGTERM takes the same way out as Ctrl-C, so the JVMs are stopped in order; and SIGINT
    # is restored in case this was started in the background of a script, which ignores it.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        lh.start()
        for _ in range(servers - 1):
            lh.add_server()
        first = lh.server
        assert lh.kafka is not None
        print(
            f"LittleHorse {first.version} on {first.address}, Kafka on {lh.kafka.bootstrap}; "
            f"{lh.describe_timings()}\nlogs and state in {lh.workdir}"
        )
        for server in lh.servers[1:]:
            print(f"server {server.instance_id} on {server.address} (same cluster)")
        print(_HOW_TO_USE.format(host=HOST, port=first.port), flush=True)
        while True:
            for server in lh.servers:
                server.process.check_alive()  # a server that died on its own ends the run
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("\nstopping", file=sys.stderr)
        return 0
    except (MissingPrerequisite, StartupError) as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 1
    finally:
        lh.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="harness.py", description="A real LittleHorse server on loopback, for trying things"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Kafka and the server(s); Ctrl-C stops them")
    up.add_argument("--servers", type=int, default=1, help="servers in the cluster (default 1)")
    up.add_argument("--partitions", type=int, default=3, help="LHS_CLUSTER_PARTITIONS")
    sub.add_parser("fetch", help="download the jars into the cache, if not there yet")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        try:
            for pom in (KAFKA_POM, SERVER_POM):
                jars = fetch(pom)
                print(f"{jars.artifact}: {jars.count} jars in {jars.folder}")
        except MissingPrerequisite as exc:
            print(f"harness: {exc}", file=sys.stderr)
            return 1
        return 0
    return _up(args.servers, args.partitions)


if __name__ == "__main__":
    sys.exit(main())
