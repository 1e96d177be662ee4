"""`comfyui-mock` in a process of its own (as a real ComfyUI would be: a mock in the test's
process would share its interpreter and CPU with the test), driven over its control API."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from harness_jvm import guard_group, release_group

from comfyui_mock.remote import RemoteMockComfyUI

START_TIMEOUT = 30.0


class MockProcess:
    """A `comfyui-mock` on a free loopback port with its folders under `root`; `.remote` is
    its control handle (`fail_http`, `drop_websockets`, `executions`...)."""

    def __init__(self, root: Path, job_delay: float = 0.0) -> None:
        self.root = root
        self.job_delay = job_delay
        self.log = root / "comfyui-mock.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._remote: RemoteMockComfyUI | None = None

    @property
    def remote(self) -> RemoteMockComfyUI:
        assert self._remote is not None, "not started"
        return self._remote

    def __enter__(self) -> Self:
        dirs = {name: self.root / name for name in ("output", "temp", "input")}
        for folder in dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "comfyui_mock.cli",
                    *("--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING"),
                    *("--delay", str(self.job_delay)),
                    *(arg for name, path in dirs.items() for arg in (f"--{name}-dir", str(path))),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        guard_group(self._proc.pid)
        try:
            self._remote = RemoteMockComfyUI(self._wait_url())
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_url(self) -> str:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith("comfyui-mock listening on "):
                    return line.split()[-1]
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"comfyui-mock did not start:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def state(self) -> dict[str, Any]:
        """GET /mock/state: executions per prompt id, requests per route, armed faults."""
        return self.remote.state()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self, grace: float = 10.0) -> None:
        if self._remote is not None:
            self._remote.close()
            self._remote = None
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        release_group(self._proc.pid)
