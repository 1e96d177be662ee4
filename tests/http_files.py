"""A loopback HTTP server for input-URL tests: files (also with a Content-Encoding), redirects
(setting a cookie when asked), errors, slow, endless and truncated bodies, and files held back
until the test releases them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web


@dataclass
class FileServer:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    # name -> (body, its Content-Encoding), served as they are under /encoded/<name>
    encoded: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    cookies: list[str] = field(default_factory=list)  # the Cookie header of each request
    # `held_url` answers once this is set (the fixture sets it when the test ends).
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def file_url(self, name: str, host: str | None = None) -> str:
        base = self.url if host is None else self.url.replace("127.0.0.1", host)
        return f"{base}/files/{name}"

    def held_url(self, name: str) -> str:
        """A file whose download starts at once and ends only after `release` is set."""
        return f"{self.url}/held/{name}"

    async def wait_requests(self, path: str, count: int = 1) -> None:
        async with asyncio.timeout(10):
            while self.requests.count(path) < count:
                await asyncio.sleep(0.01)


@pytest.fixture
async def file_server() -> AsyncIterator[FileServer]:
    server = FileServer(url="")
    closing = asyncio.Event()

    def record(request: web.Request) -> None:
        server.requests.append(request.path)
        server.cookies.append(request.headers.get("Cookie", ""))

    async def files(request: web.Request) -> web.StreamResponse:
        record(request)
        data = server.files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data)

    async def encoded(request: web.Request) -> web.StreamResponse:
        record(request)
        body, coding = server.encoded[request.match_info["name"]]
        return web.Response(body=body, headers={"Content-Encoding": coding})

    async def held(request: web.Request) -> web.StreamResponse:
        record(request)
        response = web.StreamResponse()
        await response.prepare(request)
        await server.release.wait()
        await response.write(server.files[request.match_info["name"]])
        return response

    async def redirect(request: web.Request) -> web.StreamResponse:
        record(request)
        cookie = request.query.get("cookie")
        raise web.HTTPFound(request.query["to"], headers={"Set-Cookie": cookie} if cookie else None)

    async def status(request: web.Request) -> web.StreamResponse:
        return web.Response(status=int(request.match_info["code"]))

    async def endless(request: web.Request) -> web.StreamResponse:
        """Chunked, no Content-Length: only counting while streaming can stop it."""
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(10_000):
            await response.write(b"x" * 65536)
        return response

    async def truncated(request: web.Request) -> web.StreamResponse:
        """Promises 100 000 bytes, sends 1 000 and hangs up."""
        response = web.StreamResponse(headers={"Content-Length": "100000"})
        await response.prepare(request)
        await response.write(b"x" * 1000)
        assert request.transport is not None
        request.transport.close()
        return response

    async def slow(request: web.Request) -> web.StreamResponse:
        await closing.wait()  # answers only when the fixture ends
        return web.Response(body=b"late")

    async def loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/loop")

    app = web.Application()
    app.router.add_get("/files/{name}", files)
    app.router.add_get("/encoded/{name}", encoded)
    app.router.add_get("/held/{name}", held)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/endless", endless)
    app.router.add_get("/slow", slow)
    app.router.add_get("/truncated", truncated)
    app.router.add_get("/loop", loop)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        closing.set()
        server.release.set()
        await runner.cleanup()
