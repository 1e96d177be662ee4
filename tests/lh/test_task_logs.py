"""What a failed attempt leaves in the log, through the real SDK worker (its own
`logging.error(traceback.format_exc())` included), the fake LittleHorse and the mock ComfyUI:
one WARNING line for a business exception, the traceback once for a real failure."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import signal
import traceback
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from littlehorse.exceptions import LHTaskException
from littlehorse.worker import LHTaskWorker

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import JOB_TASK_NAME, TASK_NAME, LogFormat
from comfyui_worker.exceptions import InvalidJobError
from comfyui_worker.execution import Executor
from comfyui_worker.lh.task import TaskFunction, make_job_task_function, make_task_function
from comfyui_worker.lh.task_logs import install as install_task_log_filter
from comfyui_worker.lh.task_logs import log_business_exception
from comfyui_worker.lh.worker import register
from comfyui_worker.observability.logs import configure_logging, flush_logs
from lh.fake_server import FakeLittleHorse, decode_report, running_worker
from lh.identities import prompt_id_of
from mock_settings import settings_for
from observability.serve_health import served

WORKFLOW = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "lh/l"}},
}
TRACEBACK = "Traceback (most recent call last)"


class Logged:
    """Our handler's output (in `log_format`) and every record the root logger let through
    to any handler (pytest's capture)."""

    def __init__(self, log_format: LogFormat, caplog: pytest.LogCaptureFixture) -> None:
        self.stream = io.StringIO()
        self.caplog = caplog
        configure_logging(log_format, stream=self.stream)

    def text(self) -> str:
        flush_logs()
        return self.stream.getvalue()

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines()]

    def notable(self) -> list[logging.LogRecord]:
        """WARNING and above, but the SDK's "Establishing insecure channel" (plaintext gRPC to
        the fake: how the worker connects, not what a task did)."""
        return [
            r for r in self.caplog.records if r.levelno >= logging.WARNING and r.name != "LHConfig"
        ]

    def notable_json(self) -> list[dict[str, Any]]:
        return [
            e
            for e in self.json()
            if e["log.level"] not in ("debug", "info") and e["log.logger"] != "LHConfig"
        ]


async def attempt(
    fake: FakeLittleHorse,
    mock: MockHandle,
    make: Callable[[Executor], TaskFunction],
    name: str,
    variables: dict[str, Any],
    wf_run_id: str,
) -> Any:
    """One attempt of `name` run by a real LHTaskWorker; its report."""
    executor = Executor(settings_for(mock))
    config = fake.config(num_worker_threads=1)
    task = make(executor)
    register(config, task, name)
    try:
        async with running_worker(fake, LHTaskWorker(task, name, config), name):
            run_id = fake.schedule_task(name, variables, wf_run_id=wf_run_id)
            return decode_report(await fake.await_report(run_id, timeout=15))
    finally:
        await executor.aclose()


@pytest.fixture
async def failing_node(comfyui_mock: MockHandle) -> AsyncIterator[MockHandle]:
    comfyui_mock.fail_node("2", message="image has 5 channels", exception_type="ValueError")
    yield comfyui_mock
    comfyui_mock.reset_controls()


@pytest.mark.parametrize("log_format", [LogFormat.TEXT, LogFormat.JSON])
async def test_a_business_exception_is_one_warning_line_without_a_traceback(
    fake: FakeLittleHorse,
    failing_node: MockHandle,
    caplog: pytest.LogCaptureFixture,
    log_format: LogFormat,
) -> None:
    logged = Logged(log_format, caplog)
    report = await attempt(
        fake, failing_node, make_task_function, TASK_NAME, {"workflow": WORKFLOW}, "g-biz"
    )
    assert report.status == "TASK_EXCEPTION"
    assert report.exception_name == "comfyui-execution-error"
    (record,) = logged.notable()
    assert record.levelno == logging.WARNING and record.exc_info is None
    line = record.getMessage()
    for part in (
        "comfyui-execution-error",
        f"prompt {prompt_id_of('g-biz')}",
        "WfRun g-biz",
        "task 0-1",
        "attempt 0",
        "image has 5 channels",
    ):
        assert part in line, part
    assert "\n" not in line
    text = logged.text()
    assert TRACEBACK not in text and TRACEBACK not in logged.caplog.text
    if log_format is LogFormat.TEXT:
        (shown,) = [x for x in text.splitlines() if " WARNING comfyui" in x or " ERROR " in x]
        assert shown.endswith(line)
        return
    (entry,) = logged.notable_json()
    assert entry["log.level"] == "warning" and entry["message"] == line
    assert entry["error.code"] == "comfyui-execution-error"
    assert entry["error.type"] == "comfyui_worker.exceptions.ExecutionError"
    assert "image has 5 channels" in entry["error.message"]
    assert "error.stack_trace" not in entry
    assert entry["comfyui.prompt_id"] == prompt_id_of("g-biz")
    assert (entry["littlehorse.wf_run_id"], entry["littlehorse.task_guid"]) == ("g-biz", "0-1")
    assert (entry["littlehorse.attempt"], entry["littlehorse.task_def"]) == (0, TASK_NAME)


async def test_a_bad_job_envelope_is_one_warning_line_too(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, caplog: pytest.LogCaptureFixture
) -> None:
    logged = Logged(LogFormat.JSON, caplog)
    report = await attempt(
        fake,
        comfyui_mock,
        make_job_task_function,
        JOB_TASK_NAME,
        {"job": {"workflow": WORKFLOW, "output": {"mode": "teleport"}}},
        "g-job",
    )
    assert report.status == "TASK_EXCEPTION" and report.exception_name == "comfyui-invalid-job"
    (record,) = logged.notable()
    assert record.levelno == logging.WARNING and "comfyui-invalid-job" in record.getMessage()
    assert TRACEBACK not in logged.text() and TRACEBACK not in caplog.text
    (entry,) = logged.notable_json()
    assert entry["littlehorse.task_def"] == JOB_TASK_NAME


@pytest.mark.parametrize("log_format", [LogFormat.TEXT, LogFormat.JSON])
async def test_a_retryable_failure_keeps_its_traceback_once_at_error(
    fake: FakeLittleHorse,
    comfyui_mock: MockHandle,
    caplog: pytest.LogCaptureFixture,
    log_format: LogFormat,
) -> None:
    logged = Logged(log_format, caplog)
    comfyui_mock.fail_http(count=50, path="POST /prompt", status=503)
    try:
        report = await attempt(
            fake, comfyui_mock, make_task_function, TASK_NAME, {"workflow": WORKFLOW}, "g-503"
        )
    finally:
        comfyui_mock.reset_controls()
    assert report.status == "TASK_FAILED" and "ServerError" in report.error_message
    errors = [r for r in logged.notable() if r.levelno >= logging.ERROR]
    (record,) = errors
    assert record.exc_info is not None and type(record.exc_info[1]).__name__ == "ServerError"
    line = record.getMessage()
    assert "task attempt failed: ServerError" in line and "WfRun g-503" in line
    assert "\n" not in line
    assert caplog.text.count(TRACEBACK) == 1
    text = logged.text()
    assert text.count(TRACEBACK) == 1
    if log_format is LogFormat.TEXT:
        return
    (entry,) = [e for e in logged.json() if e["log.level"] == "error"]
    assert entry["message"] == line and entry["log.logger"] == "root"
    assert entry["error.type"] == "comfyui_worker.exceptions.ServerError"
    assert "503" in entry["error.message"]
    assert entry["error.stack_trace"].startswith(TRACEBACK)
    assert "raise" in entry["error.stack_trace"] and "ServerError" in entry["error.stack_trace"]
    assert (entry["littlehorse.wf_run_id"], entry["comfyui.prompt_id"]) == (
        "g-503",
        prompt_id_of("g-503"),
    )


async def test_serve_logs_a_business_exception_once_and_a_failure_with_its_traceback(
    fake: FakeLittleHorse, failing_node: MockHandle, tmp_path: Path
) -> None:
    """The same through `serve` (SupervisedWorker, the CLI's logging), in JSON."""
    async with served(fake, failing_node, tmp_path, COMFYUI_LOG_FORMAT="json") as serve:
        bad = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW}, wf_run_id="s-biz")
        assert decode_report(await fake.await_report(bad, timeout=15)).status == "TASK_EXCEPTION"
        failing_node.reset_controls()
        failing_node.fail_http(count=10, path="POST /prompt", status=503)
        failed = fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW}, wf_run_id="s-503")
        assert decode_report(await fake.await_report(failed, timeout=15)).status == "TASK_FAILED"
        serve.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await serve.proc.wait() == 0
    text = serve.log()
    assert text.count(TRACEBACK) == 1, text
    records = [json.loads(line) for line in text.splitlines()]
    warned = [r for r in records if r.get("error.code")]
    (business,) = warned
    assert business["log.level"] == "warning" and "error.stack_trace" not in business
    assert business["littlehorse.wf_run_id"] == "s-biz"
    assert f"prompt {prompt_id_of('s-biz')}" in business["message"]
    assert business["service.node.name"].startswith("worker-")
    (error,) = [r for r in records if r["log.level"] == "error"]
    assert error["littlehorse.wf_run_id"] == "s-503" and TRACEBACK in error["error.stack_trace"]
    assert error["error.type"] == "comfyui_worker.exceptions.ServerError"


def test_the_filter_touches_only_the_sdks_traceback_of_the_exception_being_handled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    install_task_log_filter()

    def log_them() -> None:
        marked = LHTaskException("comfyui-invalid-job", "bad")
        log_business_exception(InvalidJobError("bad"), marked)
        try:
            raise marked
        except LHTaskException:
            logging.error(traceback.format_exc())  # the SDK's echo: dropped
            logging.error("Traceback (most recent call last): not this one")  # kept as it is
            logging.getLogger("other").error(traceback.format_exc())  # not the root logger
        try:
            raise ValueError("boom")
        except ValueError:
            logging.error(traceback.format_exc())  # no job bound here: no ids

    # A context of its own: no job ids that an earlier test bound in this thread.
    contextvars.Context().run(log_them)
    shown = [(r.name, r.getMessage().splitlines()[0]) for r in caplog.records]
    assert shown == [
        ("comfyui_worker.lh.task_logs", "business exception comfyui-invalid-job "
         "(LittleHorse does not retry it): bad"),
        ("root", "Traceback (most recent call last): not this one"),
        ("other", "Traceback (most recent call last):"),
        ("root", "task attempt failed: ValueError: boom"),
    ]  # fmt: skip
    assert caplog.records[-1].exc_info is not None
