"""Run one workflow on ComfyUI to completion: the path shared by the CLI and the LittleHorse task.

    validate -> (attach to an earlier attempt | open websocket -> submit) -> wait -> read history
    -> outputs -> JobResult

The websocket only tells us *when* to look; `/queue` and `/history/{id}` say *what* happened.
The wait survives a dropped socket (reconnect, then reconcile), a deaf socket (periodic
reconciliation) and a socket that never opens (polling), and a prompt that vanished from both
queue and history (ComfyUI restarted) fails as lost instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed

from .comfyui.client import ComfyUIClient
from .comfyui.events import Event, EventStream
from .comfyui.models import HistoryEntry
from .constants import CompletionMode, JobStatus
from .exceptions import (
    ComfyUIError,
    ExecutionError,
    ExecutionInterrupted,
    JobTimeoutError,
    NodeError,
    PromptLostError,
    ProtocolError,
    TransportError,
)
from .observability import metrics
from .outputs import OutputDirs, OutputFile, OutputText, parse_outputs_async
from .settings import Settings
from .workflow import validate_workflow

log = logging.getLogger(__name__)

WS_RECONNECT_ATTEMPTS = 3


class JobObserver:
    """Hooks for what happens during a job (task logs, progress, metrics). Default: log only.

    In order: waiting -> slot_acquired -> submitted -> queued* / event* -> completed; a job
    attached to or reused from an earlier attempt skips `submitted`.
    """

    def note(self, prompt_id: str, message: str) -> None:
        log.info("prompt %s: %s", prompt_id, message)

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


@dataclass(frozen=True, slots=True, kw_only=True)
class JobResult:
    prompt_id: str
    status: JobStatus
    files: list[OutputFile] = field(default_factory=list)
    texts: list[OutputText] = field(default_factory=list)
    node_errors: tuple[NodeError, ...] = ()
    # True when an earlier attempt's prompt was attached to or reused instead of resubmitted.
    reused: bool = False

    @property
    def outputs(self) -> list[str]:
        return [f.path for f in self.files]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable result: the LittleHorse task output and the CLI's print-out."""
        return {
            "prompt_id": self.prompt_id,
            "status": self.status.value,
            "outputs": self.outputs,
            "files": [f.as_dict() for f in self.files],
            "texts": [t.as_dict() for t in self.texts],
            "node_errors": [n.as_dict() for n in self.node_errors],
            "reused": self.reused,
        }


class Executor:
    """Runs workflows on one ComfyUI server; one per process (it owns the in-flight limit)."""

    def __init__(self, settings: Settings, *, client: ComfyUIClient | None = None) -> None:
        self.settings = settings
        self.client = client or ComfyUIClient.from_settings(settings)
        self.dirs = OutputDirs(
            output=settings.output_dir, temp=settings.temp_dir, input=settings.input_dir
        )
        self._slots = asyncio.Semaphore(settings.max_in_flight)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def run(
        self,
        workflow: object,
        *,
        prompt_id: str | None = None,
        observer: JobObserver | None = None,
    ) -> JobResult:
        """Run `workflow`; with a `prompt_id` from an earlier attempt, attach instead of rerun.

        Raises InvalidWorkflowError, PromptValidationError, ExecutionError,
        ExecutionInterrupted, PromptLostError, JobTimeoutError, UnsafeOutputPathError or a
        transport error (see `exceptions`).
        """
        prompt = validate_workflow(workflow, max_bytes=self.settings.max_workflow_bytes)
        observer = observer or JobObserver()
        pid = prompt_id or str(uuid.uuid4())
        deadline = asyncio.timeout(self.settings.job_deadline)
        try:
            async with deadline:
                observer.waiting(pid)
                async with self._slots:
                    observer.slot_acquired(pid)
                    entry, reused, node_errors = await self._execute(
                        prompt, pid, resumable=prompt_id is not None, observer=observer
                    )
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            observer.note(pid, "deadline passed; interrupting it in ComfyUI")
            await self._abandon(pid)
            raise JobTimeoutError(pid, self.settings.job_deadline) from exc
        except asyncio.CancelledError:
            # Shutdown or a lost LittleHorse connection: leave the GPU work running so the
            # task's retry (same prompt_id) attaches to it instead of starting over.
            observer.note(pid, "cancelled; the prompt keeps running in ComfyUI")
            raise
        observer.completed(pid, entry, reused=reused)
        raise_for_outcome(entry)
        files, texts = await parse_outputs_async(entry.outputs, self.dirs)
        observer.note(pid, f"finished with {len(files)} file(s) and {len(texts)} text(s)")
        return JobResult(
            prompt_id=pid,
            status=JobStatus.SUCCESS,
            files=files,
            texts=texts,
            node_errors=node_errors,
            reused=reused,
        )

    async def _execute(
        self, prompt: dict[str, Any], pid: str, *, resumable: bool, observer: JobObserver
    ) -> tuple[HistoryEntry, bool, tuple[NodeError, ...]]:
        if resumable:
            entry = await self.client.history(pid)
            if entry is not None and entry.succeeded:
                observer.note(pid, "already finished by an earlier attempt; reusing its outputs")
                return entry, True, ()
            if (position := (await self.client.queue()).position(pid)) is not None:
                # Its events go to the earlier attempt's client id, so watch it by polling.
                observer.note(pid, f"already {position} in ComfyUI; attaching to it")
                return await self._wait_poll(pid, observer), True, ()
        stream = await self._open_stream(pid, observer)
        try:
            client_id = stream.client_id if stream else uuid.uuid4().hex
            submitted = await self.client.submit(prompt, prompt_id=pid, client_id=client_id)
            for node_error in submitted.node_errors:
                observer.note(pid, f"will not run: {node_error.describe()}")
            observer.note(pid, "submitted")
            observer.submitted(pid, prompt)
            entry = await (
                self._wait_ws(pid, stream, observer) if stream else self._wait_poll(pid, observer)
            )
        finally:
            if stream is not None:
                await stream.close()
        return entry, False, submitted.node_errors

    async def _open_stream(self, pid: str, observer: JobObserver) -> EventStream | None:
        if self.settings.completion_mode is not CompletionMode.WEBSOCKET:
            return None
        # A fresh client id per job: a reused one can leave a socket that hears nothing.
        stream = EventStream(
            self.settings.ws_url, uuid.uuid4().hex, open_timeout=self.settings.request_timeout
        )
        try:
            await stream.connect()
        except TransportError as exc:
            metrics.WS_FALLBACKS.inc()
            observer.note(pid, f"{exc}; falling back to polling")
            return None
        return stream

    async def _wait_ws(self, pid: str, stream: EventStream, observer: JobObserver) -> HistoryEntry:
        while True:
            try:
                async with asyncio.timeout(self.settings.reconcile_interval):
                    event = await stream.next_event()
            except TimeoutError:
                if (entry := await self._check(pid, observer)) is not None:
                    return entry
                continue
            except ConnectionClosed:
                if not await self._reconnect(pid, stream, observer):
                    return await self._wait_poll(pid, observer)
                if (entry := await self._check(pid, observer)) is not None:
                    return entry
                continue
            if event.prompt_id != pid:
                continue  # other prompts' events, and broadcasts without a prompt id
            observer.event(pid, event)
            if event.is_done_signal(pid):
                entry = await self.client.history(pid)
                return entry if entry is not None else await self._wait_poll(pid, observer)

    async def _reconnect(self, pid: str, stream: EventStream, observer: JobObserver) -> bool:
        """Reopen with the same client id (the old socket is gone), so our events resume."""
        await stream.close()
        for attempt in range(WS_RECONNECT_ATTEMPTS):
            await asyncio.sleep(self.client.retry.delay(attempt))
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

    async def _wait_poll(self, pid: str, observer: JobObserver) -> HistoryEntry:
        while (entry := await self._check(pid, observer)) is None:
            await asyncio.sleep(self.settings.poll_interval)
        return entry

    async def _check(self, pid: str, observer: JobObserver) -> HistoryEntry | None:
        """Reconcile with ComfyUI: the history entry once the prompt has left the queue.

        ComfyUI writes history and removes the prompt from the queue under one lock, so a
        prompt in neither place was dropped (restart, queue clear) and never will finish.
        """
        queue = await self.client.queue()
        if queue.position(pid) is not None:
            if (position := queue.pending_position(pid)) is not None:
                observer.queued(pid, position)
            return None
        entry = await self.client.history(pid)
        if entry is None:
            raise PromptLostError(pid)
        return entry

    async def _abandon(self, pid: str) -> None:
        """Stop spending GPU on a job nobody waits for; best effort, bounded."""
        try:
            async with asyncio.timeout(5):
                await self.client.interrupt(pid)
                await self.client.delete_from_queue([pid])
        except (TimeoutError, ComfyUIError) as exc:
            log.warning("could not interrupt prompt %s after its deadline: %s", pid, exc)


def raise_for_outcome(entry: HistoryEntry) -> None:
    """Raise the typed error a failed history entry describes."""
    if entry.succeeded:
        return
    if (err := entry.message("execution_error")) is not None:
        raise ExecutionError(
            prompt_id=entry.prompt_id,
            node_id=str(err.get("node_id", "")),
            node_type=str(err.get("node_type", "")),
            exception_type=str(err.get("exception_type", "")),
            exception_message=str(err.get("exception_message", "")),
            traceback=[str(line) for line in err.get("traceback") or []],
        )
    if (err := entry.message("execution_interrupted")) is not None:
        raise ExecutionInterrupted(
            prompt_id=entry.prompt_id,
            node_id=None if err.get("node_id") is None else str(err.get("node_id")),
            node_type=None if err.get("node_type") is None else str(err.get("node_type")),
        )
    raise ProtocolError(
        f"prompt {entry.prompt_id} ended with status {entry.status_str!r} "
        "but its history gives no execution_error or execution_interrupted"
    )
