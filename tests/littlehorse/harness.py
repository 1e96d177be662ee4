"""A real LittleHorse server (and the single-node Kafka it needs) on loopback, without Docker.

The same code serves the pytest fixtures (tests/littlehorse/conftest.py) and people:

    uv run python tests/littlehorse/harness.py up        # Ctrl-C stops it
    uv run python tests/littlehorse/harness.py fetch     # only download the jars

See tests/littlehorse/README.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from harness_jars import KAFKA_POM, SERVER_POM, Jars, MissingPrerequisite, fetch, find_java
from harness_jvm import HOST, START_TIMEOUT, StartupError, make_workdir, remove_workdir
from harness_kafka import Kafka
from harness_server import LittleHorseServer, retry_rpc

__all__ = [
    "Kafka",
    "LittleHorseServer",
    "MissingPrerequisite",
    "RealLittleHorse",
    "StartupError",
    "retry_rpc",
]


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
