"""The `execute-comfyui-workflow` task function the LittleHorse worker runs."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from littlehorse.worker import WorkerContext

from ..comfyui.events import Event
from ..constants import PROMPT_ID_NAMESPACE
from ..exceptions import ComfyUIWorkerError
from ..execution import Executor, JobObserver
from .errors import business_name, to_lh_exception

TaskFunction = Callable[[dict[str, Any], WorkerContext], Awaitable[dict[str, Any]]]


def prompt_id_for(idempotency_key: str) -> str:
    """The same ComfyUI prompt_id for every attempt of one TaskRun: retries find their job."""
    return str(uuid.uuid5(PROMPT_ID_NAMESPACE, idempotency_key))


class TaskObserver(JobObserver):
    """Sends notable moments to the NodeRun's log output (not every progress step: that
    output is stored by LittleHorse and must stay small)."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def note(self, prompt_id: str, message: str) -> None:
        super().note(prompt_id, message)
        self.ctx.log(f"prompt {prompt_id}: {message}")

    def event(self, prompt_id: str, event: Event) -> None:
        if event.type == "executing" and event.data.get("node") is not None:
            self.ctx.log(f"prompt {prompt_id}: executing node {event.data['node']}")
        elif event.type == "execution_cached" and event.data.get("nodes"):
            self.ctx.log(f"prompt {prompt_id}: cached nodes {event.data['nodes']}")


def make_task_function(executor: Executor) -> TaskFunction:
    """Bind the task to this process's Executor (client pool and in-flight limit)."""

    async def execute_comfyui_workflow(
        workflow: dict[str, Any], ctx: WorkerContext
    ) -> dict[str, Any]:
        prompt_id = prompt_id_for(ctx.idempotency_key)
        ctx.log(f"attempt {ctx.attempt_number}: ComfyUI prompt_id {prompt_id}")
        try:
            result = await executor.run(workflow, prompt_id=prompt_id, observer=TaskObserver(ctx))
        except ComfyUIWorkerError as exc:
            ctx.log(f"failed: {exc}")
            name = business_name(
                exc, retryable_execution_errors=executor.settings.retryable_execution_errors
            )
            if name is not None:
                raise to_lh_exception(exc, name) from exc
            raise
        return result.to_dict()

    return execute_comfyui_workflow
