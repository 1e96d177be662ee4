"""Who a job is: one identity per TaskRun, unique across everything that shares a ComfyUI.

The prompt id is what a retry uses to find its earlier attempt's prompt in ComfyUI, so it must
be the same for every attempt of one TaskRun and different for every other TaskRun. The
SDK's `WorkerContext.idempotency_key` is not that: it is the TaskRun's `task_guid` alone,
which the server builds as `"<threadRunNumber>-<nodePosition>"` (`"0-1"` for the first task
of *every* WfRun). The whole `TaskRunId` (the WfRun id with its parents, then the guid), the
tenant, and a namespace for deployments where several LittleHorse clusters share a ComfyUI
are. Prompt ids, upload names and store keys are all built from it, and logs, `/jobs` and
the NodeRun log name the job by it.

What the job was given travels with its prompt too (`PromptTag`): a prompt found under our
id whose tag differs is another job's, and its outputs are never delivered as ours.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from littlehorse.config import LHConfig
from littlehorse.model import TaskRunId, WfRunId

from ..comfyui.models import PromptTag
from ..constants import PROMPT_ID_NAMESPACE
from ..settings import Settings

# The tenant a LittleHorse server puts a request in when the client names none.
DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class JobScope:
    """What, beyond the TaskRunId, tells this worker's jobs from others on the same ComfyUI:
    the LittleHorse tenant (`LHC_TENANT_ID`) and `COMFYUI_JOB_NAMESPACE`."""

    tenant: str = DEFAULT_TENANT
    namespace: str = ""

    @classmethod
    def of(cls, config: LHConfig, settings: Settings) -> JobScope:
        return cls(tenant=config.tenant_id or DEFAULT_TENANT, namespace=settings.job_namespace)


def wf_run_path(wf_run_id: WfRunId) -> tuple[str, ...]:
    """The WfRun's id with its parents', outermost first: a child WfRun's own id is unique
    only among its parent's children."""
    path = [wf_run_id.id]
    while wf_run_id.HasField("parent_wf_run_id"):
        wf_run_id = wf_run_id.parent_wf_run_id
        path.append(wf_run_id.id)
    return tuple(reversed(path))


def wf_run_name(wf_run_id: WfRunId) -> str:
    """The WfRun id as LittleHorse prints it: parents first, joined by `_`."""
    return "_".join(wf_run_path(wf_run_id))


@dataclass(frozen=True, slots=True)
class JobIdentity:
    """One TaskRun, the same for each of its attempts."""

    scope: JobScope
    wf_run: tuple[str, ...]
    task_guid: str

    @classmethod
    def of(cls, task_run_id: TaskRunId, scope: JobScope) -> JobIdentity:
        return cls(scope, wf_run_path(task_run_id.wf_run_id), task_run_id.task_guid)

    @property
    def wf_run_id(self) -> str:
        return "_".join(self.wf_run)

    @property
    def task_run(self) -> str:
        """`<wf_run_id>/<task_guid>`, the TaskRun as LittleHorse's own SDKs key it."""
        return f"{self.wf_run_id}/{self.task_guid}"

    def describe(self) -> str:
        """The job as an operator looks it up: namespace (if any), tenant, TaskRun."""
        where = f"{self.scope.namespace}:" if self.scope.namespace else ""
        return f"{where}{self.scope.tenant}/{self.task_run}"

    @property
    def prompt_id(self) -> str:
        # JSON keeps the parts apart whatever they contain (ids may hold `_`, `/` or `:`).
        key = json.dumps(
            [self.scope.namespace, self.scope.tenant, list(self.wf_run), self.task_guid],
            separators=(",", ":"),
        )
        return str(uuid.uuid5(PROMPT_ID_NAMESPACE, key))

    def tag(self, task_def_name: str, given: dict[str, Any]) -> PromptTag:
        """The tag this job's prompt carries: who it is, and a digest of what it was given."""
        return PromptTag(job=self.describe(), digest=given_digest(task_def_name, given))


def given_digest(task_def_name: str, given: dict[str, Any]) -> str:
    """sha256 of the task's name and input variables, independent of key order."""
    canonical = json.dumps(
        {"task": task_def_name, "inputs": given},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
