"""A real `comfyui-worker serve` with its health server on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME
from lh.fake_server import FakeLittleHorse
from lh.serve_process import serve_env as lh_serve_env
from lh.serve_process import terminate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env(fake: FakeLittleHorse, mock: MockHandle, **extra: str) -> dict[str, str]:
    """serve_process's environment with fast retries."""
    return lh_serve_env(
        fake,
        mock,
        COMFYUI_WORKER_HEALTH_HOST="127.0.0.1",
        COMFYUI_RETRIES="1",
        COMFYUI_BACKOFF_BASE="0.01",
        COMFYUI_BACKOFF_MAX="0.05",
        **extra,
    )


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    env: dict[str, str]
    http: httpx.AsyncClient
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(path)

    async def wait_for(self, path: str, status: int, within: float = 15) -> httpx.Response:
        """Poll `path` until it answers `status` (bounded)."""
        async with asyncio.timeout(within):
            while True:
                assert self.proc.returncode is None, self.log()
                with contextlib.suppress(httpx.TransportError):
                    response = await self.get(path)
                    if response.status_code == status:
                        return response
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def served(
    fake: FakeLittleHorse, mock: MockHandle, workdir: Path, *args: str, **extra: str
) -> AsyncIterator[Served]:
    """`serve` (`args` go before the subcommand, e.g. -v), ready and polling; SIGTERM after."""
    port = free_port()
    log_path = workdir / "serve.log"
    env = serve_env(fake, mock, COMFYUI_WORKER_HEALTH_PORT=str(port), **extra)
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "comfyui_worker.cli", *args, "serve",
            env=env, cwd=workdir, stdout=log, stderr=log,
        )  # fmt: skip
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        server = Served(proc, env, http, log_path)
        try:
            await server.wait_for("/readyz", 200, within=30)
            # Ready means the worker's stream is open; its first poll reaches the server a
            # moment later.
            await asyncio.to_thread(fake.wait_for_poller, TASK_NAME, timeout=10)
            yield server
        finally:
            await terminate(proc, timeout=15)
