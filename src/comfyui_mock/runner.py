"""MockComfyUIThread: a MockComfyUI on its own event loop in a background thread.

Synchronous tests (and async tests that must not share their loop with the server) use this;
every control method can be called from the test's thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from comfyui_mock.control_api import ControlAPI
from comfyui_mock.server import MockComfyUI

T = TypeVar("T")
START_TIMEOUT = 30.0


class MockComfyUIThread(ControlAPI):
    @property
    def _mock(self) -> MockComfyUI:
        return self.server

    def __init__(self, server: MockComfyUI) -> None:
        self.server = server
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def create(
        cls,
        output_dir: Path | str,
        temp_dir: Path | str | None = None,
        input_dir: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        job_delay: float = 0.0,
    ) -> MockComfyUIThread:
        return cls(MockComfyUI(output_dir, temp_dir, input_dir, host, port, job_delay))

    @classmethod
    def in_directory(
        cls, root: Path | str, host: str = "127.0.0.1", port: int = 0, job_delay: float = 0.0
    ) -> MockComfyUIThread:
        """A mock whose output, temp and input directories are subfolders of `root`."""
        base = Path(root)
        return cls.create(base / "output", base / "temp", base / "input", host, port, job_delay)

    def start(self) -> MockComfyUIThread:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as ex:  # reported to the starting thread
                failure.append(ex)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.server.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="comfyui-mock", daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError("comfyui-mock did not start in time")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT)
        self._thread = None
        self._loop = None

    def __enter__(self) -> MockComfyUIThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("comfyui-mock is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- what the fixture handle offers -------------------------------------------------------

    @property
    def url(self) -> str:
        return self.server.url

    def restart(self, downtime: float = 0.0) -> None:
        self._run(self.server.restart(downtime))
