"""Waiting for one submitted prompt to finish, and the hooks that watch a job.

The websocket only tells us *when* to look; `/queue` and `/history/{id}` say *what* happened.
The wait survives a dropped socket (reconnect, then reconcile), a deaf socket (periodic
reconciliation) and a socket that never opens (polling), and a prompt that vanished from both
queue and history (ComfyUI restarted) fails as lost instead of waiting forever. Every read is
tied to one `Submission`, so what an earlier attempt left under the same prompt_id is never
taken for this one's outcome.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from websockets.exceptions import ConnectionClosed

from .comfyui.client import ComfyUIClient
from .comfyui.events import Event, EventStream
from .comfyui.models import HistoryEntry, Submission
from .comfyui.sockets import Sockets, settle
from .constants import CompletionMode
from .exceptions import PromptLostError, TransportError
from .observability import metrics
from .settings import Settings

log = logging.getLogger(__name__)

WS_RECONNECT_ATTEMPTS = 3


class JobObserver:
    """Hooks for what happens during a job (task logs, progress, metrics). Default: log only.

    In order: (bound) -> waiting -> slot_acquired -> submitted -> queued* / event* ->
    completed; a job attached to or reused from an earlier attempt skips `submitted`. A job
    whose files were gone is submitted again after its first `completed`.
    """

    def note(self, prompt_id: str, message: str) -> None:
        log.info("prompt %s: %s", prompt_id, message)

    def bound(self, prompt_id: str, template: str) -> None:
        """The job's named template was bound to valid parameters."""

    def waiting(self, prompt_id: str) -> None:
        """The job waits for one of this process's in-flight slots."""

    def slot_acquired(self, prompt_id: str) -> None:
        """The job holds a slot and goes to ComfyUI."""

    def submitted(self, prompt_id: str, prompt: dict[str, Any]) -> None:
        """ComfyUI accepted the prompt (the validated graph) into its queue."""

    def queued(self, prompt_id: str, position: int | None) -> None:
        """A check found the prompt pending in ComfyUI's queue (1 = next)."""

    def event(self, prompt_id: str, event: Event) -> None:
        """Every websocket event of this prompt (progress, executing, executed...)."""

    def completed(self, prompt_id: str, entry: HistoryEntry, *, reused: bool) -> None:
        """ComfyUI's history entry is in hand (success or not); `reused`: an earlier
        attempt's, so its timings are not this attempt's."""


class Waiter:
    """Watches submissions on one ComfyUI server (the Executor's client and settings)."""

    def __init__(
        self, settings: Settings, client: ComfyUIClient, *, keep_spare_socket: bool = False
    ) -> None:
        self.settings = settings
        self.client = client
        self.sockets = Sockets(
            settings.ws_url,
            open_timeout=settings.request_timeout,
            keep_spare=keep_spare_socket and settings.completion_mode is CompletionMode.WEBSOCKET,
        )

    def stream_ahead(self, pid: str, observer: JobObserver) -> StreamAhead:
        """Start opening a job's websocket now, to take it when the prompt is submitted."""
        return StreamAhead(self, pid, observer)

    async def aclose(self) -> None:
        await self.sockets.aclose()

    async def open_stream(self, pid: str, observer: JobObserver) -> EventStream | None:
        if self.settings.completion_mode is not CompletionMode.WEBSOCKET:
            return None
        try:
            return await self.sockets.open()
        except TransportError as exc:
            metrics.WS_FALLBACKS.inc()
            observer.note(pid, f"{exc}; falling back to polling")
            return None

    async def wait_ws(
        self, ours: Submission, stream: EventStream, observer: JobObserver
    ) -> HistoryEntry:
        pid = ours.prompt_id
        while True:
            try:
                async with asyncio.timeout(self.settings.reconcile_interval):
                    event = await stream.next_event()
            except TimeoutError:
                if (entry := await self.check(ours, observer)) is not None:
                    return entry
                continue
            except ConnectionClosed:
                if not await self._reconnect(pid, stream, observer):
                    return await self.wait_poll(ours, observer)
                if (entry := await self.check(ours, observer)) is not None:
                    return entry
                continue
            if event.prompt_id != pid:
                continue  # other prompts' events, and broadcasts without a prompt id
            observer.event(pid, event)
            if event.is_done_signal(pid):
                # Nothing more to hear: its closing handshake runs while history is read.
                self.sockets.release(stream)
                entry = await self.client.history(pid)
                if entry is not None and ours.owns(entry.client_id):
                    return entry
                return await self.wait_poll(ours, observer)

    async def _reconnect(self, pid: str, stream: EventStream, observer: JobObserver) -> bool:
        """Reopen with the same client id (the old socket is gone), so our events resume."""
        await stream.close()
        # A pause before the first try too: the drop is this stream's first failure.
        for failures in range(1, WS_RECONNECT_ATTEMPTS + 1):
            await asyncio.sleep(self.client.retry.delay(failures))
            try:
                await stream.connect()
            except TransportError:
                continue
            metrics.WS_RECONNECTS.inc()
            observer.note(pid, "websocket dropped; reconnected")
            return True
        metrics.WS_FALLBACKS.inc()
        observer.note(pid, "websocket dropped and cannot reconnect; polling instead")
        return False

    async def wait_poll(self, ours: Submission, observer: JobObserver) -> HistoryEntry:
        while (entry := await self.check(ours, observer)) is None:
            await asyncio.sleep(self.settings.poll_interval)
        return entry

    async def check(self, ours: Submission, observer: JobObserver) -> HistoryEntry | None:
        """Reconcile with ComfyUI: this submission's history entry once it left the queue.

        ComfyUI writes history and removes the prompt from the queue under one lock, so a
        prompt in neither place was dropped (restart, queue clear) and never will finish. An
        entry another submission of the same prompt_id left (an earlier attempt) is not ours.
        """
        queue = await self.client.queue()
        if queue.holds(ours):
            if (position := queue.pending_position(ours.prompt_id)) is not None:
                observer.queued(ours.prompt_id, position)
            return None
        entry = await self.client.history(ours.prompt_id)
        if entry is None or not ours.owns(entry.client_id):
            raise PromptLostError(ours.prompt_id)
        return entry


class StreamAhead:
    """A job's websocket, opened while the job still looks for an earlier attempt's prompt
    (`/queue`, then `/history`), so the handshake overlaps those reads instead of following
    them. A job that attaches to or reuses its prompt never takes it: `discard` closes it.
    Opening it early is harmless: ComfyUI sends a client id's events only for prompts
    submitted with it."""

    def __init__(self, waiter: Waiter, pid: str, observer: JobObserver) -> None:
        self._waiter = waiter
        self._opening: asyncio.Task[EventStream | None] | None = (
            asyncio.create_task(waiter.open_stream(pid, observer), name="comfyui-ws-open")
            if waiter.settings.completion_mode is CompletionMode.WEBSOCKET
            else None
        )

    async def take(self) -> EventStream | None:
        """The open stream (None in poll mode, or when it could not open); the caller
        releases it."""
        opening, self._opening = self._opening, None
        return None if opening is None else await opening

    async def discard(self) -> None:
        """Close the stream if nobody took it (cancelled if it is still opening)."""
        opening, self._opening = self._opening, None
        if opening is not None and (stream := await settle(opening)) is not None:
            self._waiter.sockets.release(stream)
