"""The task functions the LittleHorse worker runs: `execute-comfyui-workflow`,
`run-comfyui-job` and `run-comfyui-template`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from littlehorse.worker import WorkerContext

from ..bounds import LogBudget, ResultLimit, bound_result, off_loop, result_limit, serialized_size
from ..comfyui.models import PromptTag
from ..constants import JobOutcome
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
from .identity import JobIdentity, JobScope
from .task_logs import install as install_task_log_filter
from .task_logs import log_business_exception

# (workflow | job | template, params, ..., ctx) -> result; the SDK reads the TaskDef's
# variables off each function's own signature.
TaskFunction = Callable[..., Awaitable[dict[str, Any]]]


class TaskObserver(RecordingObserver):
    """Records the job (metrics, `/jobs`) and sends notable moments to the NodeRun's log
    output: milestones, and progress at most every 10 % or 10 s. LittleHorse stores that
    output beside the result, so it is kept under MAX_LOG_BYTES (`bounds.LogBudget`)."""

    def __init__(self, ctx: WorkerContext, identity: JobIdentity) -> None:
        super().__init__(
            wf_run_id=identity.wf_run_id,
            task_run_id=identity.task_guid,
            attempt=ctx.attempt_number,
            task=ctx.task_def_name,
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


def make_task_function(
    executor: Executor, media: Media | None = None, *, scope: JobScope | None = None
) -> TaskFunction:
    """Bind `execute-comfyui-workflow` to this process's Executor (client pool, in-flight
    limit) and media (the deployment's default output mode). `scope`: the tenant and
    namespace this worker serves (`JobScope.of`; by default the default tenant)."""
    media = media or Media(executor.settings, executor.client)
    scope = scope or JobScope(namespace=executor.settings.job_namespace)

    async def execute_comfyui_workflow(
        workflow: dict[str, Any], ctx: WorkerContext
    ) -> dict[str, Any]:
        given = {"workflow": workflow}
        async with _task_run(ctx, scope, given, executor.settings) as (job, observer):
            result = await run_workflow(
                workflow,
                executor=executor,
                media=media,
                prompt_id=job.prompt_id,
                observer=observer,
                tag=job.tag,
            )
            return await _finished(result, job.limit)

    return execute_comfyui_workflow


def make_job_task_function(
    executor: Executor,
    media: Media | None = None,
    templates: TemplateBinder | None = None,
    *,
    scope: JobScope | None = None,
) -> TaskFunction:
    """Bind `run-comfyui-job` (the job envelope) to this process's Executor and media."""
    run = _job_runner(executor, media, templates, scope)

    async def run_comfyui_job(job: dict[str, Any], ctx: WorkerContext) -> dict[str, Any]:
        return await run(job, {"job": job}, ctx)

    return run_comfyui_job


def make_template_task_function(
    executor: Executor,
    media: Media | None = None,
    templates: TemplateBinder | None = None,
    *,
    scope: JobScope | None = None,
) -> TaskFunction:
    """Bind `run-comfyui-template` (a named template and its params): the job envelope
    `{"template", "params"}` in short, run as `run-comfyui-job` runs it."""
    run = _job_runner(executor, media, templates, scope)

    async def run_comfyui_template(
        template: str, params: dict[str, Any], ctx: WorkerContext
    ) -> dict[str, Any]:
        given = {"template": template, "params": params}
        return await run(given, given, ctx)

    return run_comfyui_template


def _job_runner(
    executor: Executor,
    media: Media | None,
    templates: TemplateBinder | None,
    scope: JobScope | None,
) -> Callable[[dict[str, Any], dict[str, Any], WorkerContext], Awaitable[dict[str, Any]]]:
    """Runs a job envelope as one attempt of the task whose input variables were `given`."""
    media = media or Media(executor.settings, executor.client)
    scope = scope or JobScope(namespace=executor.settings.job_namespace)

    async def run(
        envelope: dict[str, Any], given: dict[str, Any], ctx: WorkerContext
    ) -> dict[str, Any]:
        async with _task_run(ctx, scope, given, executor.settings) as (job, observer):
            result = await run_job(
                parse_job(envelope),
                executor=executor,
                media=media,
                templates=templates,
                prompt_id=job.prompt_id,
                observer=observer,
                tag=job.tag,
            )
            return await _finished(result, job.limit)

    return run


@dataclass(frozen=True, slots=True)
class _Attempt:
    """This attempt's prompt id, the tag its prompt carries, and how large its result or
    exception may be."""

    prompt_id: str
    tag: PromptTag
    limit: ResultLimit


def inputs_bytes(ctx: WorkerContext, given: dict[str, Any]) -> int:
    """Bytes of the TaskRun's input variables as LittleHorse keeps them in its record."""
    # The SDK keeps the ScheduledTask it was given (littlehorse-client 1.3.0, pinned).
    scheduled = getattr(ctx, "_scheduled_task", None)
    if scheduled is not None:
        return sum(int(variable.ByteSize()) for variable in scheduled.variables)
    return serialized_size(given)


@contextlib.asynccontextmanager
async def _task_run(
    ctx: WorkerContext, scope: JobScope, given: dict[str, Any], settings: Settings
) -> AsyncIterator[tuple[_Attempt, TaskObserver]]:
    """One attempt of a task: its prompt id and observer, its outcome recorded, and our
    errors as LittleHorse sees them (named business exceptions, or retryable)."""
    identity = JobIdentity.of(ctx.task_run_id, scope)
    # A digest of what the task was given: off the loop when that is large (a big workflow).
    tag = await off_loop(given, lambda: identity.tag(ctx.task_def_name, given))
    limit = result_limit(settings.max_result_bytes, inputs_bytes(ctx, given), ctx.attempt_number)
    attempt = _Attempt(identity.prompt_id, tag, limit)
    prompt_id = attempt.prompt_id
    observer = TaskObserver(ctx, identity)
    bind_job(
        prompt_id=prompt_id,
        wf_run_id=observer.wf_run_id,
        task_guid=observer.task_run_id,
        attempt=observer.attempt,
        tenant=scope.tenant,
        task_def=ctx.task_def_name,
    )
    # Here, not at import: whatever reset the logging since, the SDK's echo of this attempt's
    # exception is filtered.
    install_task_log_filter()
    observer.log(f"attempt {ctx.attempt_number}: ComfyUI prompt_id {prompt_id}")
    outcome, name = JobOutcome.FAILED, ""
    try:
        yield attempt, observer
        outcome = JobOutcome.SUCCESS
    except ComfyUIWorkerError as exc:
        observer.log(f"failed: {exc}", final=True)
        business = business_name(
            exc, retryable_execution_errors=settings.retryable_execution_errors
        )
        name = business.value if business else type(exc).__name__
        if business is not None:
            outcome = JobOutcome.BUSINESS_EXCEPTION
            reported = await lh_exception(exc, business, max_bytes=limit.max_bytes)
            log_business_exception(exc, reported)
            raise reported from exc
        raise
    except asyncio.CancelledError:
        outcome, name = JobOutcome.CANCELLED, "CancelledError"
        raise
    except Exception as exc:
        name = type(exc).__name__
        raise
    finally:
        observer.close(outcome, name)


async def _finished(result: dict[str, Any], limit: ResultLimit) -> dict[str, Any]:
    """A successful job's result as LittleHorse gets it: its delivered files counted (the
    manifest has sizes), then bounded to what LittleHorse stores."""
    files = result.get("files", [])
    metrics.record_delivered(len(files), sum(int(f.get("size", 0)) for f in files))
    return await off_loop(
        result, lambda: bound_result(result, limit.max_bytes, limit_name=limit.name)
    )
