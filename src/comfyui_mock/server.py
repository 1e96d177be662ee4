"""MockComfyUI: the server object, its lifecycle and its control API."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from comfyui_mock.app import build_app
from comfyui_mock.control import Controls
from comfyui_mock.control_api import ControlAPI
from comfyui_mock.executor import Executor
from comfyui_mock.files import Dirs
from comfyui_mock.hub import SocketHub
from comfyui_mock.state import PromptQueue

if TYPE_CHECKING:
    from comfyui_mock.runner import MockComfyUIThread

COMFYUI_VERSION = "0.3.64"


class MockComfyUI(ControlAPI):
    """A ComfyUI look-alike on an aiohttp server, run on the caller's event loop.

    `temp_dir` and `input_dir` default to fresh temporary directories that `stop()` removes.
    Control methods are synchronous and safe to call from any thread; `start`, `stop` and
    `restart` are coroutines for the loop that runs the server (see MockComfyUIThread for a
    server on its own thread).
    """

    def __init__(
        self,
        output_dir: Path | str,
        temp_dir: Path | str | None = None,
        input_dir: Path | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        job_delay: float = 0.0,
    ) -> None:
        self._owned_dirs: list[Path] = []
        temp = temp_dir if temp_dir is not None else self._own_dir("temp")
        inputs = input_dir if input_dir is not None else self._own_dir("input")
        self.dirs = Dirs.create(output_dir, temp, inputs)
        self.host = host
        self.port = port
        self.controls = Controls(job_delay)
        self.down = False
        self.queue = PromptQueue()
        self.hub = SocketHub(self.controls.websocket_event_delivered)
        self.executor = Executor(self.queue, self.hub, self.controls, self.dirs, self.record_file)
        self._files_lock = threading.Lock()
        self._written: set[Path] = set()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def _mock(self) -> MockComfyUI:
        return self

    def _own_dir(self, kind: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"comfyui-mock-{kind}-"))
        self._owned_dirs.append(path.resolve())
        return path

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._runner = web.AppRunner(build_app(self), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await self._listen()
        self.hub.start()
        self.executor.start()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port)
        await self._site.start()
        # Port 0 asks the OS for a free port; remember it so a restart comes back on it.
        self.port = int(self._runner.addresses[-1][1])

    async def stop(self) -> None:
        await self.executor.stop()
        await self.hub.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for path in self._owned_dirs:
            shutil.rmtree(path, ignore_errors=True)

    async def restart(self, downtime: float = 0.0) -> None:
        """Like a ComfyUI restart: running job, queue, history and cache gone, sockets closed.

        With a downtime the port refuses connections for that many seconds.
        """
        await self.executor.stop()
        self.hub.discard_pending()
        await self.hub.close_all()
        self.queue.reset()
        self.executor.cache.clear()
        self.executor.client_id = None
        self._remove_written(lambda p: p.is_relative_to(self.dirs.temp))
        if downtime > 0 and self._site is not None:
            self.down = True
            await self._site.stop()
            await asyncio.sleep(downtime)
            await self._listen()
            self.down = False
        self.executor.start()

    # -- helpers for routes and executor -------------------------------------------------------

    def broadcast_status(self) -> None:
        self.hub.send(
            "status", {"status": {"exec_info": {"queue_remaining": self.queue.remaining}}}
        )

    def record_file(self, path: Path) -> None:
        with self._files_lock:
            self._written.add(path)

    def _remove_written(self, which: Callable[[Path], bool]) -> None:
        with self._files_lock:
            chosen = [p for p in self._written if which(p)]
            self._written.difference_update(chosen)
        bases = (self.dirs.output, self.dirs.temp, self.dirs.input)
        for path in chosen:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            parent = path.parent
            # Remove the subfolders saving created ("peer/" of "peer/s01"), never the bases.
            while parent not in bases and any(parent.is_relative_to(b) for b in bases):
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def system_stats(self) -> dict[str, Any]:
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            total, free = os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError, AttributeError):
            total = free = 0
        return {
            "system": {
                "os": os.name,
                "ram_total": total,
                "ram_free": free,
                "comfyui_version": COMFYUI_VERSION,
                "required_frontend_version": "1.27.10",
                "installed_templates_version": "0.1.95",
                "required_templates_version": "0.1.95",
                "python_version": sys.version,
                "pytorch_version": "none (comfyui-mock)",
                "embedded_python": False,
                "argv": list(sys.argv),
            },
            "devices": [
                {
                    "name": "cpu",
                    "type": "cpu",
                    "index": None,
                    "vram_total": total,
                    "vram_free": free,
                    "torch_vram_total": total,
                    "torch_vram_free": free,
                }
            ],
        }

    def describe(self) -> dict[str, Any]:
        """GET /mock/state: where the files go, and what happened so far."""
        with self._files_lock:
            written = len(self._written)
        return {
            "url": self.url,
            "output_dir": str(self.dirs.output),
            "temp_dir": str(self.dirs.temp),
            "input_dir": str(self.dirs.input),
            "queue_remaining": self.queue.remaining,
            "executions": self.controls.all_executions(),
            "requests": self.controls.request_counts(),
            "controls": self.controls.describe(),
            "files_written": written,
        }

    def _in_loop(self, fn: Callable[[], Any]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn()
        else:
            loop.call_soon_threadsafe(fn)

    def start_in_thread(self) -> MockComfyUIThread:
        """Run this server on its own event loop in a background thread."""
        from comfyui_mock.runner import MockComfyUIThread

        return MockComfyUIThread(self).start()
