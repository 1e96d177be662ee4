"""`comfyui-worker register` against the fake LittleHorse server."""

from __future__ import annotations

from collections.abc import Iterator

import littlehorse
import pytest
from littlehorse.model import VariableType

from comfyui_worker.cli import main
from comfyui_worker.constants import TASK_NAME
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


def test_register_twice_is_fine(fake: FakeLittleHorse) -> None:
    assert main(["register"]) == 0
    assert main(["register"]) == 0
    assert list(fake.task_defs) == [TASK_NAME]


def test_conflicting_task_def_is_a_clear_error(
    fake: FakeLittleHorse, capsys: pytest.CaptureFixture[str]
) -> None:
    async def older(workflow: str) -> str:
        return workflow

    littlehorse.create_task_def(older, TASK_NAME, fake.config())
    assert main(["register"]) == 1
    err = capsys.readouterr().err
    assert "already exists with a different signature" in err
    assert "(workflow: STR) -> STR" in err and "(workflow: JSON_OBJ) -> JSON_OBJ" in err


def test_unreachable_littlehorse_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LHC_API_HOST", "127.0.0.1")
    monkeypatch.setenv("LHC_API_PORT", "9")
    assert main(["register"]) == 1
    assert "cannot register the TaskDef" in capsys.readouterr().err
