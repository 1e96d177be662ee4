"""Websocket clients and message delivery, following ComfyUI's PromptServer.

Sockets are kept in a dict keyed by client id. A new socket with a known id replaces the old
entry, and when any socket closes its id is popped: with two sockets on one id the older one
hears nothing and, once it closes, neither does the newer one (captures/19).

Messages go through one queue and one publisher task, as in ComfyUI, so every client sees them
in the order they were produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

BINARY_TEXT = 3
# (event name or binary type, payload, target client id or None for everyone)
Message = tuple[str | int, Any, Any]


class SocketHub:
    def __init__(self, on_delivered: Callable[[str], bool]) -> None:
        """on_delivered(event) is told about each delivered message; True closes all sockets."""
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.feature_flags: dict[str, dict[str, Any]] = {}
        self._on_delivered = on_delivered
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._publisher: asyncio.Task[None] | None = None
        self._all: set[web.WebSocketResponse] = set()

    def start(self) -> None:
        self._publisher = asyncio.get_running_loop().create_task(self._publish_loop())

    async def stop(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publisher = None
        await self.close_all()

    def send(self, event: str, data: Any, sid: Any = None) -> None:
        self._queue.put_nowait((event, data, sid))

    def send_text_preview(self, node_id: str, text: str, sid: Any = None) -> None:
        node = node_id.encode()
        payload = len(node).to_bytes(4, "big") + node + text.encode()
        self._queue.put_nowait((BINARY_TEXT, payload, sid))

    def register(self, sid: str, ws: web.WebSocketResponse) -> None:
        self.sockets[sid] = ws
        self.feature_flags[sid] = {}
        self._all.add(ws)

    def unregister(self, sid: str, ws: web.WebSocketResponse) -> None:
        # ComfyUI pops by id even when a newer socket owns it now; that is the captured bug.
        self.sockets.pop(sid, None)
        self.feature_flags.pop(sid, None)
        self._all.discard(ws)

    def discard_pending(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def close_all(self) -> None:
        sockets = list(self._all)
        await asyncio.gather(
            *(ws.close(code=1001, message=b"server going away") for ws in sockets),
            return_exceptions=True,
        )
        self.sockets.clear()
        self.feature_flags.clear()
        self._all.clear()

    async def send_now(self, ws: web.WebSocketResponse, event: str, data: Any) -> None:
        with contextlib.suppress(Exception):
            await ws.send_json({"type": event, "data": data})

    async def _deliver(self, message: Message) -> bool:
        event, data, sid = message
        if sid is None:
            targets = list(self.sockets.values())
        elif isinstance(sid, str) and sid in self.sockets:
            targets = [self.sockets[sid]]
        else:
            # Socket ids are strings; any other client_id a prompt carried reaches nobody.
            targets = []
        delivered = False
        for ws in targets:
            try:
                if isinstance(event, int):
                    await ws.send_bytes(event.to_bytes(4, "big") + data)
                else:
                    await ws.send_json({"type": event, "data": data})
                delivered = True
            except Exception as ex:  # a socket closing under us is normal
                log.debug("websocket send failed: %s", ex)
        return delivered

    async def _publish_loop(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                if await self._deliver(message):
                    name = message[0] if isinstance(message[0], str) else f"binary:{message[0]}"
                    if self._on_delivered(name):
                        await self.close_all()
            except Exception:  # one bad message must not silence every later one
                log.exception("could not publish %r", message[0])
