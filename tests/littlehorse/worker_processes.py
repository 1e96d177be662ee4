"""`comfyui-worker register` and `serve` as real processes against a real LittleHorse server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from harness import LittleHorseServer
from harness_jvm import free_ports, guard_group, release_group

from comfyui_mock.handle import MockHandle


def worker_env(
    server: LittleHorseServer, tenant: str | None, mock: MockHandle | None = None, **settings: str
) -> dict[str, str]:
    """The environment of a worker process for `server` (and `mock`): none of the shell's
    LHC_*/LHW_*/COMFYUI_* variables, so a shell set up for another cluster changes nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LHC_", "LHW_", "COMFYUI_"))}
    env.update(server.env(tenant))
    if mock is not None:
        env.update(
            {
                "COMFYUI_BASE_URL": mock.url,
                "COMFYUI_OUTPUT_DIR": str(mock.output_dir),
                "COMFYUI_TEMP_DIR": str(mock.temp_dir),
                "COMFYUI_INPUT_DIR": str(mock.input_dir),
            }
        )
    env.update(settings)
    return env


def run_cli(
    *args: str,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """`comfyui-worker <args>` to completion. `cwd` should hold no `.env`: the worker reads
    one from its working directory."""
    return subprocess.run(
        [sys.executable, "-m", "comfyui_worker.cli", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ServeProcess:
    """`comfyui-worker serve` with its health server on a free loopback port and its output in
    a file (a pipe nobody reads would block it)."""

    def __init__(self, env: Mapping[str, str], cwd: Path) -> None:
        (self.health_port,) = free_ports(1)
        self.log = cwd / "serve.log"
        self._env = {
            **env,
            "COMFYUI_WORKER_HEALTH_HOST": "127.0.0.1",
            "COMFYUI_WORKER_HEALTH_PORT": str(self.health_port),
        }
        self._cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "comfyui_worker.cli", "serve"],
                env=self._env,
                cwd=self._cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own group, guarded like the JVMs: a test run killed outright must not
                # leave a worker polling behind.
                start_new_session=True,
            )
        guard_group(self._proc.pid)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until /readyz is 200: ComfyUI answers and a poll stream to LittleHorse is open."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise AssertionError(f"serve exited ({self._proc.returncode}):\n{self.output()}")
            with contextlib.suppress(urllib.error.URLError, OSError):
                url = f"http://127.0.0.1:{self.health_port}/readyz"
                with urllib.request.urlopen(url, timeout=1.0) as reply:
                    if reply.status == 200:
                        return
            if time.monotonic() > deadline:
                raise AssertionError(f"serve not ready after {timeout:.0f} s:\n{self.output()}")
            time.sleep(0.1)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM (a drain), SIGKILL if it is still there after `grace` s; the exit status."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        release_group(self._proc.pid)
        return self._proc.returncode
