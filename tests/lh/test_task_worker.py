"""The real LHTaskWorker running `execute-comfyui-workflow` against the fake LittleHorse
server and the mock ComfyUI: what LittleHorse is told in every outcome."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from littlehorse import to_variable_value
from littlehorse.worker import LHTaskWorker

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME
from comfyui_worker.execution import Executor
from comfyui_worker.lh.task import make_task_function
from comfyui_worker.lh.worker import register
from comfyui_worker.settings import Settings
from lh.fake_server import FakeLittleHorse, decode_report, running_worker, stop_worker
from lh.identities import prompt_id_of
from mock_settings import settings_for as mock_settings

WORKFLOW = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "lh/t"}},
    "4": {"class_type": "PreviewAny", "inputs": {"source": "a caption"}},
}


def settings_for(mock: MockHandle, **overrides: Any) -> Settings:
    # Safety checks every second; a small size cap to test it cheaply.
    return mock_settings(
        mock, **{"reconcile_interval": 1, "max_workflow_bytes": 20_000, **overrides}
    )


class Worker:
    """One worker process's worth: Executor + TaskDef + real LHTaskWorker."""

    def __init__(self, fake: FakeLittleHorse, settings: Settings, threads: int = 4) -> None:
        self.fake = fake
        self.executor = Executor(settings)
        self.config = fake.config(num_worker_threads=threads)
        self.task = make_task_function(self.executor)
        register(self.config, self.task)

    def lh_worker(self) -> LHTaskWorker:
        return LHTaskWorker(self.task, TASK_NAME, self.config)


@pytest.fixture
async def worker(fake: FakeLittleHorse, comfyui_mock: MockHandle) -> AsyncIterator[Worker]:
    w = Worker(fake, settings_for(comfyui_mock))
    async with running_worker(fake, w.lh_worker(), TASK_NAME):
        yield w
    await w.executor.aclose()


async def run_task(fake: FakeLittleHorse, workflow: Any, **kwargs: Any) -> Any:
    run_id = fake.schedule_task(TASK_NAME, {"workflow": workflow}, **kwargs)
    return decode_report(await fake.await_report(run_id, timeout=15))


async def test_success_returns_paths_of_files_that_exist(
    worker: Worker, fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    report = await run_task(fake, WORKFLOW, wf_run_id="guid-ok")
    assert report.status == "TASK_SUCCESS", report.error_message
    out = report.output
    assert out["prompt_id"] == prompt_id_of("guid-ok") and out["status"] == "success"
    (path,) = out["outputs"]
    assert Path(path).is_file() and Path(path).is_relative_to(comfyui_mock.output_dir.resolve())
    assert out["files"][0]["node_id"] == "3" and out["files"][0]["subfolder"] == "lh"
    assert out["texts"] == [{"node_id": "4", "key": "text", "text": "a caption"}]
    assert len(json.dumps(out)) < 10_000  # paths, never bytes
    assert "submitted" in report.log_output and "finished with 1 file(s)" in report.log_output
    assert comfyui_mock.executions(out["prompt_id"]) == 1


async def test_validation_error_is_a_named_business_exception(
    worker: Worker, fake: FakeLittleHorse
) -> None:
    bad = {**WORKFLOW, "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}
    del bad["4"]  # with another valid output, ComfyUI would run that one (next test)
    report = await run_task(fake, bad)
    assert report.status == "TASK_EXCEPTION"
    assert report.exception_name == "comfyui-validation-error"
    (node,) = report.exception_content["node_errors"]
    assert node["node_id"] == "3" and node["class_type"] == "SaveImage"
    assert node["errors"][0]["type"] == "required_input_missing"
    assert "node 3 (SaveImage)" in report.exception_message


async def test_partly_valid_workflow_runs_and_reports_what_did_not(
    worker: Worker, fake: FakeLittleHorse
) -> None:
    bad = {**WORKFLOW, "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}
    report = await run_task(fake, bad)
    assert report.status == "TASK_SUCCESS"
    assert report.output["outputs"] == [] and report.output["texts"][0]["node_id"] == "4"
    (node,) = report.output["node_errors"]
    assert node["node_id"] == "3" and node["errors"][0]["type"] == "required_input_missing"
    assert "will not run: node 3 (SaveImage)" in report.log_output


async def test_missing_node_is_named(worker: Worker, fake: FakeLittleHorse) -> None:
    report = await run_task(fake, {**WORKFLOW, "9": {"class_type": "NoSuchNode", "inputs": {}}})
    assert report.exception_name == "comfyui-missing-node"
    assert report.exception_content["node_errors"][0]["class_type"] == "NoSuchNode"


async def test_execution_error_names_the_node(
    worker: Worker, fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.fail_node("2", message="image has 5 channels", exception_type="ValueError")
    report = await run_task(fake, WORKFLOW)
    assert report.exception_name == "comfyui-execution-error"
    content = report.exception_content
    assert (content["node_id"], content["node_type"]) == ("2", "ImageInvert")
    assert content["exception_type"] == "ValueError"
    assert "image has 5 channels" in content["exception_message"]


async def test_out_of_memory_is_a_retryable_failure_and_the_retry_runs_again(
    worker: Worker, fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.fail_node(
        "2",
        message="CUDA out of memory. Tried to allocate 2.00 GiB",
        exception_type="torch.OutOfMemoryError",
    )
    run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW}, wf_run_id="guid-oom")
    report = decode_report(await fake.await_report(run_id, timeout=15))
    assert report.status == "TASK_FAILED" and report.exception_name is None
    assert "torch.OutOfMemoryError" in (report.error_message or "")
    # The next attempt (same prompt id) is not served the failed entry: it runs again.
    fake.retry_task(run_id)
    retry = decode_report(await fake.await_report(run_id, timeout=15))
    assert retry.status == "TASK_SUCCESS", retry.error_message
    assert comfyui_mock.executions(prompt_id_of("guid-oom")) == 2


@pytest.mark.parametrize(
    ("workflow", "message"),
    [
        ({"nodes": [], "links": []}, "UI format"),
        ({}, "workflow is empty"),
        (
            {"1": {"class_type": "PreviewAny", "inputs": {"source": "x" * 30_000}}},
            "over the 20000 byte limit",
        ),
        (to_variable_value([1, 2, 3]), "must be a JSON object of nodes, got array"),
        (to_variable_value("just text"), "got string"),
    ],
)
async def test_bad_workflow_variables_are_named_and_the_worker_keeps_serving(
    worker: Worker, fake: FakeLittleHorse, workflow: Any, message: str
) -> None:
    report = await run_task(fake, workflow)
    assert report.status == "TASK_EXCEPTION"
    assert report.exception_name == "comfyui-invalid-workflow"
    assert message in report.exception_message
    assert (await run_task(fake, WORKFLOW)).status == "TASK_SUCCESS"


async def test_comfyui_5xx_after_retries_is_a_retryable_failure(
    worker: Worker, fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.fail_http(count=50, path="POST /prompt", status=503)
    report = await run_task(fake, WORKFLOW)
    assert report.status == "TASK_FAILED" and report.error_type == "TASK_ERROR"
    assert "ServerError" in report.error_message and "503" in report.error_message
    comfyui_mock.reset_controls()
    assert (await run_task(fake, WORKFLOW)).status == "TASK_SUCCESS"


async def test_unreachable_comfyui_is_a_retryable_failure(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    w = Worker(fake, settings_for(comfyui_mock, comfyui_base_url="http://127.0.0.1:9"))
    async with running_worker(fake, w.lh_worker(), TASK_NAME):
        report = await run_task(fake, WORKFLOW)
    await w.executor.aclose()
    assert report.status == "TASK_FAILED" and "unreachable" in report.error_message


async def test_lost_prompt_after_a_comfyui_restart_is_retryable(
    worker: Worker, fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.set_job_delay(2.0)
    run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW}, wf_run_id="guid-lost")
    pid = prompt_id_of("guid-lost")
    await wait_until(lambda: comfyui_mock.request_count("/prompt", "POST") >= 1)
    comfyui_mock.restart()
    report = decode_report(await fake.await_report(run_id, timeout=15))
    assert report.status == "TASK_FAILED" and "PromptLostError" in report.error_message
    # The retry (same TaskRun) resubmits the same prompt id and succeeds.
    comfyui_mock.set_job_delay(0)
    fake.retry_task(run_id)
    retry = decode_report(await fake.await_report(run_id, attempt_number=1, timeout=15))
    assert retry.status == "TASK_SUCCESS" and retry.output["prompt_id"] == pid


async def test_retry_attaches_to_the_running_prompt_instead_of_resubmitting(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.set_job_delay(1.5)
    first = Worker(fake, settings_for(comfyui_mock))
    lh_worker = first.lh_worker()
    start = asyncio.get_running_loop().create_task(lh_worker.start())
    run_id = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW}, wf_run_id="guid-retry")
    pid = prompt_id_of("guid-retry")
    await wait_until(lambda: comfyui_mock.request_count("/prompt", "POST") == 1)
    # The worker dies mid-job (deploy, crash): the SDK reports the attempt as failed.
    await stop_worker(lh_worker, start)
    failed = decode_report(await fake.await_report(run_id, attempt_number=0, timeout=15))
    assert failed.status == "TASK_FAILED" and "CancelledError" in failed.error_message

    second = Worker(fake, settings_for(comfyui_mock))
    async with running_worker(fake, second.lh_worker(), TASK_NAME):
        fake.retry_task(run_id)
        retry = decode_report(await fake.await_report(run_id, attempt_number=1, timeout=15))
        assert retry.status == "TASK_SUCCESS", retry.error_message
        assert retry.output["reused"] is True and "attaching" in retry.log_output
        assert all(Path(p).is_file() for p in retry.output["outputs"])
        # A further retry after success reuses the finished outputs.
        fake.retry_task(run_id)
        again = decode_report(await fake.await_report(run_id, attempt_number=2, timeout=15))
        assert again.output["outputs"] == retry.output["outputs"]
    assert comfyui_mock.executions(pid) == 1
    assert comfyui_mock.request_count("/prompt", "POST") == 1
    for w in (first, second):
        await w.executor.aclose()


async def test_identical_workflow_in_a_new_task_lists_existing_files(
    worker: Worker, fake: FakeLittleHorse
) -> None:
    first = await run_task(fake, WORKFLOW)
    second = await run_task(fake, WORKFLOW)  # ComfyUI serves it from cache: no new file
    assert second.status == "TASK_SUCCESS"
    assert second.output["prompt_id"] != first.output["prompt_id"]
    assert second.output["outputs"] == first.output["outputs"]
    assert all(Path(p).is_file() for p in second.output["outputs"])


async def test_in_flight_limit_holds_across_tasks(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.set_job_delay(0.3)
    comfyui_mock.set_cache_enabled(False)
    w = Worker(fake, settings_for(comfyui_mock, max_in_flight=2), threads=5)
    seen: list[int] = []
    async with running_worker(fake, w.lh_worker(), TASK_NAME), httpx.AsyncClient() as http:
        run_ids = [fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW}) for _ in range(5)]
        waiting = [asyncio.create_task(fake.await_report(r, timeout=20)) for r in run_ids]
        while not all(t.done() for t in waiting):
            queue = (await http.get(f"{comfyui_mock.url}/queue")).json()
            seen.append(len(queue["queue_running"]) + len(queue["queue_pending"]))
            await asyncio.sleep(0.02)
        reports = [decode_report(t.result()) for t in waiting]
    await w.executor.aclose()
    assert all(r.status == "TASK_SUCCESS" for r in reports)
    assert max(seen) == 2  # one running + one queued, never more
    assert fake.max_in_flight >= 5  # LittleHorse handed out all five at once


async def test_worker_starts_against_the_task_def_register_creates(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    w = Worker(fake, settings_for(comfyui_mock))  # registers
    (var,) = fake.task_defs[TASK_NAME].input_vars
    assert var.name == "workflow"
    # LHTaskWorker.start() validates the callable against the stored TaskDef.
    async with running_worker(fake, w.lh_worker(), TASK_NAME):
        assert (await run_task(fake, WORKFLOW)).status == "TASK_SUCCESS"
    await w.executor.aclose()


async def wait_until(condition: Any) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)
