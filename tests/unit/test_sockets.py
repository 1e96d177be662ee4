"""Job websockets against a real websocket server on loopback: a fresh client id per job, the
spare kept for the next job (read until taken, replaced when dead), and closing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from comfyui_worker.comfyui.sockets import Sockets
from comfyui_worker.exceptions import TransportError


@dataclass
class Server:
    """Who connected (client ids, in order), who is connected, and who has gone."""

    url: str = ""
    ids: list[str] = field(default_factory=list)
    open: dict[str, ServerConnection] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)
    behaviour: Callable[[ServerConnection, str], Awaitable[None]] | None = None

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not check():
                await asyncio.sleep(0.005)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()

    async def handler(conn: ServerConnection) -> None:
        assert conn.request is not None
        client_id = conn.request.path.split("clientId=")[1]
        state.ids.append(client_id)
        state.open[client_id] = conn
        try:
            if state.behaviour is not None:
                await state.behaviour(conn, client_id)
            await conn.wait_closed()
        finally:
            state.open.pop(client_id, None)
            state.gone.append(client_id)

    async with serve(handler, "127.0.0.1", 0, max_size=None) as ws_server:
        state.url = f"ws://127.0.0.1:{next(iter(ws_server.sockets)).getsockname()[1]}"
        yield state


async def test_every_job_gets_a_socket_and_client_id_of_its_own(server: Server) -> None:
    sockets = Sockets(server.url, open_timeout=5)
    first, second = await sockets.open(), await sockets.open()
    assert first.client_id != second.client_id and server.ids == [
        first.client_id,
        second.client_id,
    ]
    sockets.release(first)
    sockets.release(second)
    await sockets.aclose()
    await server.until(lambda: len(server.gone) == 2)


async def test_the_spare_is_the_next_jobs_socket(server: Server) -> None:
    sockets = Sockets(server.url, open_timeout=5, keep_spare=True)
    sockets.replenish()
    await server.until(lambda: sockets.spare_ready)
    spare_id = server.ids[0]
    stream = await sockets.open()
    assert stream.client_id == spare_id and stream.is_open and server.ids == [spare_id]
    await server.open[spare_id].send('{"type": "executing", "data": {"prompt_id": "p"}}')
    assert (await stream.next_event()).prompt_id == "p"  # the job reads it from here on
    # Taken: the next job opens its own until a new spare is asked for.
    other = await sockets.open()
    assert other.client_id != spare_id and len(server.ids) == 2
    for job in (stream, other):
        sockets.release(job)
    await sockets.aclose()
    await server.until(lambda: len(server.gone) == 2)


async def test_a_spare_is_only_kept_when_asked_for(server: Server) -> None:
    sockets = Sockets(server.url, open_timeout=5)
    sockets.replenish()
    await asyncio.sleep(0.1)
    assert server.ids == []
    await sockets.aclose()


async def test_the_spare_is_read_until_taken_so_the_server_never_waits_on_it(
    server: Server,
) -> None:
    # ComfyUI writes to its sockets one after another: one it could not write to would hold
    # up every job's events. 32 MB is more than the socket buffers hold unread.
    written = asyncio.Event()

    async def broadcast(conn: ServerConnection, client_id: str) -> None:
        for _ in range(128):
            await conn.send(b"\x00\x00\x00\x01" + b"p" * 256 * 1024)  # a big preview
        written.set()

    server.behaviour = broadcast
    sockets = Sockets(server.url, open_timeout=5, keep_spare=True)
    sockets.replenish()
    async with asyncio.timeout(10):
        await written.wait()
    stream = await sockets.open()
    assert stream.client_id == server.ids[0]
    sockets.release(stream)
    await sockets.aclose()


async def test_a_spare_the_server_dropped_is_replaced_by_a_new_socket(server: Server) -> None:
    sockets = Sockets(server.url, open_timeout=5, keep_spare=True)
    sockets.replenish()
    await server.until(lambda: len(server.open) == 1)
    dropped = server.ids[0]
    await server.open[dropped].close()  # e.g. ComfyUI restarting
    await server.until(lambda: dropped in server.gone)
    stream = await sockets.open()
    assert stream.client_id != dropped and stream.is_open
    sockets.release(stream)
    await sockets.aclose()


async def test_no_spare_when_the_server_is_down() -> None:
    sockets = Sockets("ws://127.0.0.1:9", open_timeout=2, keep_spare=True)
    sockets.replenish()
    await asyncio.sleep(0.05)
    with pytest.raises(TransportError, match="unavailable"):
        await sockets.open()
    await sockets.aclose()


async def test_aclose_closes_the_spare_and_released_sockets(server: Server) -> None:
    sockets = Sockets(server.url, open_timeout=5, keep_spare=True)
    job = await sockets.open()
    sockets.replenish()
    await server.until(lambda: len(server.open) == 2)
    sockets.release(job)
    sockets.release(job)  # a second release does nothing
    assert not job.is_open
    await sockets.aclose()
    await server.until(lambda: not server.open)
    assert sorted(server.gone) == sorted(server.ids)
    sockets.replenish()  # closed: no new spare
    await asyncio.sleep(0.05)
    assert len(server.ids) == 2
    with pytest.raises(ConnectionClosed):
        await job.next_event()


async def test_a_spare_still_connecting_is_left_for_a_later_job(server: Server) -> None:
    sockets = Sockets(server.url, open_timeout=5, keep_spare=True)
    sockets.replenish()
    # Taken in the same turn: its handshake has not even started.
    first = await sockets.open()
    await server.until(lambda: sockets.spare_ready)
    spare_id = next(i for i in server.ids if i != first.client_id)
    second = await sockets.open()
    assert second.client_id == spare_id  # finished its handshake and served the next job
    for job in (first, second):
        sockets.release(job)
    await sockets.aclose()


async def test_a_socket_released_with_frames_unread_still_closes_at_once(server: Server) -> None:
    # Past 16 unread frames websockets stops reading, and would not see the answer to its
    # close frame until its 10 s close timeout.
    sent = asyncio.Event()

    async def chatty(conn: ServerConnection, client_id: str) -> None:
        for _ in range(64):
            await conn.send('{"type": "status", "data": {"status": {}}}')
        sent.set()

    server.behaviour = chatty
    sockets = Sockets(server.url, open_timeout=5)
    stream = await sockets.open()
    async with asyncio.timeout(5):
        await sent.wait()
    await asyncio.sleep(0.05)  # they reach the client, which reads none of them
    started = asyncio.get_running_loop().time()
    sockets.release(stream)
    await sockets.aclose()
    await server.until(lambda: stream.client_id in server.gone)
    assert asyncio.get_running_loop().time() - started < 1.5
