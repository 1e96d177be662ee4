"""The websockets of one ComfyUI's jobs: a fresh client id for each job, one kept open for the
next job when asked (`keep_spare`), and closing that never holds a job up.

A spare takes the handshake off the next job's path: it is opened once a job has submitted its
prompt (its own handshake no longer in anybody's way) and read until a job takes it, because
ComfyUI writes to its sockets one after the other, so one it cannot write to would hold up the
events of every job.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TypeVar

from websockets.asyncio.client import ClientConnection

from ..exceptions import TransportError
from .events import EventStream, read_until_closed

log = logging.getLogger(__name__)

T = TypeVar("T")

# At exit, how long to wait for websockets still closing (their handshakes are not awaited).
CLOSING_TIMEOUT = 2.0
# A released socket's closing handshake waits for ComfyUI's answer; started at once it competes
# with the job's last steps (reading history, the report) for both processes' time, about a
# millisecond a job when jobs take milliseconds. Nothing is sent to it after its done signal.
CLOSE_DELAY = 0.05


class Sockets:
    """Hands out, keeps and closes the job websockets of one ComfyUI (one per Executor)."""

    def __init__(self, ws_url: str, *, open_timeout: float, keep_spare: bool = False) -> None:
        self.ws_url = ws_url
        self.open_timeout = open_timeout
        self.keep_spare = keep_spare
        self._spare: _Spare | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def open(self) -> EventStream:
        """A connected stream with a client id of its own (a reused one can leave a socket
        that hears nothing): the spare if one is ready, else a new one. Raises
        TransportError."""
        # A spare still connecting is left to finish for a later job: cancelling a handshake
        # halfway would waste it.
        if (spare := self._spare) is not None and not spare.connecting:
            self._spare = None
            if (stream := await spare.take()) is not None:
                return stream
        stream = EventStream(self.ws_url, uuid.uuid4().hex, open_timeout=self.open_timeout)
        await stream.connect()
        return stream

    @property
    def spare_ready(self) -> bool:
        """A spare is connected and waiting for a job."""
        return self._spare is not None and self._spare.open

    def replenish(self) -> None:
        """Start opening a spare for the next job, if asked to keep one and none is there."""
        if self.keep_spare and self._spare is None and not self._closed:
            self._spare = _Spare(
                EventStream(self.ws_url, uuid.uuid4().hex, open_timeout=self.open_timeout)
            )

    def release(self, stream: EventStream) -> None:
        """Close `stream` shortly (`CLOSE_DELAY`), without waiting for it; `aclose` waits for
        those still closing. Releasing a stream released or closed already does nothing."""
        if (conn := stream.detach()) is None:
            return
        task = asyncio.create_task(_close(conn, stream.url, CLOSE_DELAY), name="comfyui-ws-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        self._closed = True
        if (spare := self._spare) is not None:
            self._spare = None
            if (stream := await spare.take()) is not None:
                self.release(stream)
        if self._closing:
            await asyncio.wait(self._closing, timeout=CLOSING_TIMEOUT)


class _Spare:
    """A stream connecting, then read (and what it hears dropped) until a job takes it."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self._ready = False
        self._task = asyncio.create_task(self._run(), name="comfyui-ws-spare")

    async def _run(self) -> None:
        try:
            await self.stream.connect()
        except TransportError as exc:  # ComfyUI going away: the next job opens its own
            log.debug("no spare websocket: %s", exc)
            return
        self._ready = True
        await self.stream.drain()

    @property
    def connecting(self) -> bool:
        return not self._ready and not self._task.done()

    @property
    def open(self) -> bool:
        return self._ready and not self._task.done() and self.stream.is_open

    async def take(self) -> EventStream | None:
        """The stream if it is connected and still open; else None (and it is closed)."""
        usable = self._ready and not self._task.done()
        await settle(self._task)
        if usable and self.stream.is_open:
            return self.stream
        await self.stream.close()
        return None


async def settle(task: asyncio.Task[T]) -> T | None:
    """Cancel `task` and wait for it to end: its result if it had finished, else None (its
    error, if any, logged). Not `await task`, which would swallow our own cancellation."""
    task.cancel()
    await asyncio.wait([task])
    if task.cancelled():
        return None
    if (exc := task.exception()) is not None:
        log.debug("%s failed: %r", task.get_name(), exc)
        return None
    return task.result()


async def _close(conn: ClientConnection, url: str, delay: float = 0.0) -> None:
    try:
        await asyncio.sleep(delay)
        # Whatever is still queued for it is read while it closes (see read_until_closed).
        reader = asyncio.create_task(read_until_closed(conn), name="comfyui-ws-close-read")
        try:
            await conn.close()
        finally:
            reader.cancel()
    except Exception:  # a socket that is going away anyway; nothing depends on it
        log.debug("closing websocket %s failed", url, exc_info=True)
