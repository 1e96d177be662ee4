"""One job from envelope to result: the path shared by `run-comfyui-job` and the CLI.

    envelope -> template binding -> Executor.run(inputs fetched and uploaded before the
    slot; the prompt pointed at them if it is submitted) -> delivery -> result

`Executor.run` stays the one way a workflow runs; media (inputs, delivery, the object store)
wraps around it here, so execution never learns about files outside ComfyUI's folders.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from .comfyui.client import ComfyUIClient
from .comfyui.models import PromptTag
from .exceptions import (
    ExecutionError,
    ExecutionInterrupted,
    InputError,
    InvalidInputError,
    InvalidWorkflowError,
    JobTimeoutError,
    PromptLostError,
    PromptValidationError,
    UnknownTemplateError,
)
from .execution import Executor, JobObserver
from .job import InputSource, Job, TemplateBinder
from .media.delivery import Delivery, remove_files
from .media.inputs import InputUploader, StagedInputs, UploadedInput
from .media.naming import upload_name
from .media.store import ObjectStores
from .settings import Settings
from .workflow import validate_workflow

# After these the prompt no longer runs in ComfyUI, so its inputs can go. After any other
# failure (ComfyUI unreachable, shutdown) it may still run, and a retry attaches to it.
# An input error raised means no prompt of this job runs (one that may is waited for instead,
# `InputUploader.stage`): the inputs uploaded before the bad one go (a retry uploads them again).
PROMPT_ENDED = (
    InputError,
    InvalidWorkflowError,
    PromptValidationError,
    ExecutionError,
    ExecutionInterrupted,
    PromptLostError,
    JobTimeoutError,
)


class Media:
    """The process's media services around one ComfyUI server."""

    def __init__(self, settings: Settings, client: ComfyUIClient) -> None:
        self.settings = settings
        self.stores = ObjectStores.from_settings(settings)
        self.inputs = InputUploader(settings, client, self.stores)
        self.delivery = Delivery(settings, self.stores)

    async def aclose(self) -> None:
        await self.inputs.aclose()


async def run_job(
    job: Job,
    *,
    executor: Executor,
    media: Media,
    templates: TemplateBinder | None = None,
    prompt_id: str | None = None,
    observer: JobObserver | None = None,
    tag: PromptTag | None = None,
) -> dict[str, Any]:
    """Run one job envelope; raises the typed errors of `exceptions` (see lh/errors.py).
    `prompt_id` and `tag` as `Executor.run` takes them."""
    pid = prompt_id or str(uuid.uuid4())
    observer = observer or JobObserver()
    request = media.delivery.request(job.output.mode, job.output.presign_seconds)
    params: dict[str, Any] | None = None
    inputs: dict[str, InputSource] = dict(job.inputs)
    if job.template is not None:
        if templates is None:
            raise UnknownTemplateError(
                f"the job names template {job.template!r}, but templates are not configured "
                "on this worker (COMFYUI_TEMPLATES_DIR is not set)",
                template=job.template,
            )
        bound = await templates.bind(job.template, job.params, key=pid)
        workflow, params = bound.workflow, bound.params
        observer.bound(pid, job.template)
        for name, source in bound.inputs.items():
            if name in inputs:
                raise InvalidInputError(
                    "is given both as a template parameter and in the job's inputs",
                    input_name=name,
                    rule="duplicate",
                )
            inputs[name] = source
    else:
        assert job.workflow is not None  # the envelope guarantees one of the two
        workflow = job.workflow
    # Refuse a broken graph before anything else; a misnamed input is refused by `stage`,
    # before the slot too.
    validate_workflow(workflow, max_bytes=media.settings.max_workflow_bytes)
    staged = StagedInputs()

    async def earlier_prompt() -> bool:
        return await _earlier_prompt(executor.client, pid)

    async def stage() -> None:
        # Before the slot, so before knowing whether an earlier attempt's prompt exists: a
        # retry fetches its inputs again, and an input that fails then is held back while
        # that prompt may still be attached to or reused.
        resumable = prompt_id is not None
        await media.inputs.stage(
            staged,
            workflow,
            inputs,
            prompt_id=pid,
            may_resume=earlier_prompt if resumable else None,
        )
        observer.note(pid, f"uploaded {len(staged.uploaded)} input(s)")

    async def prepare(graph: dict[str, Any]) -> dict[str, Any]:
        return staged.prompt(graph)

    try:
        result = await executor.run(
            workflow,
            prompt_id=pid,
            observer=observer,
            before_slot=stage if inputs else None,
            prepare=prepare if inputs else None,
            digest_files=request.digests_in_run,
            kept=media.delivery.kept_for(request),
            tag=tag,
        )
    except PROMPT_ENDED:
        await _cleanup_inputs(media.settings, pid, inputs, staged.uploaded)
        raise
    await _cleanup_inputs(media.settings, pid, inputs, staged.uploaded)
    out = await media.delivery.deliver(result, request)
    # A prompt attached to or reused ran on what the earlier attempt uploaded.
    if not result.reused and staged.uploaded:
        out["inputs"] = {u.name: u.as_dict() for u in staged.uploaded}
    if params is not None:
        out["params"] = params
    return out


async def _earlier_prompt(client: ComfyUIClient, pid: str) -> bool:
    """Whether an earlier attempt's prompt is queued, running or finished well: one that
    `Executor.run` may attach to or reuse (it decides; this only says whether a job can do
    without an input that failed)."""
    if (await client.queue()).position(pid) is not None:
        return True
    entry = await client.history(pid)
    return entry is not None and entry.succeeded


async def run_workflow(
    workflow: object,
    *,
    executor: Executor,
    media: Media,
    prompt_id: str | None = None,
    observer: JobObserver | None = None,
    tag: PromptTag | None = None,
) -> dict[str, Any]:
    """`execute-comfyui-workflow`: a bare workflow, outputs in the deployment's default mode."""
    request = media.delivery.request(None, None)
    result = await executor.run(
        workflow,
        prompt_id=prompt_id,
        observer=observer,
        digest_files=request.digests_in_run,
        kept=media.delivery.kept_for(request),
        tag=tag,
    )
    return await media.delivery.deliver(result, request)


async def _cleanup_inputs(
    settings: Settings, pid: str, inputs: dict[str, InputSource], uploaded: list[UploadedInput]
) -> None:
    # By name as well as by what this attempt uploaded: a retry that attached to or reused
    # the prompt uploaded nothing, and the earlier attempt's files are its to remove.
    names = [upload_name(pid, name) for name in inputs] + [u.uploaded for u in uploaded]
    if settings.cleanup.inputs and names:
        await remove_files([Path(n) for n in dict.fromkeys(names)], inside=settings.input_dir)
