"""A password in COMFYUI_BASE_URL stays out of every log line and every error: what
LittleHorse stores (the TASK_FAILED message, the NodeRun log) and what `serve` prints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME
from lh.fake_server import FakeLittleHorse, running_worker
from lh.serve_process import (
    WORKFLOW,
    serve_env,
    serve_one_task,
)
from lh.test_task_worker import Worker, run_task, settings_for

PASSWORD = "pw-s3cr3t-in-the-url"


def with_credentials(url: str) -> str:
    return url.replace("://", f"://worker:{PASSWORD}@", 1)


@pytest.fixture
async def unreachable(fake: FakeLittleHorse, comfyui_mock: MockHandle) -> AsyncIterator[None]:
    # Nothing listens on port 9: every request fails as "unreachable".
    settings = settings_for(
        comfyui_mock, comfyui_base_url=with_credentials("http://127.0.0.1:9"), retries=0
    )
    worker = Worker(fake, settings)
    async with running_worker(fake, worker.lh_worker(), TASK_NAME):
        yield
    await worker.executor.aclose()


async def test_an_unreachable_comfyui_fails_without_its_password(
    unreachable: None, fake: FakeLittleHorse
) -> None:
    report = await run_task(fake, WORKFLOW)
    assert report.status == "TASK_FAILED"
    assert "ComfyUI at http://***@127.0.0.1:9 unreachable" in report.error_message
    assert PASSWORD not in report.error_message
    assert "unreachable" in report.log_output and PASSWORD not in report.log_output


async def test_serve_prints_the_url_masked(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    # Every websocket handshake fails, so the job falls back to polling, and says so.
    comfyui_mock.fail_http(count=1_000, path="/ws")
    env = serve_env(fake, comfyui_mock, COMFYUI_BASE_URL=with_credentials(comfyui_mock.url))
    report, output = await serve_one_task(fake, env, tmp_path)
    assert report.status == "TASK_SUCCESS", report.error_message
    masked = comfyui_mock.url.replace("://", "://***@")
    assert f"ComfyUI {masked}" in output  # the start-up line
    assert f"websocket {masked.replace('http', 'ws', 1)}/ws" in output
    assert "falling back to polling" in output and "falling back to polling" in report.log_output
    assert PASSWORD not in output and PASSWORD not in report.log_output
