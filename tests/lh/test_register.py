"""`comfyui-worker register` against the fake LittleHorse server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import littlehorse
import pytest
from littlehorse.model import TaskDefId, VariableType

from comfyui_worker.cli import main
from comfyui_worker.constants import JOB_TASK_NAME, TASK_NAME, TEMPLATE_TASK_NAME
from comfyui_worker.lh.config import lh_config
from comfyui_worker.settings import Settings
from lh.fake_server import FakeLittleHorse


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLittleHorse]:
    with FakeLittleHorse() as server:
        monkeypatch.setenv("LHC_API_HOST", server.host)
        monkeypatch.setenv("LHC_API_PORT", str(server.port))
        monkeypatch.setenv("LHC_API_PROTOCOL", "PLAINTEXT")
        yield server


def test_register_creates_the_task_def(
    fake: FakeLittleHorse, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["register"]) == 0
    assert f"TaskDef {TASK_NAME!r} registered" in capsys.readouterr().out
    task_def = fake.task_defs[TASK_NAME]
    (var,) = task_def.input_vars
    assert var.name == "workflow"
    assert var.type_def.primitive_type == VariableType.JSON_OBJ
    assert task_def.return_type.return_type.primitive_type == VariableType.JSON_OBJ
    (job,) = fake.task_defs[JOB_TASK_NAME].input_vars
    assert job.name == "job" and job.type_def.primitive_type == VariableType.JSON_OBJ
    template, params = fake.task_defs[TEMPLATE_TASK_NAME].input_vars
    assert (template.name, template.type_def.primitive_type) == ("template", VariableType.STR)
    assert (params.name, params.type_def.primitive_type) == ("params", VariableType.JSON_OBJ)


def test_register_twice_is_fine(fake: FakeLittleHorse) -> None:
    assert main(["register"]) == 0
    assert main(["register"]) == 0
    assert sorted(fake.task_defs) == sorted([TASK_NAME, JOB_TASK_NAME, TEMPLATE_TASK_NAME])


def test_register_returns_once_its_task_defs_can_be_read(fake: FakeLittleHorse) -> None:
    # The real server answers a put before the TaskDef is committed; `serve` reads its
    # TaskDef right after registering it, and failed with NOT_FOUND on a fresh server.
    fake.delay_commits(0.5)
    assert main(["register"]) == 0
    stub = fake.config().stub()
    for name in (TASK_NAME, JOB_TASK_NAME, TEMPLATE_TASK_NAME):
        assert stub.GetTaskDef(TaskDefId(name=name), timeout=5).id.name == name


def test_conflicting_task_def_is_a_clear_error(
    fake: FakeLittleHorse, capsys: pytest.CaptureFixture[str]
) -> None:
    async def older(workflow: str) -> str:
        return workflow

    littlehorse.create_task_def(older, TASK_NAME, fake.config())
    assert main(["register"]) == 3
    err = capsys.readouterr().err
    assert "already exists with a different signature" in err
    assert "(workflow: STR) -> STR" in err and "(workflow: JSON_OBJ) -> JSON_OBJ" in err


def test_unreachable_littlehorse_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LHC_API_HOST", "127.0.0.1")
    monkeypatch.setenv("LHC_API_PORT", "9")
    assert main(["register"]) == 5
    assert "cannot register the TaskDef" in capsys.readouterr().err


def test_refused_put_is_fine_when_our_task_def_exists(
    fake: FakeLittleHorse, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # An admin registered it; the worker's credentials may run tasks but not write TaskDefs.
    assert main(["register"]) == 0
    fake.refuse_put_task_def(grpc.StatusCode.PERMISSION_DENIED)
    assert main(["register"]) == 0
    assert f"TaskDef {TASK_NAME!r} already registered" in capsys.readouterr().out
    assert "PERMISSION_DENIED" in caplog.text
    assert "exists with this worker's signature" in caplog.text


def test_refused_put_without_a_task_def_is_a_clear_error(
    fake: FakeLittleHorse, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.refuse_put_task_def(grpc.StatusCode.PERMISSION_DENIED)
    assert main(["register"]) == 3
    err = capsys.readouterr().err
    assert f"cannot create TaskDef {TASK_NAME!r}: LittleHorse answered PERMISSION_DENIED" in err
    assert "does not exist yet" in err and TASK_NAME not in fake.task_defs


def test_refused_put_with_another_signature_is_a_conflict(
    fake: FakeLittleHorse, capsys: pytest.CaptureFixture[str]
) -> None:
    async def older(workflow: str) -> str:
        return workflow

    littlehorse.create_task_def(older, TASK_NAME, fake.config())
    fake.refuse_put_task_def(grpc.StatusCode.PERMISSION_DENIED)
    assert main(["register"]) == 3
    assert "already exists with a different signature" in capsys.readouterr().err


def test_register_reads_littlehorse_settings_from_dot_env(
    fake: FakeLittleHorse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The process environment has no LHC_* at all: only `.env` says where LittleHorse is.
    for name in ("LHC_API_HOST", "LHC_API_PORT", "LHC_API_PROTOCOL"):
        monkeypatch.delenv(name)
    (tmp_path / ".env").write_text(
        f"LHC_API_HOST={fake.host}\nLHC_API_PORT={fake.port}\nLHC_API_PROTOCOL=PLAINTEXT\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LHC_", "LHW_", "COMFYUI_"))}
    done = subprocess.run(
        [sys.executable, "-m", "comfyui_worker.cli", "register"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert TASK_NAME in fake.task_defs


def test_environment_wins_over_dot_env(
    fake: FakeLittleHorse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "LHC_API_HOST=127.0.0.1\nLHC_API_PORT=9\nLHW_TASK_WORKER_ID=w-env-file\n"
    )
    monkeypatch.chdir(tmp_path)
    config = lh_config(Settings(_env_file=None))  # type: ignore[call-arg]
    assert config.bootstrap_server == fake.address  # the environment's, not .env's port 9
    assert config.task_worker_id == "w-env-file"  # only in .env
