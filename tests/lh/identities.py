"""The prompt id the worker gives a TaskRun, for tests that look the prompt up in the mock."""

from __future__ import annotations

from littlehorse.model import TaskRunId, WfRunId

from comfyui_worker.lh.identity import DEFAULT_TENANT, JobIdentity, JobScope


def prompt_id_of(
    run: TaskRunId | str,
    *,
    task_guid: str = "0-1",
    tenant: str = DEFAULT_TENANT,
    namespace: str = "",
) -> str:
    """`run`: the TaskRunId `schedule_task` returned, or a WfRun id given to it (the guid is
    then the first task's, as the fake mints it)."""
    if isinstance(run, str):
        run = TaskRunId(wf_run_id=WfRunId(id=run), task_guid=task_guid)
    return JobIdentity.of(run, JobScope(tenant=tenant, namespace=namespace)).prompt_id
