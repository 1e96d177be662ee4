"""`run-comfyui-job` through the real SDK worker, the fake LittleHorse server, the mock
ComfyUI and moto's S3: what LittleHorse is told, and what lands in the store."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from littlehorse.worker import LHTaskWorker

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import JOB_TASK_NAME
from comfyui_worker.execution import Executor
from comfyui_worker.lh.task import make_job_task_function
from comfyui_worker.lh.worker import register
from comfyui_worker.runner import Media
from comfyui_worker.settings import Settings
from lh.fake_server import FakeLittleHorse, decode_report, running_worker
from lh.serve_process import serve_env, start_serve, stop_process, wait_polling
from mock_settings import settings_for
from s3_server import S3, SECRET

PNG = b"\x89PNG\r\n\x1a\n" + b"lh-job" * 200
WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "lh/j"}},
}


def job(**extra: Any) -> dict[str, Any]:
    return {
        "workflow": WORKFLOW,
        "inputs": {"photo.png": {"base64": base64.b64encode(PNG).decode()}},
        "output": {"mode": "store", "presign_seconds": 300},
        **extra,
    }


@contextlib.asynccontextmanager
async def serving(fake: FakeLittleHorse, settings: Settings) -> AsyncIterator[None]:
    """A worker process's worth serving run-comfyui-job: Executor, media, real LHTaskWorker."""
    executor = Executor(settings)
    media = Media(settings, executor.client)
    config = fake.config(num_worker_threads=2)
    task = make_job_task_function(executor, media)
    register(config, task, JOB_TASK_NAME)
    try:
        async with running_worker(fake, LHTaskWorker(task, JOB_TASK_NAME, config), JOB_TASK_NAME):
            yield
    finally:
        await media.aclose()
        await executor.aclose()


@pytest.fixture
async def worker(fake: FakeLittleHorse, comfyui_mock: MockHandle, s3: S3) -> AsyncIterator[None]:
    store = f"s3://{s3.bucket}/out"
    async with serving(fake, settings_for(comfyui_mock, output_store=store, max_inline_bytes=2000)):
        yield


async def run(fake: FakeLittleHorse, envelope: Any, guid: str) -> Any:
    run_id = fake.schedule_task(JOB_TASK_NAME, {"job": envelope}, wf_run_id=guid)
    return run_id, decode_report(await fake.await_report(run_id, timeout=15))


async def test_job_delivers_to_the_store_and_a_retry_overwrites(
    worker: None, fake: FakeLittleHorse, s3: S3, comfyui_mock: MockHandle
) -> None:
    run_id, report = await run(fake, job(), "guid-job-ok")
    assert report.status == "TASK_SUCCESS", report.error_message
    result = report.output
    (entry,) = result["files"]
    key = entry["uri"].removeprefix(f"s3://{s3.bucket}/")
    pid = result["prompt_id"]
    assert key.startswith(f"out/{pid}/3/") and result["outputs"] == [entry["uri"]]
    stored = s3.get(key)
    assert hashlib.sha256(stored).hexdigest() == entry["sha256"] and len(stored) == entry["size"]
    assert entry["url"].startswith(s3.endpoint)

    fake.retry_task(run_id)
    retry = decode_report(await fake.await_report(run_id, attempt_number=1, timeout=15))
    assert retry.status == "TASK_SUCCESS" and retry.output["reused"] is True
    assert retry.output["files"][0]["uri"] == entry["uri"]
    assert s3.keys("out/") == [key]
    assert comfyui_mock.executions(pid) == 1


@pytest.mark.parametrize(
    ("envelope", "name", "says"),
    [
        ({"workflow": WORKFLOW, "extra": 1}, "comfyui-invalid-job", "extra: unknown key"),
        ({"inputs": {}}, "comfyui-invalid-job", "exactly one of workflow or template"),
        ({"template": "portrait"}, "comfyui-unknown-template", "templates are not configured"),
        (
            {"workflow": WORKFLOW, "inputs": {"photo.png": {"base64": "%%%"}}},
            "comfyui-invalid-input",
            "input 'photo.png': is not valid base64",
        ),
        (
            {"workflow": WORKFLOW, "inputs": {"photo.png": {"url": "http://127.0.0.1:9/x.png"}}},
            "comfyui-invalid-input",
            "private, loopback or link-local",
        ),
        (
            {**job(), "output": {"mode": "base64"}},
            "comfyui-output-too-large",
            "use output mode 'store'",
        ),
    ],
)
async def test_bad_jobs_are_named_business_exceptions(
    worker: None, fake: FakeLittleHorse, envelope: Any, name: str, says: str
) -> None:
    _, report = await run(fake, envelope, f"guid-{name}-{abs(hash(str(envelope)))}")
    assert report.status == "TASK_EXCEPTION", report.error_message
    assert report.exception_name == name and says in report.exception_message
    assert says in report.exception_content["message"]


async def test_a_missing_bucket_is_denied_and_an_unreachable_store_retried(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    for store, guid in (
        ("s3://missing-bucket/x", "guid-denied"),
        (f"s3://{s3.bucket}/x", "guid-down"),
    ):
        if guid == "guid-down":
            monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        async with serving(fake, settings_for(comfyui_mock, output_store=store, retries=0)):
            _, report = await run(fake, job(), guid)
        if guid == "guid-denied":
            assert report.status == "TASK_EXCEPTION"
            assert report.exception_name == "comfyui-output-store-denied"
            assert report.exception_content["bucket"] == "missing-bucket"
            assert "'missing-bucket'" in report.exception_message
            assert SECRET not in str(report.exception_content) and SECRET not in report.log_output
        else:
            assert report.status == "TASK_FAILED" and "OutputStoreError" in report.error_message
            assert SECRET not in report.error_message


async def test_the_serve_process_serves_jobs_into_the_store(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, s3: S3, tmp_path: Path
) -> None:
    # The AWS_* variables the s3 fixture set reach the process through its environment.
    env = serve_env(fake, comfyui_mock, COMFYUI_OUTPUT_STORE=f"s3://{s3.bucket}/served")
    proc = await start_serve(env, tmp_path)
    try:
        await wait_polling(proc, fake, JOB_TASK_NAME)
        _, report = await run(fake, job(), "guid-served")
        assert report.status == "TASK_SUCCESS", report.error_message
        (entry,) = report.output["files"]
        stored = s3.get(entry["uri"].removeprefix(f"s3://{s3.bucket}/"))
        assert hashlib.sha256(stored).hexdigest() == entry["sha256"]
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        await stop_process(proc)
