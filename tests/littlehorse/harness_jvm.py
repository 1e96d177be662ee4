"""JVM subprocesses that cannot outlive the process that started them.

Each JVM gets its own process group (so one killpg takes whatever it spawned, and a Ctrl-C
in the terminal reaches only us, who then stop it in order) and its output goes to a log
file (a pipe nobody reads would block it). Three layers stop them: the owner's `kill()` on
teardown, an atexit hook, and a reaper process that kills every group still registered when
our end of its stdin closes, which also covers SIGKILL, os._exit and pytest-timeout's
thread method, where neither teardown nor atexit runs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# Runs in its own session with SIGINT ignored, so a Ctrl-C cannot take it down before the
# JVMs it guards; it ends when the pipe from its parent closes, whatever ended the parent.
_REAPER = """
import os, shutil, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
watched = {"g": set(), "d": set()}
for line in sys.stdin:
    sign, kind, value = line[0], line[1], line[2:].rstrip("\\n")
    (watched[kind].add if sign == "+" else watched[kind].discard)(value)
for pgid in watched["g"]:
    try:
        os.killpg(int(pgid), signal.SIGKILL)
    except OSError:
        pass
for folder in watched["d"]:
    shutil.rmtree(folder, ignore_errors=True)
"""


class _Reaper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None

    def _send(self, line: str) -> None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [sys.executable, "-c", _REAPER],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            assert self._proc.stdin is not None
            with contextlib.suppress(BrokenPipeError, OSError):
                self._proc.stdin.write(line.encode())
                self._proc.stdin.flush()

    def watch(self, pgid: int) -> None:
        self._send(f"+g{pgid}\n")

    def forget(self, pgid: int) -> None:
        # Without this a later, unrelated group that got the same id would be killed.
        self._send(f"-g{pgid}\n")

    def watch_folder(self, folder: Path) -> None:
        self._send(f"+d{folder}\n")

    def forget_folder(self, folder: Path) -> None:
        self._send(f"-d{folder}\n")


# Everything listens on loopback only; every port is picked free at start.
HOST = "127.0.0.1"
START_TIMEOUT = 120.0

_reaper = _Reaper()
_alive: set[JavaProcess] = set()


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_alive):
        process.kill()


class StartupError(RuntimeError):
    """A JVM did not come up; the message carries the end of its log."""


class JavaProcess:
    """One JVM in its own process group, its output appended to `log`."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        cwd: Path,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.log = log
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        with self.log.open("ab") as out:
            out.write(f"\n===== {self.name} started at {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _reaper.watch(self._proc.pid)
        _alive.add(self)

    def signal(self, sig: signal.Signals) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group and reap it; a no-op when it is not running."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _reaper.forget(proc.pid)
        _alive.discard(self)

    def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        self.signal(signal.SIGTERM)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(grace)
        self.kill()

    def check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise StartupError(
                f"{self.name} exited with status {self._proc.returncode}\n{self.tail()}"
            )

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(no log: {exc})"
        return f"--- last {lines} lines of {self.log}\n" + "\n".join(text[-lines:])


def wait_until(process: JavaProcess, ready: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `ready()` until it is true; StartupError with the log's tail if the process exits
    or `timeout` s pass. The seconds it took."""
    started = time.monotonic()
    while not ready():
        process.check_alive()
        if time.monotonic() - started > timeout:
            raise StartupError(f"{what} not ready within {timeout:.0f} s\n{process.tail()}")
        time.sleep(0.1)
    return time.monotonic() - started


def guard_group(pgid: int) -> None:
    """Have the reaper SIGKILL process group `pgid` if we die first (release_group() when it
    has ended)."""
    _reaper.watch(pgid)


def release_group(pgid: int) -> None:
    _reaper.forget(pgid)


def make_workdir(prefix: str) -> Path:
    """A fresh temp folder, deleted by the reaper if we die before remove_workdir()."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    _reaper.watch_folder(folder)
    return folder


def remove_workdir(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    _reaper.forget_folder(folder)


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now (held together so none repeats)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def clean_env(*drop_prefixes: str) -> dict[str, str]:
    """The process environment without variables that would reconfigure a JVM we start."""
    return {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}
