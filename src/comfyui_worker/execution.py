"""Run one workflow on ComfyUI to completion: the path shared by the CLI and the LittleHorse task.

    validate -> before_slot (outside the in-flight limit) -> slot -> open websocket,
    meanwhile: look for an earlier attempt's prompt (queue, then history) -> (attach to or
    reuse it | prepare -> submit) -> wait (`waiting`) -> read history -> outputs, each file
    checked on disk in one pass (`folders.locate`) -> JobResult

Every attempt of one task uses the same prompt_id, so what ComfyUI holds under it may be an
earlier attempt's: a prompt still running is attached to (and run again once if it ends
interrupted), a finished success is reused (its node_errors rebuilt from its history entry),
and outputs whose files are gone (from ComfyUI too, and not kept by the caller) are made again
after dropping ComfyUI's cache. Only a prompt carrying this job's tag (`PromptTag`) is taken
for an earlier attempt's; any other is another job's, and the job fails rather than deliver
its outputs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass

from .comfyui.client import ComfyUIClient
from .comfyui.models import HistoryEntry, PromptTag, Submission
from .constants import JobStatus
from .earlier import check_tag, refused_outputs
from .exceptions import ComfyUIError, JobTimeoutError, NodeError
from .folders import locate, still_missing
from .outputs import KeptFiles, OutputDirs, describe_files
from .preparing import BeforeSlot, Prepare
from .preparing import Submittable as _Submittable
from .results import JobResult, raise_for_outcome
from .settings import Settings
from .waiting import JobObserver, StreamAhead, Waiter
from .workflow import validate_workflow

__all__ = ["BeforeSlot", "Executor", "JobObserver", "JobResult", "Prepare", "raise_for_outcome"]

log = logging.getLogger(__name__)

# The most one `abandon` (dequeue and interrupt a prompt) takes; serve runs them at once after
# the drain, so it is also what COMFYUI_INTERRUPT_ON_SHUTDOWN adds to a shutdown.
ABANDON_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How one prompt ended, as far as this job is concerned."""

    entry: HistoryEntry
    node_errors: tuple[NodeError, ...]
    # An earlier attempt's prompt was attached to or reused instead of resubmitted.
    reused: bool = False


class Executor:
    """Runs workflows on one ComfyUI server; one per process (it owns the in-flight limit)."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: ComfyUIClient | None = None,
        keep_spare_socket: bool = False,
    ) -> None:
        """`keep_spare_socket`: keep a websocket open for the next job, so its handshake is
        not on that job's path (a long-running worker; see `comfyui.sockets`)."""
        self.settings = settings
        self.client = client or ComfyUIClient.from_settings(settings)
        self.dirs = OutputDirs(
            output=settings.output_dir, temp=settings.temp_dir, input=settings.input_dir
        )
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._waiter = Waiter(settings, self.client, keep_spare_socket=keep_spare_socket)

    async def aclose(self) -> None:
        await self._waiter.aclose()
        await self.client.aclose()

    async def run(
        self,
        workflow: object,
        *,
        prompt_id: str | None = None,
        observer: JobObserver | None = None,
        before_slot: BeforeSlot | None = None,
        prepare: Prepare | None = None,
        digest_files: bool = False,
        kept: KeptFiles | None = None,
        tag: PromptTag | None = None,
    ) -> JobResult:
        """Run `workflow`; with a `prompt_id` from an earlier attempt, attach instead of rerun.

        `tag` names the job and what it was given; the prompt carries it, and a prompt found
        under `prompt_id` is attached to or reused only if it carries the same tag.

        `before_slot` runs under the job's deadline but before it takes one of the
        in-flight slots (a job fetches and uploads its inputs there), so a slow download
        never keeps ComfyUI idle while a ready job waits. `prepare` turns the workflow into
        the prompt to submit. It runs once, and only when the prompt is really submitted: a
        retry that attaches to or reuses its earlier prompt never calls it. `digest_files`:
        read each output file's size and sha256 (`JobResult.digests`) in the same pass that
        checks it is on disk, for a caller that would read them next anyway. `kept`: files
        the caller removed after delivering them elsewhere; not on disk, they are no reason
        to run the prompt again (`JobResult.kept` lists them).

        Raises InvalidWorkflowError, PromptValidationError, ExecutionError,
        ExecutionInterrupted, PromptLostError, JobTimeoutError, UnsafeOutputPathError,
        OutputMissingError, PromptConflictError or a transport error (see `exceptions`).
        """
        prompt = validate_workflow(workflow, max_bytes=self.settings.max_workflow_bytes)
        observer = observer or JobObserver()
        pid = prompt_id or str(uuid.uuid4())
        deadline = asyncio.timeout(self.settings.job_deadline)
        try:
            async with deadline:
                if before_slot is not None:
                    await before_slot()
                observer.waiting(pid)
                async with self._slots:
                    observer.slot_acquired(pid)
                    return await self._run_job(
                        _Submittable(prompt, prepare, tag),
                        pid,
                        resumable=prompt_id is not None,
                        observer=observer,
                        digest=digest_files,
                        kept=kept,
                    )
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            observer.note(pid, "deadline passed; removing it from ComfyUI")
            await self.abandon(pid, "its deadline passed")
            raise JobTimeoutError(pid, self.settings.job_deadline) from exc
        except asyncio.CancelledError:
            # Shutdown or a lost LittleHorse connection: leave the GPU work running so the
            # task's retry (same prompt_id) attaches to it instead of starting over.
            observer.note(pid, "cancelled; the prompt keeps running in ComfyUI")
            raise

    async def _run_job(
        self,
        job: _Submittable,
        pid: str,
        *,
        resumable: bool,
        observer: JobObserver,
        digest: bool,
        kept: KeptFiles | None,
    ) -> JobResult:
        # The websocket opens while the resume check reads the queue and history: its
        # handshake costs a job nothing more than those reads already take.
        ahead = self._waiter.stream_ahead(pid, observer)
        try:
            outcome = await self._resume(job, pid, observer) if resumable else None
            if outcome is None:
                outcome = await self._submit_and_wait(job, pid, observer, ahead)
        finally:
            await ahead.discard()
        observer.completed(pid, outcome.entry, reused=outcome.reused)
        raise_for_outcome(outcome.entry)
        found = await locate(outcome.entry, self.dirs, self.client, digest=digest, kept=kept)
        if found.missing:
            # ComfyUI served the outputs from its cache (or an earlier run) but the files
            # are gone, from ComfyUI too. Drop the cache and run it again, under the same
            # prompt_id so that a retry of this task still finds it.
            observer.note(
                pid,
                f"{describe_files(found.missing)} no longer exist; clearing ComfyUI's cache "
                "and running the prompt again",
            )
            await self.client.free_memory()
            outcome = await self._submit_and_wait(job, pid, observer)
            observer.completed(pid, outcome.entry, reused=False)
            raise_for_outcome(outcome.entry)
            found = await locate(outcome.entry, self.dirs, self.client, digest=digest, kept=kept)
            if found.missing:
                raise still_missing(pid, found.missing)
        if found.kept:
            observer.note(pid, f"{len(found.kept)} output file(s) were stored, then removed")
        observer.note(
            pid, f"finished with {len(found.files)} file(s) and {len(found.texts)} text(s)"
        )
        return JobResult(
            prompt_id=pid,
            status=JobStatus.SUCCESS,
            files=found.files,
            texts=found.texts,
            node_errors=outcome.node_errors,
            reused=outcome.reused,
            digests=found.digests,
            kept=found.kept,
            prompt=outcome.entry.prompt,
        )

    async def _resume(self, job: _Submittable, pid: str, observer: JobObserver) -> _Outcome | None:
        """An earlier attempt's prompt to attach to or reuse; None when it must be submitted."""
        prompt = job.workflow
        # The queue first: ComfyUI writes the history entry before it takes a prompt off the
        # queue, so a prompt finishing between the two reads is seen in one of them.
        queue = await self.client.queue()
        if (position := queue.position(pid)) is not None:
            check_tag(pid, job.tag, queue.tags.get(pid))
            # Its events go to the earlier attempt's client id, so watch it by polling.
            observer.note(pid, f"already {position} in ComfyUI; attaching to it")
            entry = await self._waiter.wait_poll(
                Submission(pid, queue.client_ids.get(pid)), observer
            )
            if entry.interrupted:
                # ComfyUI does not say who interrupted it: most likely the earlier attempt's
                # deadline, which lands only at the next node boundary. Run it once more.
                observer.note(pid, "the prompt attached to was interrupted; submitting it again")
                return None
            return _Outcome(entry, await refused_outputs(self.client, prompt, entry), reused=True)
        finished = await self.client.history(pid)
        if finished is not None:
            # Even a failed entry: resubmitting would replace another job's history.
            check_tag(pid, job.tag, finished.tag)
        if finished is not None and finished.succeeded:
            observer.note(pid, "already finished by an earlier attempt; reusing its outputs")
            return _Outcome(
                finished, await refused_outputs(self.client, prompt, finished), reused=True
            )
        return None

    async def _submit_and_wait(
        self,
        job: _Submittable,
        pid: str,
        observer: JobObserver,
        ahead: StreamAhead | None = None,
    ) -> _Outcome:
        prompt = await job.prompt()
        stream = await (ahead.take() if ahead else self._waiter.open_stream(pid, observer))
        try:
            # A fresh client id per submission tells its queue item and history entry from
            # those of earlier attempts under the same prompt_id.
            client_id = stream.client_id if stream else uuid.uuid4().hex
            ours = Submission(pid, client_id)
            submitted = await self.client.submit(
                prompt,
                prompt_id=pid,
                client_id=client_id,
                extra_data=job.tag.as_extra_data() if job.tag else None,
            )
            if stream is not None:
                # This job's handshake is behind it; the next job's can happen now.
                self._waiter.sockets.replenish()
            for node_error in submitted.node_errors:
                observer.note(pid, f"will not run: {node_error.describe()}")
            observer.note(pid, "submitted")
            observer.submitted(pid, prompt)
            entry = await (
                self._waiter.wait_ws(ours, stream, observer)
                if stream
                else self._waiter.wait_poll(ours, observer)
            )
        finally:
            if stream is not None:
                self._waiter.sockets.release(stream)
        if submitted.answer_lost:
            return _Outcome(entry, await refused_outputs(self.client, prompt, entry))
        return _Outcome(entry, submitted.node_errors)

    async def abandon(self, pid: str, why: str) -> bool:
        """Stop spending GPU on a job nobody waits for; best effort, bounded. False (and a
        warning) when ComfyUI could not be told.

        Delete first: a prompt that moves from pending to running between the two calls is
        then still interrupted, where the other order would leave it running unwatched.
        """
        try:
            async with asyncio.timeout(ABANDON_TIMEOUT):
                await self.client.delete_from_queue([pid])
                await self.client.interrupt(pid)
        except (TimeoutError, ComfyUIError) as exc:
            log.warning("could not interrupt prompt %s (%s): %s", pid, why, exc)
            return False
        return True
