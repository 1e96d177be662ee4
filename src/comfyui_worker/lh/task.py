"""The task functions the LittleHorse worker runs: `execute-comfyui-workflow`,
`run-comfyui-job` and `run-comfyui-template`."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from littlehorse.worker import WorkerContext

from ..bounds import LogBudget, bound_result, off_loop
from ..constants import PROMPT_ID_NAMESPACE, JobOutcome
from ..exceptions import ComfyUIWorkerError
from ..execution import Executor
from ..job import TemplateBinder, parse_job
from ..observability import metrics
from ..observability.logs import bind_job
from ..observability.progress import Progress
from ..observability.recorder import RecordingObserver
from ..runner import Media, run_job, run_workflow
from ..settings import Settings
from .errors import business_name, lh_exception

# (workflow | job | template, params, ..., ctx) -> result; the SDK reads the TaskDef's
# variables off each function's own signature.
TaskFunction = Callable[..., Awaitable[dict[str, Any]]]


def prompt_id_for(idempotency_key: str) -> str:
    """The same ComfyUI prompt_id for every attempt of one TaskRun: retries find their job."""
    return str(uuid.uuid5(PROMPT_ID_NAMESPACE, idempotency_key))


class TaskObserver(RecordingObserver):
    """Records the job (metrics, `/jobs`) and sends notable moments to the NodeRun's log
    output: milestones, and progress at most every 10 % or 10 s. LittleHorse stores that
    output beside the result, so it is kept under MAX_LOG_BYTES (`bounds.LogBudget`)."""

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(
            wf_run_id=ctx.wf_run_id.id,
            task_run_id=ctx.task_run_id.task_guid,
            attempt=ctx.attempt_number,
        )
        self.ctx = ctx
        self._budget = LogBudget()

    def log(self, line: str, *, final: bool = False) -> None:
        if (admitted := self._budget.admit(line, final=final)) is not None:
            self.ctx.log(admitted)

    def note(self, prompt_id: str, message: str) -> None:
        super().note(prompt_id, message)
        self.log(f"prompt {prompt_id}: {message}")

    def progress(self, prompt_id: str, progress: Progress) -> None:
        super().progress(prompt_id, progress)
        self.log(f"prompt {prompt_id}: {progress.describe()}")


def make_task_function(executor: Executor, media: Media | None = None) -> TaskFunction:
    """Bind `execute-comfyui-workflow` to this process's Executor (client pool, in-flight
    limit) and media (the deployment's default output mode)."""
    media = media or Media(executor.settings, executor.client)

    async def execute_comfyui_workflow(
        workflow: dict[str, Any], ctx: WorkerContext
    ) -> dict[str, Any]:
        async with _task_run(ctx, executor.settings) as (prompt_id, observer):
            result = await run_workflow(
                workflow, executor=executor, media=media, prompt_id=prompt_id, observer=observer
            )
            return await _finished(result, executor.settings)

    return execute_comfyui_workflow


def make_job_task_function(
    executor: Executor, media: Media | None = None, templates: TemplateBinder | None = None
) -> TaskFunction:
    """Bind `run-comfyui-job` (the job envelope) to this process's Executor and media."""
    media = media or Media(executor.settings, executor.client)

    async def run_comfyui_job(job: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
        async with _task_run(ctx, executor.settings) as (prompt_id, observer):
            result = await run_job(
                parse_job(job),
                executor=executor,
                media=media,
                templates=templates,
                prompt_id=prompt_id,
                observer=observer,
            )
            return await _finished(result, executor.settings)

    return run_comfyui_job


def make_template_task_function(
    executor: Executor, media: Media | None = None, templates: TemplateBinder | None = None
) -> TaskFunction:
    """Bind `run-comfyui-template` (a named template and its params): the job envelope
    `{"template", "params"}` in short, run as `run-comfyui-job` runs it."""
    run_comfyui_job = make_job_task_function(executor, media, templates)

    async def run_comfyui_template(
        template: str, params: dict[str, Any], ctx: WorkerContext
    ) -> dict[str, Any]:
        return await run_comfyui_job({"template": template, "params": params}, ctx)

    return run_comfyui_template


@contextlib.asynccontextmanager
async def _task_run(
    ctx: WorkerContext, settings: Settings
) -> AsyncIterator[tuple[str, TaskObserver]]:
    """One attempt of a task: its prompt id and observer, its outcome recorded, and our
    errors as LittleHorse sees them (named business exceptions, or retryable)."""
    prompt_id = prompt_id_for(ctx.idempotency_key)
    observer = TaskObserver(ctx)
    bind_job(
        prompt_id=prompt_id,
        wf_run_id=observer.wf_run_id,
        task_run_id=observer.task_run_id,
        attempt=observer.attempt,
    )
    observer.log(f"attempt {ctx.attempt_number}: ComfyUI prompt_id {prompt_id}")
    outcome, name = JobOutcome.FAILED, ""
    try:
        yield prompt_id, observer
        outcome = JobOutcome.SUCCESS
    except ComfyUIWorkerError as exc:
        observer.log(f"failed: {exc}", final=True)
        business = business_name(
            exc, retryable_execution_errors=settings.retryable_execution_errors
        )
        name = business.value if business else type(exc).__name__
        if business is not None:
            outcome = JobOutcome.BUSINESS_EXCEPTION
            raise await lh_exception(exc, business, max_bytes=settings.max_result_bytes) from exc
        raise
    except asyncio.CancelledError:
        outcome, name = JobOutcome.CANCELLED, "CancelledError"
        raise
    except Exception as exc:
        name = type(exc).__name__
        raise
    finally:
        observer.close(outcome, name)


async def _finished(result: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A successful job's result as LittleHorse gets it: its delivered files counted (the
    manifest has sizes), then bounded to what LittleHorse stores."""
    files = result.get("files", [])
    metrics.record_delivered(len(files), sum(int(f.get("size", 0)) for f in files))
    return await off_loop(result, lambda: bound_result(result, settings.max_result_bytes))
