"""The health server on loopback against clients that connect and send nothing, or drip their
request: a probe still answers, threads stay bounded, such clients are cut off. And it
listens on IPv6."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from comfyui_mock.handle import MockHandle
from comfyui_worker.observability.health import HealthServer
from comfyui_worker.observability.probe import probe_url
from comfyui_worker.observability.progress import JobBoard
from comfyui_worker.settings import Settings
from lh.fake_server import FakeLittleHorse
from lh.serve_process import serve_env, start_serve, stop_process
from observability.serve_health import free_port


class Ready:
    polling = True
    draining = False
    comfyui_ready = True
    lh_reconnects = 0


@contextlib.asynccontextmanager
async def health_server(host: str = "127.0.0.1") -> AsyncIterator[HealthServer]:
    server = HealthServer(host, 0, Ready(), asyncio.get_running_loop(), board=JobBoard())
    server.start()
    try:
        yield server
    finally:
        await asyncio.to_thread(server.close)


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that send nothing."""
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server ends `sock` within `within` s (end-of-file or a reset)."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def all_closed_by_server(sockets: list[socket.socket], within: float) -> bool:
    deadline = time.monotonic() + within
    return all(closed_by_server(s, max(0.01, deadline - time.monotonic())) for s in sockets)


def handler_threads() -> int:
    return sum("process_request" in thread.name for thread in threading.enumerate())


async def test_a_probe_answers_while_200_idle_connections_are_open() -> None:
    async with health_server() as server:
        with idle_connections(server.port, 200) as idle:
            await asyncio.sleep(0.2)  # all accepted
            url = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=url, timeout=2) as http:
                started = time.monotonic()
                response = await http.get("/healthz")
            assert response.status_code == 200 and time.monotonic() - started < 1
            assert handler_threads() <= 40  # 32 connections at most, each with a thread
            # The idle ones are cut off: the oldest to make room, the rest at the request
            # deadline (5 s).
            assert await asyncio.to_thread(all_closed_by_server, idle, 7)


async def test_a_client_that_drips_its_request_is_cut_off() -> None:
    async with health_server() as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow:

            def drip() -> float:
                """Send a header byte every 0.5 s until the server hangs up; how long that took."""
                started = time.monotonic()
                slow.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
                with contextlib.suppress(OSError):
                    while time.monotonic() - started < 10:
                        slow.sendall(b"a")
                        if closed_by_server(slow, 0.5):
                            break
                return time.monotonic() - started

            assert await asyncio.to_thread(drip) < 7


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="this machine has no IPv6 loopback")


@ipv6
async def test_the_health_server_listens_on_ipv6_loopback() -> None:
    async with health_server("::1") as server:
        assert server.url == f"http://[::1]:{server.port}"
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            assert (await http.get("/healthz")).status_code == 200


@ipv6
async def test_serve_takes_an_ipv6_health_host(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    port = free_port()
    env = serve_env(
        fake, comfyui_mock, COMFYUI_WORKER_HEALTH_HOST="::1", COMFYUI_WORKER_HEALTH_PORT=str(port)
    )
    proc = await start_serve(env, tmp_path)
    try:
        async with httpx.AsyncClient(timeout=2) as http, asyncio.timeout(30):
            while True:
                assert proc.returncode is None, await stop_process(proc)
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"http://[::1]:{port}/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        # The container healthcheck reads the same settings.
        probe = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "comfyui_worker.observability.probe", "/healthz", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await probe.communicate()
        assert probe.returncode == 0, out
    finally:
        output = await stop_process(proc)
    assert f"health server on http://[::1]:{port}" in output


def test_the_probe_asks_a_server_bound_to_every_address_on_loopback() -> None:
    def url(host: str) -> str | None:
        settings = Settings(_env_file=None, worker_health_host=host, worker_health_port=8000)  # type: ignore[call-arg]
        return probe_url(settings, "/healthz")

    assert url("0.0.0.0") == "http://127.0.0.1:8000/healthz"
    assert url("::") == "http://[::1]:8000/healthz"  # it may take IPv6 only
    assert url("::1") == "http://[::1]:8000/healthz"
