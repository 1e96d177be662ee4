"""ComfyUI's websocket (`/ws?clientId=`): a stream of parsed events for one client id.

The websocket only wakes us up; `/history` stays the source of truth. Binary frames
(previews) and anything unparseable are skipped: a garbled frame must not fail a job.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.protocol import State
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from ..exceptions import TransportError
from ..observability.logs import mask_userinfo

log = logging.getLogger(__name__)

# Preview frames of big images exceed websockets' 1 MiB default and would close the socket.
MAX_FRAME_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    data: dict[str, Any]

    @property
    def prompt_id(self) -> str | None:
        value = self.data.get("prompt_id")
        return None if value is None else str(value)

    def is_done_signal(self, prompt_id: str) -> bool:
        """`executing {node: null}` for our prompt: sent after its history entry is written."""
        return (
            self.type == "executing"
            and self.data.get("node") is None
            and self.prompt_id == prompt_id
        )


class EventStream:
    """One websocket connection. Use `connect()`; `next_event()` raises on disconnect."""

    def __init__(self, ws_url: str, client_id: str, *, open_timeout: float = 10.0) -> None:
        self.server_url = ws_url.rstrip("/")
        self.url = f"{self.server_url}/ws?clientId={client_id}"
        self.client_id = client_id
        self._open_timeout = open_timeout
        self._conn: ClientConnection | None = None

    async def connect(self) -> None:
        try:
            self._conn = await connect(
                self.url,
                proxy=proxy_for(self.server_url),
                open_timeout=self._open_timeout,
                max_size=MAX_FRAME_BYTES,
                ping_interval=20,
                ping_timeout=20,
                # Offered, ComfyUI's aiohttp would deflate every message for us to inflate:
                # CPU on both sides per event, and on previews (already JPEG or PNG) for
                # nothing. Its messages are small JSON or compressed images, on a local link.
                compression=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise TransportError(
                f"websocket {mask_userinfo(self.url)} unavailable: {type(exc).__name__}: {exc}"
            ) from exc

    async def next_event(self) -> Event:
        """The next JSON event; raises `ConnectionClosed` when the socket drops."""
        if self._conn is None:
            raise ConnectionClosed(None, None)
        while True:
            frame = await self._conn.recv()
            if isinstance(frame, bytes):
                continue
            event = parse_event(frame)
            if event is not None:
                return event

    @property
    def is_open(self) -> bool:
        return self._conn is not None and self._conn.state is State.OPEN

    async def drain(self) -> None:
        """Read and drop every frame until the socket closes (a spare waiting for its job);
        cancelling it loses nothing the next read would return."""
        if self._conn is not None:
            await read_until_closed(self._conn)

    def detach(self) -> ClientConnection | None:
        """Take the connection out (None if there is none): the stream is closed from now on
        and the caller closes the connection."""
        conn, self._conn = self._conn, None
        return conn

    async def close(self) -> None:
        if (conn := self.detach()) is not None:
            await conn.close()


async def read_until_closed(conn: ClientConnection) -> None:
    """Read and drop frames until the connection closes. Frames left unread pause reading
    once 16 are queued, and a paused connection never sees the answer to its close frame."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await conn.recv()


@functools.cache
def proxy_for(ws_url: str) -> str | None:
    """The proxy to reach `ws_url` through, from the environment (`ws_proxy`, `https_proxy`,
    `no_proxy`...), as websockets itself would choose it.

    Left to itself, websockets works this out on every connect by reading the whole
    environment twice (0.1-0.5 ms per job, more with the hundreds of variables a Kubernetes
    pod gets); the environment does not change while the worker runs, so once per URL.
    """
    return get_proxy(parse_uri(ws_url))


def parse_event(frame: str) -> Event | None:
    try:
        msg = json.loads(frame)
    except json.JSONDecodeError:
        log.debug("ignoring a non-JSON websocket frame: %.80r", frame)
        return None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        log.debug("ignoring a websocket message without a type: %.80r", frame)
        return None
    data = msg.get("data")
    return Event(type=msg["type"], data=data if isinstance(data, dict) else {})
