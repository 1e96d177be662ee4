"""Input connections: HTTPS over loopback servers with a throw-away CA, names resolved through
the guard's resolver (a.test and b.test are both 127.0.0.1 here); cookies."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from comfyui_worker.exceptions import InputFetchError
from comfyui_worker.media.addresses import IPAddress, Resolver, any_address
from comfyui_worker.media.fetch import InputGuard, UrlFetcher
from http_files import FileServer
from tls_certs import ThrowawayCA

BODY = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100


@dataclass
class HttpsServer:
    port: int
    # (Host header, the client's port) of every request answered: one port, one connection.
    requests: list[tuple[str, int]] = field(default_factory=list)

    def url(self, host: str) -> str:
        return f"https://{host}:{self.port}/a.png"


@contextlib.asynccontextmanager
async def https_server(context: ssl.SSLContext) -> AsyncIterator[HttpsServer]:
    server = HttpsServer(port=0)

    async def serve(request: web.Request) -> web.Response:
        assert request.transport is not None
        server.requests.append((request.host, request.transport.get_extra_info("peername")[1]))
        return web.Response(body=BODY)

    app = web.Application()
    app.router.add_get("/a.png", serve)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        await runner.cleanup()


def loopback_names(*names: str) -> Resolver:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        if host not in names:
            raise OSError(f"{host} is not a name of this test")
        return [ipaddress.ip_address("127.0.0.1")]

    return resolve


def fetcher(ca: ThrowawayCA) -> UrlFetcher:
    guard = InputGuard(allowed=any_address, resolver=loopback_names("a.test", "b.test"))
    return UrlFetcher(max_bytes=100_000, timeout=10, guard=guard, verify=ca.client_context())


async def test_a_connection_is_not_reused_for_a_name_its_certificate_does_not_hold(
    tls_ca: ThrowawayCA, tmp_path: Path
) -> None:
    async with https_server(tls_ca.server_context("a.test")) as server:
        f = fetcher(tls_ca)
        try:
            for _ in range(2):
                size, _ = await f.fetch("a.png", server.url("a.test"), tmp_path / "a")
                assert size == len(BODY)
            with pytest.raises(InputFetchError) as err:
                await f.fetch("b.png", server.url("b.test"), tmp_path / "b")
        finally:
            await f.aclose()
    # b.test, at a.test's address, was asked for its own certificate, and has none.
    assert "input 'b.png'" in str(err.value) and "CERTIFICATE_VERIFY_FAILED" in str(err.value)
    assert [host for host, _ in server.requests] == [f"a.test:{server.port}"] * 2
    assert server.requests[0][1] == server.requests[1][1]  # a.test's connection was reused


async def test_each_name_gets_its_own_connection_even_on_one_address(
    tls_ca: ThrowawayCA, tmp_path: Path
) -> None:
    async with https_server(tls_ca.server_context("a.test", "b.test")) as server:
        f = fetcher(tls_ca)
        try:
            for host in ("a.test", "b.test", "a.test"):
                await f.fetch("x.png", server.url(host), tmp_path / "x")
        finally:
            await f.aclose()
    (a, a_port), (b, b_port), (again, again_port) = server.requests
    assert (a, b, again) == (f"a.test:{server.port}", f"b.test:{server.port}", a)
    assert a_port == again_port != b_port


async def test_no_cookie_goes_from_one_fetch_to_another(
    file_server: FileServer, tmp_path: Path
) -> None:
    file_server.files["a.png"] = BODY
    f = UrlFetcher(max_bytes=100_000, timeout=10, guard=InputGuard(allowed=any_address))
    try:
        # One job's input server sets a cookie on a redirect: that fetch's next hop sends it...
        sets = f"{file_server.url}/redirect?to=/files/a.png&cookie=session%3Djob-a"
        await f.fetch("a.png", sets, tmp_path / "a")
        # ...and another job's fetch from the same server does not.
        await f.fetch("b.png", file_server.file_url("a.png"), tmp_path / "b")
    finally:
        await f.aclose()
    assert file_server.requests == ["/redirect", "/files/a.png", "/files/a.png"]
    assert file_server.cookies == ["", "session=job-a", ""]
