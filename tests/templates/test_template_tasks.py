"""`run-comfyui-template` and the template form of `run-comfyui-job` through the real SDK
worker, the fake LittleHorse server and the mock ComfyUI: results with their effective params,
named business exceptions, and templates added or broken while the worker serves."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from littlehorse.worker import LHTaskWorker

from comfyui_mock.catalogue import FIXTURE_IMAGE
from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import JOB_TASK_NAME, TEMPLATE_TASK_NAME
from comfyui_worker.execution import Executor
from comfyui_worker.lh.task import make_job_task_function, make_template_task_function
from comfyui_worker.lh.worker import register
from comfyui_worker.runner import Media
from comfyui_worker.templates import TemplateStore
from lh.fake_server import FakeLittleHorse, decode_report, running_worker
from mock_settings import settings_for
from template_dirs import copy_examples, write


@pytest.fixture
def fake() -> Iterator[FakeLittleHorse]:
    with FakeLittleHorse() as server:
        yield server


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_examples(tmp_path / "templates")


@pytest.fixture
async def worker(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, root: Path
) -> AsyncIterator[None]:
    settings = settings_for(comfyui_mock, templates_dir=root)
    executor = Executor(settings)
    media = Media(settings, executor.client)
    store = TemplateStore(root, object_info=executor.client.object_info)
    config = fake.config(num_worker_threads=2)
    tasks = {
        TEMPLATE_TASK_NAME: make_template_task_function(executor, media, store),
        JOB_TASK_NAME: make_job_task_function(executor, media, store),
    }
    async with contextlib.AsyncExitStack() as stack:
        for name, task in tasks.items():
            register(config, task, name)
            await stack.enter_async_context(
                running_worker(fake, LHTaskWorker(task, name, config), name)
            )
        yield
    await media.aclose()
    await executor.aclose()


async def run_template(fake: FakeLittleHorse, template: str, params: Any, guid: str) -> Any:
    run_id = fake.schedule_task(
        TEMPLATE_TASK_NAME, {"template": template, "params": params}, wf_run_id=guid
    )
    return run_id, decode_report(await fake.await_report(run_id, timeout=15))


async def test_a_template_runs_and_returns_its_effective_params(
    worker: None, fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    _, report = await run_template(
        fake, "solid", {"caption": "hello", "width": 64, "method": "area"}, "guid-solid"
    )
    assert report.status == "TASK_SUCCESS", report.error_message or report.exception_message
    result = report.output
    assert result["status"] == "success" and Path(result["outputs"][0]).is_file()
    assert result["texts"] == [{"node_id": "4", "key": "text", "text": "hello"}]
    params = result["params"]
    assert {k: params[k] for k in ("caption", "width", "height", "method", "scale")} == {
        "caption": "hello",
        "width": 64,
        "height": 512,
        "method": "area",
        "scale": 1.0,
    }
    assert 0 <= params["color"] <= 16777215 and params["prefix"] == "templates/solid"


async def test_random_values_differ_per_job_and_stay_on_a_retry(
    worker: None, fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    run_a, a = await run_template(fake, "animate", {"frames": 2}, "guid-seed-a")
    _, b = await run_template(fake, "animate", {"frames": 2}, "guid-seed-b")
    assert a.status == b.status == "TASK_SUCCESS"
    assert a.output["params"]["color"] != b.output["params"]["color"]
    fake.retry_task(run_a)
    retry = decode_report(await fake.await_report(run_a, attempt_number=1, timeout=15))
    assert retry.status == "TASK_SUCCESS" and retry.output["reused"] is True
    assert retry.output["params"] == a.output["params"]
    assert comfyui_mock.executions(a.output["prompt_id"]) == 1


async def test_the_envelope_form_uploads_image_parameters(
    worker: None, fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    photo = {"base64": base64.b64encode(FIXTURE_IMAGE.read_bytes()).decode()}
    envelope = {"template": "invert", "params": {"photo": photo, "blur": 3}}
    run_id = fake.schedule_task(JOB_TASK_NAME, {"job": envelope}, wf_run_id="guid-env")
    report = decode_report(await fake.await_report(run_id, timeout=15))
    assert report.status == "TASK_SUCCESS", report.error_message or report.exception_message
    result = report.output
    assert result["params"] == {
        "prefix": "templates/invert",
        "photo": {"input": "photo.png"},
        "blur": 3,
    }
    uploaded = result["inputs"]["photo.png"]
    assert uploaded["nodes"] == ["1"] and uploaded["size"] == FIXTURE_IMAGE.stat().st_size
    assert (comfyui_mock.input_dir / uploaded["uploaded"].split(" [")[0]).is_file()


# One worker for all of them: each worker start and stop costs about a second.
BAD_TASKS: list[tuple[str, Any, str, str, str | None, str]] = [
    ("nope", {}, "comfyui-unknown-template", "no such template", None, "unknown-template"),
    ("solid", {}, "comfyui-invalid-params", "'caption' is required", "caption", "required"),
    (
        "animate",
        {"lossless": "false"},
        "comfyui-invalid-params",
        'expected a boolean (true or false), got string "false"',
        "lossless",
        "type",
    ),
    (
        "animate",
        {"frames": 2.5},
        "comfyui-invalid-params",
        "expected an integer, got number 2.5",
        "frames",
        "type",
    ),
    ("animate", {"fps": 99}, "comfyui-invalid-params", "above the maximum 60", "fps", "max"),
    (
        "solid",
        {"caption": "x", "method": "cubic"},
        "comfyui-invalid-params",
        '"cubic" is not one of the choices: "nearest-exact"',
        "method",
        "choices",
    ),
    ("animate", {"fsp": 9}, "comfyui-invalid-params", "'fsp' is unknown", "fsp", "unknown"),
]


async def test_bad_template_tasks_are_named_business_exceptions(
    worker: None, fake: FakeLittleHorse
) -> None:
    for i, (template, params, name, says, parameter, rule) in enumerate(BAD_TASKS):
        _, report = await run_template(fake, template, params, f"guid-bad-{i}")
        assert report.status == "TASK_EXCEPTION", (i, report.error_message)
        assert report.exception_name == name and says in report.exception_message, i
        content = report.exception_content
        assert (content["template"], content["parameter"], content["rule"]) == (
            template,
            parameter,
            rule,
        ), i


async def test_templates_change_while_the_worker_serves(
    worker: None, fake: FakeLittleHorse, root: Path
) -> None:
    manifest = root / "workflows.yaml"
    original = manifest.read_text()
    write(manifest, original + "\nplain:\n  workflow_file: solid.json\n  parameters: [caption]\n")
    _, added = await run_template(fake, "plain", {"caption": "new"}, "guid-hot-add")
    assert added.status == "TASK_SUCCESS" and added.output["params"] == {"caption": "new"}

    write(root / "animate.json", "{broken")
    _, broken = await run_template(fake, "animate", {}, "guid-hot-broken")
    assert broken.exception_name == "comfyui-broken-template"
    assert "template 'animate'" in broken.exception_message
    assert "animate.json is not valid JSON" in broken.exception_message
    _, other = await run_template(fake, "plain", {"caption": "still"}, "guid-hot-other")
    assert other.status == "TASK_SUCCESS"


async def test_a_manifest_read_mid_rewrite_fails_no_task_for_good(
    worker: None, fake: FakeLittleHorse, root: Path
) -> None:
    manifest = root / "workflows.yaml"
    full = manifest.read_text() + "\nplain:\n  workflow_file: solid.json\n  parameters: [caption]\n"
    _, before = await run_template(fake, "animate", {"frames": 2}, "guid-torn-before")
    assert before.status == "TASK_SUCCESS"

    write(manifest, full[: full.rindex("[caption]") + 4])  # written up to "[cap"
    _, served = await run_template(fake, "animate", {"frames": 2}, "guid-torn-served")
    assert served.status == "TASK_SUCCESS", served.error_message or served.exception_message
    run_id, added = await run_template(fake, "plain", {"caption": "new"}, "guid-torn-added")
    assert added.status == "TASK_FAILED" and added.exception_name is None, added
    assert "workflows.yaml is not valid YAML" in added.error_message

    write(manifest, full)  # the write completes; LittleHorse retries the task
    fake.retry_task(run_id)
    retry = decode_report(await fake.await_report(run_id, attempt_number=1, timeout=15))
    assert retry.status == "TASK_SUCCESS", retry.error_message or retry.exception_message
    assert retry.output["params"] == {"caption": "new"}
