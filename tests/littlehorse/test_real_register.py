"""`comfyui-worker register` as a process against the real LittleHorse server."""

from __future__ import annotations

from pathlib import Path

import littlehorse
import pytest
from harness import LittleHorseServer, retry_rpc
from littlehorse.config import LHConfig
from littlehorse.model import TaskDef, TaskDefId, VariableType
from worker_processes import run_cli, worker_env

from comfyui_worker.constants import JOB_TASK_NAME, TASK_NAME, TEMPLATE_TASK_NAME

pytestmark = [pytest.mark.real_littlehorse, pytest.mark.timeout(60, func_only=True)]

JSON_OBJ = VariableType.JSON_OBJ
SIGNATURES = {
    TASK_NAME: [("workflow", JSON_OBJ)],
    JOB_TASK_NAME: [("job", JSON_OBJ)],
    TEMPLATE_TASK_NAME: [("template", VariableType.STR), ("params", JSON_OBJ)],
}


def _task_def(config: LHConfig, name: str) -> TaskDef:
    stub = config.stub()
    task_def: TaskDef = retry_rpc(lambda: stub.GetTaskDef(TaskDefId(name=name), timeout=5))
    return task_def


def test_register_creates_the_three_task_defs_and_is_idempotent(
    real_lh_server: LittleHorseServer, lh_tenant: str, lh_config: LHConfig, tmp_path: Path
) -> None:
    env = worker_env(real_lh_server, lh_tenant)
    first = run_cli("register", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"TaskDef {name!r} registered" for name in SIGNATURES]
    created = {}
    for name, signature in SIGNATURES.items():
        task_def = _task_def(lh_config, name)
        inputs = [(v.name, v.type_def.primitive_type) for v in task_def.input_vars]
        assert inputs == signature, name
        assert task_def.return_type.return_type.primitive_type == JSON_OBJ
        created[name] = task_def.created_at

    again = run_cli("register", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    # The same TaskDefs, not new ones.
    assert {name: _task_def(lh_config, name).created_at for name in SIGNATURES} == created


def test_a_task_def_with_another_signature_is_refused_with_advice(
    real_lh_server: LittleHorseServer, lh_tenant: str, lh_config: LHConfig, tmp_path: Path
) -> None:
    # The names are fixed, so the conflicting TaskDef lives in this test's own tenant.
    async def older(workflow: str) -> str:
        return workflow

    littlehorse.create_task_def(older, TASK_NAME, lh_config)
    _task_def(lh_config, TASK_NAME)  # committed, so register sees it

    done = run_cli("register", env=worker_env(real_lh_server, lh_tenant), cwd=tmp_path)
    assert done.returncode == 3
    # The last line: the SDK logs a warning about the plaintext channel first.
    assert done.stderr.strip().splitlines()[-1] == (
        f"comfyui-worker: error: TaskDef {TASK_NAME!r} already exists with a different "
        "signature ((workflow: STR) -> STR); this worker needs (workflow: JSON_OBJ) -> "
        "JSON_OBJ. TaskDefs are immutable: delete the old one (lhctl delete taskDef "
        f"{TASK_NAME}) once no WfSpec uses it, then register again."
    )
    (var,) = _task_def(lh_config, TASK_NAME).input_vars
    assert var.type_def.primitive_type == VariableType.STR  # left as it was
