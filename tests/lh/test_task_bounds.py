"""What LittleHorse is sent stays under COMFYUI_MAX_RESULT_BYTES: the real LHTaskWorker, the
fake LittleHorse server and the mock ComfyUI. (The real server refuses records near 1 MB and
the task then hangs until its timeout; the fake does not model that limit, so these tests
measure the reports themselves.)"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from littlehorse.worker import LHTaskWorker

from comfyui_mock.handle import MockHandle
from comfyui_worker.bounds import MAX_LOG_BYTES, MAX_RESULT_CEILING, result_limit
from comfyui_worker.constants import TASK_NAME, TEMPLATE_TASK_NAME
from comfyui_worker.execution import Executor
from comfyui_worker.lh.task import make_template_task_function
from comfyui_worker.lh.worker import register, template_store
from comfyui_worker.runner import Media
from lh.fake_server import FakeLittleHorse, decode_report, running_worker
from lh.test_task_worker import WORKFLOW, Worker, run_task, settings_for
from loop_lag import loop_lag
from template_dirs import copy_examples

LIMIT = 20_000


@pytest.fixture
async def worker(fake: FakeLittleHorse, comfyui_mock: MockHandle) -> AsyncIterator[Worker]:
    settings = settings_for(comfyui_mock, max_result_bytes=LIMIT, max_workflow_bytes=400_000)
    w = Worker(fake, settings)
    async with running_worker(fake, w.lh_worker(), TASK_NAME):
        yield w
    await w.executor.aclose()


def with_text(text: str) -> dict[str, Any]:
    return {**WORKFLOW, "4": {"class_type": "PreviewAny", "inputs": {"source": text}}}


async def test_a_long_text_is_cut_with_a_marker_and_the_result_fits(
    worker: Worker, fake: FakeLittleHorse
) -> None:
    report = await run_task(fake, with_text("x" * 300_000))
    assert report.status == "TASK_SUCCESS", report.error_message
    out = report.output
    assert len(json.dumps(out)) <= LIMIT
    (text,) = out["texts"]
    assert text["text"].startswith("xxxx") and text["text"].endswith(" bytes]")
    cut = int(text["text"].rsplit("[truncated ", 1)[1].split(" ")[0].replace(",", ""))
    assert cut + text["text"].index("…") == 300_000  # kept + cut = the whole text
    assert Path(out["outputs"][0]).is_file()  # paths are never cut


async def test_a_result_that_cannot_fit_is_output_too_large(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    # 40 files: their paths alone are over the limit, and paths are never cut.
    workflow = {**WORKFLOW, "1": {**WORKFLOW["1"], "inputs": {**WORKFLOW["1"]["inputs"]}}}
    workflow["1"]["inputs"]["batch_size"] = 40
    w = Worker(fake, settings_for(comfyui_mock, max_result_bytes=4_000))
    async with running_worker(fake, w.lh_worker(), TASK_NAME):
        report = await run_task(fake, workflow)
    await w.executor.aclose()
    assert report.status == "TASK_EXCEPTION"
    assert report.exception_name == "comfyui-output-too-large"
    assert "over COMFYUI_MAX_RESULT_BYTES (4,000) even with its texts cut" in (
        report.exception_message
    )
    content = report.exception_content
    assert content["limit"] == 4_000 and content["size"] > 4_000
    assert content["parts"]["files"] > content["parts"]["texts"]
    assert len(report.exception_message) + len(json.dumps(content)) <= 4_000


def doubled_text(seed: str, doublings: int) -> dict[str, Any]:
    """StringConcatenate nodes doubling `seed` `doublings` times, into a PreviewAny: a text
    2 ** doublings times the seed from a workflow about the seed's size."""
    workflow: dict[str, Any] = {
        "10": {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": seed, "string_b": "", "delimiter": ""},
        }
    }
    for n in range(11, 11 + doublings):
        workflow[str(n)] = {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": [str(n - 1), 0], "string_b": [str(n - 1), 0], "delimiter": ""},
        }
    workflow["9"] = {"class_type": "PreviewAny", "inputs": {"source": [str(10 + doublings), 0]}}
    return workflow


async def test_the_result_leaves_the_task_runs_inputs_their_room_in_its_record(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    # 300 KB of inputs, a 1.2 MB text, COMFYUI_MAX_RESULT_BYTES at its ceiling: a result of
    # the ceiling fits a report, but not the TaskRun's record beside the inputs. The real
    # server drops such a report (or stops processing), so the text is cut further.
    settings = settings_for(
        comfyui_mock, max_result_bytes=MAX_RESULT_CEILING, max_workflow_bytes=400_000
    )
    workflow = doubled_text("s" * 300_000, 2)
    w = Worker(fake, settings)
    async with running_worker(fake, w.lh_worker(), TASK_NAME):
        run_id = fake.schedule_task(TASK_NAME, {"workflow": workflow})
        report = decode_report(await fake.await_report(run_id, timeout=15))
    await w.executor.aclose()
    assert report.status == "TASK_SUCCESS", report.error_message
    assert fake.refused_reports == []
    inputs = len(json.dumps(workflow, separators=(",", ":")))
    size = len(json.dumps(report.output))
    limit = result_limit(MAX_RESULT_CEILING, inputs, 0).max_bytes
    assert size <= limit < MAX_RESULT_CEILING - inputs + 20_000
    assert size > limit - 1_000  # cut to the room left, not further
    (text,) = report.output["texts"]
    assert text["text"].endswith(" bytes]") and "[truncated " in text["text"]


async def test_a_huge_execution_error_is_bounded_everywhere(
    worker: Worker, fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.fail_node("ImageInvert", message="tensor dump " * 50_000)
    report = await run_task(fake, WORKFLOW)
    assert report.status == "TASK_EXCEPTION"
    assert report.exception_name == "comfyui-execution-error"
    stored = len(report.exception_message) + len(json.dumps(report.exception_content))
    assert stored <= LIMIT
    assert "[truncated " in report.exception_message
    assert report.exception_content["node_id"] == "2"
    assert "[truncated " in report.exception_content["exception_message"]
    assert len(report.log_output.encode()) <= MAX_LOG_BYTES
    assert "failed: node 2 (ImageInvert) failed: RuntimeError: tensor dump" in report.log_output


async def test_thousands_of_unknown_template_params_leave_the_loop_responsive(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    """The issue's call: 3,000 unknown parameters (645 KB) held the event loop for 25-31 s
    while the exception was cut, so every job and the heartbeat stalled with it."""
    templates = copy_examples(tmp_path / "templates")
    settings = settings_for(comfyui_mock, templates_dir=templates, max_result_bytes=800_000)
    executor = Executor(settings)
    task = make_template_task_function(
        executor, Media(settings, executor.client), template_store(executor)
    )
    config = fake.config(num_worker_threads=2)
    register(config, task, TEMPLATE_TASK_NAME)
    params = {f"unknown_{i:04}_" + "k" * 195: 1 for i in range(3_000)}
    stalls = []
    lh_worker = LHTaskWorker(task, TEMPLATE_TASK_NAME, config)
    async with running_worker(fake, lh_worker, TEMPLATE_TASK_NAME):
        # Best of three: on a shared machine the OS may pause any thread now and then; a
        # loop blocked by the task is blocked every time.
        for attempt in range(3):
            async with loop_lag() as lag:
                run_id = fake.schedule_task(
                    TEMPLATE_TASK_NAME,
                    {"template": "invert", "params": params},
                    wf_run_id=f"guid-{attempt}",
                )
                report = decode_report(await fake.await_report(run_id, timeout=50))
            stalls.append(lag.worst)
            assert report.exception_name == "comfyui-invalid-params"
            stored = len(report.exception_message) + len(json.dumps(report.exception_content))
            assert stored <= 800_000
            assert report.exception_content["template"] == "invert"
            if lag.worst < 0.05 or lag.worst > 1:  # a stall of seconds is no OS pause
                break
    await executor.aclose()
    assert min(stalls) < 0.05, f"the event loop stalled for {[round(s * 1000) for s in stalls]} ms"
