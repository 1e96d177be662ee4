"""examples/wfspec.py on the real server, its WfRuns run by a real `comfyui-worker serve`
against the mock ComfyUI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import LittleHorseServer
from littlehorse.config import LHConfig
from littlehorse.model import LHStatus
from wf_runs import describe_node_runs, run_wf, variable, wait_wf_run
from worker_processes import ServeProcess, worker_env

from comfyui_mock.handle import MockHandle

pytestmark = [pytest.mark.real_littlehorse, pytest.mark.timeout(90, func_only=True)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "wfspec.py"
WF_SPEC = "comfyui-generate"


def save_one_image(prefix: str) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


@pytest.fixture
def env(
    real_lh_server: LittleHorseServer, lh_tenant: str, comfyui_mock: MockHandle
) -> dict[str, str]:
    return worker_env(real_lh_server, lh_tenant, comfyui_mock)


@pytest.fixture
def serving(env: dict[str, str], tmp_path: Path) -> Iterator[ServeProcess]:
    """A serve process polling this test's tenant, and the example WfSpec registered there the
    way the README says (serve has created the TaskDefs the WfSpec names by then)."""
    with ServeProcess(env, tmp_path) as serve:
        serve.wait_ready()
        example = subprocess.run(
            [sys.executable, str(EXAMPLE)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert example.returncode == 0, example.stderr
        yield serve
        assert serve.stop() == 0, serve.output()


def _finish(config: LHConfig, workflow: dict[str, Any], serve: ServeProcess) -> str:
    wf_run_id = run_wf(config, WF_SPEC, {"workflow": workflow})
    try:
        wait_wf_run(config, wf_run_id)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- serve:\n{serve.output()}") from None
    return wf_run_id


def test_a_wf_run_completes_through_serve(
    serving: ServeProcess, lh_config: LHConfig, comfyui_mock: MockHandle
) -> None:
    wf_run_id = _finish(lh_config, save_one_image("lh/real"), serving)

    wf_run = wait_wf_run(lh_config, wf_run_id)
    assert LHStatus.Name(wf_run.status) == "COMPLETED", describe_node_runs(lh_config, wf_run_id)
    result = variable(lh_config, wf_run_id, "result")
    assert result["status"] == "success"
    assert result["reused"] is False
    (path,) = result["outputs"]
    assert Path(path).parent == comfyui_mock.output_dir / "lh"
    assert Path(path).name.startswith("real_") and Path(path).is_file()
    assert variable(lh_config, wf_run_id, "failure") is None


def test_a_business_exception_fails_the_wf_run_through_its_handler(
    serving: ServeProcess, lh_config: LHConfig
) -> None:
    # No class_type: the worker raises comfyui-invalid-workflow, which the server does not
    # retry; the example's handler records it and fails the WfRun with that name.
    wf_run_id = _finish(lh_config, {"1": {"inputs": {}}}, serving)

    wf_run = wait_wf_run(lh_config, wf_run_id)
    assert LHStatus.Name(wf_run.status) == "EXCEPTION", describe_node_runs(lh_config, wf_run_id)
    assert variable(lh_config, wf_run_id, "failure") == "comfyui-invalid-workflow"
    assert variable(lh_config, wf_run_id, "result") is None


def test_two_wf_runs_of_one_spec_get_their_own_outputs(
    serving: ServeProcess, lh_config: LHConfig
) -> None:
    # The real server names the first task of every WfRun "0-1": keyed on that alone, the
    # second WfRun would find the first one's prompt and return its outputs (#20).
    first = variable(lh_config, _finish(lh_config, save_one_image("lh/first"), serving), "result")
    second = variable(lh_config, _finish(lh_config, save_one_image("lh/second"), serving), "result")

    assert [Path(p).name.split("_")[0] for p in first["outputs"]] == ["first"]
    assert [Path(p).name.split("_")[0] for p in second["outputs"]] == ["second"]
    assert second["prompt_id"] != first["prompt_id"]
