"""Fixtures of the Executor tests: a finished history entry whose file exists, and a tiny
real websocket server on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from executor_fakes import Script, history_with
from websockets.asyncio.server import Server, ServerConnection, serve


@pytest.fixture
def ok_history(capture: Any, tmp_path: Path) -> dict[str, Any]:
    """A finished entry whose file exists under the test's output folder."""
    (tmp_path / "out" / "peer").mkdir(parents=True)
    (tmp_path / "out" / "peer" / "s01_00001_.png").write_bytes(b"png")
    return history_with(capture("01_empty_image_save")["history_after"]["body"])


@pytest.fixture
async def ws_server() -> AsyncIterator[Callable[[Script], Any]]:
    """Start a websocket server whose handler runs `script(connection, n)` for the n-th
    connection; yields a starter returning (base_url, list of client ids seen)."""
    servers: list[Server] = []

    async def start(script: Script) -> tuple[str, list[str]]:
        seen: list[str] = []

        async def handler(conn: ServerConnection) -> None:
            assert conn.request is not None
            seen.append(conn.request.path.split("clientId=")[1])
            await conn.send(
                json.dumps(
                    {
                        "type": "status",
                        "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": seen[-1]},
                    }
                )
            )
            await script(conn, len(seen))

        server = await serve(handler, "127.0.0.1", 0)
        servers.append(server)
        port = next(iter(server.sockets)).getsockname()[1]
        return f"http://127.0.0.1:{port}", seen

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
