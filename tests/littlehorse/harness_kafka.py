"""A single-node KRaft Kafka (broker and controller in one JVM) for the LittleHorse server."""

from __future__ import annotations

import base64
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

from harness_jars import Jars
from harness_jvm import (
    HOST,
    START_TIMEOUT,
    JavaProcess,
    StartupError,
    clean_env,
    free_ports,
    wait_until,
)

KAFKA_JVM_FLAGS = ["-Xmx512m", "-Djava.awt.headless=true"]


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
    return int(brokers)


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
        wait_until(self.process, lambda: _kafka_brokers(self.port) > 0, timeout, "Kafka")
        return time.monotonic() - started

    def kill(self) -> None:
        self.process.kill()

    def restart(self, timeout: float = START_TIMEOUT) -> float:
        """SIGKILL, then start again on the same data and ports."""
        self.kill()
        return self.start(timeout)
