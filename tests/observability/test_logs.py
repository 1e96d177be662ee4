"""JSON and text log records, the job's ids on them, and credentials kept out of them."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import re
import threading
import time
from pathlib import Path

import pytest

from comfyui_worker import __version__
from comfyui_worker.cli import main
from comfyui_worker.constants import LogFormat
from comfyui_worker.observability.logs import (
    ECS_VERSION,
    Redactor,
    bind_job,
    configure_logging,
    error_fields,
    flush_logs,
    mask_userinfo,
    redact,
    secret_values,
    set_worker_id,
)

SECRET = "s3cr3t-value-that-must-not-leak"


async def test_json_lines_parse_and_carry_the_jobs_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LHC_OAUTH_CLIENT_SECRET", SECRET)
    stream = io.StringIO()
    configure_logging(LogFormat.JSON, verbose=True, stream=stream)
    log = logging.getLogger("comfyui_worker.test")

    async def job() -> None:
        bind_job(
            prompt_id="p-1",
            wf_run_id="wf-1",
            task_guid="guid-1",
            attempt=2,
            tenant="acme",
            task_def="run-comfyui-job",
        )
        log.info("submitted with %s", SECRET)
        try:
            raise RuntimeError(f"token {SECRET} refused")
        except RuntimeError:
            log.debug("failed", exc_info=True)

    await asyncio.create_task(job())
    log.warning("between jobs")  # the job's context stayed with its task
    flush_logs()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["message"] for r in lines] == ["submitted with ***", "failed", "between jobs"]
    first, second, third = lines
    # ecs-logging's order: these three first.
    assert list(first)[:3] == ["@timestamp", "log.level", "message"]
    assert first["log.level"] == "info" and first["log.logger"] == "comfyui_worker.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["@timestamp"])
    assert first["ecs.version"] == ECS_VERSION
    assert (first["service.name"], first["service.version"]) == ("comfyui-worker", __version__)
    assert first["event.dataset"] == "comfyui-worker.log"
    assert {k: v for k, v in first.items() if k.startswith(("comfyui.", "littlehorse."))} == {
        "comfyui.prompt_id": "p-1",
        "littlehorse.wf_run_id": "wf-1",
        "littlehorse.task_guid": "guid-1",
        "littlehorse.attempt": 2,
        "littlehorse.tenant": "acme",
        "littlehorse.task_def": "run-comfyui-job",
    }
    assert second["log.level"] == "debug"
    assert second["error.type"] == "RuntimeError"
    assert second["error.message"] == "token *** refused"
    assert second["error.stack_trace"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: token *** refused" in second["error.stack_trace"]
    assert "error.type" not in first
    assert third["log.level"] == "warning" and "comfyui.prompt_id" not in third
    assert SECRET not in stream.getvalue()


def test_json_lines_name_the_worker_and_error_fields_given_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMFYUI_S3_PASSWORD", SECRET)
    stream = io.StringIO()
    configure_logging(LogFormat.JSON, stream=stream)
    log = logging.getLogger("comfyui_worker.x")
    set_worker_id(None)  # as before `serve`; an in-process serve of another test set one
    log.info("before serve knows its id")
    set_worker_id("gpu-node-7")
    try:
        given = error_fields("mypkg.BadThing", f"at http://u:{SECRET}@h/x", code="my-code")
        log.warning("refused", extra=given)
    finally:
        set_worker_id(None)
    flush_logs()
    before, after = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "service.node.name" not in before
    assert after["service.node.name"] == "gpu-node-7"
    assert (after["error.type"], after["error.code"]) == ("mypkg.BadThing", "my-code")
    assert after["error.message"] == "at http://***@h/x"  # every field is redacted
    assert "error.stack_trace" not in after


def test_every_json_field_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LHC_OAUTH_CLIENT_SECRET", SECRET)
    stream = io.StringIO()
    configure_logging(LogFormat.JSON, stream=stream)

    def job() -> None:
        bind_job(wf_run_id=f"wf-{SECRET}", prompt_id="http://a:b@c/")
        logging.getLogger(f"lib.{SECRET}").error("x", stack_info=True)

    contextvars.copy_context().run(job)  # the ids stay out of the tests that follow
    flush_logs()
    (entry,) = (json.loads(line) for line in stream.getvalue().splitlines())
    assert entry["littlehorse.wf_run_id"] == "wf-***"
    assert entry["comfyui.prompt_id"] == "http://***@c/"
    assert entry["log.logger"] == "lib.***"
    assert entry["message"].startswith("x\nStack (most recent call last):")
    assert SECRET not in stream.getvalue()


def test_text_format_stays_as_before_and_is_redacted_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_STORE_SECRET_ACCESS_KEY", SECRET)
    stream = io.StringIO()
    configure_logging(LogFormat.TEXT, stream=stream)
    logging.getLogger("comfyui_worker.x").info("key is %s", SECRET)
    logging.getLogger("comfyui_worker.x").debug("not at INFO")
    flush_logs()
    (line,) = stream.getvalue().splitlines()
    assert line.endswith(" INFO comfyui_worker.x: key is ***")


def test_credentials_from_the_env_file_are_redacted_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The SDK's LHC_* settings may come from `.env` (env_file_variables): its secret
    must not reach a log either."""
    monkeypatch.delenv("LHC_OAUTH_CLIENT_SECRET", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(f"LHC_OAUTH_CLIENT_SECRET={SECRET}\nLHC_API_HOST=lh\n")
    stream = io.StringIO()
    configure_logging(LogFormat.JSON, stream=stream)
    logging.getLogger("comfyui_worker.x").warning("token request with %s failed", SECRET)
    flush_logs()
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == "token request with *** failed"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://user:pass@comfy:8188", "http://***@comfy:8188"),
        (
            "websocket ws://u:p@ss@comfy:8188/ws?clientId=1 unavailable",
            "websocket ws://***@comfy:8188/ws?clientId=1 unavailable",
        ),
        ("at 'https://token@h/x' for 'a@b'", "at 'https://***@h/x' for 'a@b'"),
        ('{"url": "s3://key:secret@bucket/k"}', '{"url": "s3://***@bucket/k"}'),
        (
            "http://comfy:8188/view?who=a@b and mail@example.com",
            "http://comfy:8188/view?who=a@b and mail@example.com",
        ),
    ],
)
def test_the_user_info_of_any_url_is_masked(text: str, shown: str) -> None:
    assert mask_userinfo(text) == shown


def test_log_lines_and_error_messages_show_urls_without_their_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COMFYUI_S3_PASSWORD", SECRET)
    stream = io.StringIO()
    configure_logging(LogFormat.JSON, stream=stream)
    logging.getLogger("comfyui_worker.x").info("ComfyUI at http://user:%s@comfy:8188", "pw-1")
    flush_logs()
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == "ComfyUI at http://***@comfy:8188"
    # What leaves the process otherwise (a report, stderr) goes through the same redactor.
    assert redact(f"GET /queue: ComfyUI at http://u:{SECRET}@c:1 ({SECRET})") == (
        "GET /queue: ComfyUI at http://***@c:1 (***)"
    )


class StalledStream(io.StringIO):
    """stderr as a stalled container log driver leaves it: writes block until released."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()

    def write(self, text: str) -> int:
        assert self.released.wait(10), "never released"
        return super().write(text)


def test_a_stalled_stderr_does_not_hold_up_the_code_that_logs() -> None:
    stream = StalledStream()
    configure_logging(LogFormat.TEXT, stream=stream)
    log = logging.getLogger("comfyui_worker.x")
    started = time.monotonic()
    for n in range(3):
        log.info("line %d", n)
    assert time.monotonic() - started < 1  # returned at once, the writes still blocked
    assert stream.getvalue() == ""
    stream.released.set()
    flush_logs()
    assert [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()] == [
        "line 0",
        "line 1",
        "line 2",
    ]
    log.info("after the flush")  # written directly from now on
    assert stream.getvalue().endswith("comfyui_worker.x: after the flush\n")


def test_only_credential_settings_count_as_secrets() -> None:
    env = {
        "LHC_OAUTH_CLIENT_SECRET": "abcdef",
        "AWS_SECRET_ACCESS_KEY": "wxyz1234",
        "COMFYUI_S3_PASSWORD": "hunter22",
        "AZURE_STORAGE_ACCOUNT_KEY": "azkey123",
        "GOOGLE_SERVICE_ACCOUNT_KEY": '{"private_key": "x"}',
        "LHC_API_TOKEN": "tok",  # too short to be worth redacting ordinary words for
        "LHC_API_HOST": "littlehorse",
        "COMFYUI_OUTPUT_DIR": "/comfyui/output",
    }
    assert set(secret_values(env)) == {
        "abcdef",
        "wxyz1234",
        "hunter22",
        "azkey123",
        '{"private_key": "x"}',
    }
    assert Redactor(["abcdef"])("x abcdef y abcdef") == "x *** y ***"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("COMFYUI_LOG_FORMAT", "yaml", "COMFYUI_LOG_FORMAT: Input should be 'text' or 'json'"),
        ("COMFYUI_WORKER_HEALTH_PORT", "70000", "COMFYUI_WORKER_HEALTH_PORT: Input should be"),
        ("COMFYUI_WORKER_HEALTH_PORT", "-1", "COMFYUI_WORKER_HEALTH_PORT: Input should be"),
        ("COMFYUI_WORKER_HEALTH_PORT", "http", "COMFYUI_WORKER_HEALTH_PORT: Input should be"),
    ],
)
def test_bad_observability_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    expected: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert main(["serve"]) == 3
    err = capsys.readouterr().err
    assert "comfyui-worker: error: invalid configuration: " in err and expected in err
    assert repr(value) in err
