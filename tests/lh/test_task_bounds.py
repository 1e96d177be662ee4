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

from comfyui_mock.handle import MockHandle
from comfyui_worker.bounds import MAX_LOG_BYTES
from comfyui_worker.constants import TASK_NAME
from lh.fake_server import FakeLittleHorse, running_worker
from lh.test_task_worker import WORKFLOW, Worker, run_task, settings_for

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
