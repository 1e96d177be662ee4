"""A real `serve`'s /metrics, after jobs of every outcome, checked by Prometheus's own
`promtool check metrics` (its parser and its naming lint: `_total` counters, base units,
HELP on every metric, no reserved label names).

promtool is a Go program outside the Python environment: Debian ships it in the
`prometheus` package, which `.ci/run` installs when it can, and then sets
COMFYUI_TEST_REQUIRE_PROMTOOL=1 so that a missing promtool fails CI instead of skipping.
Elsewhere the test skips without it; the metrics still go through prometheus-client's
parser in test_health_server.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME
from lh.fake_server import FakeLittleHorse, decode_report
from observability.serve_health import served
from observability.workflows import blur_workflow

REQUIRE = "COMFYUI_TEST_REQUIRE_PROMTOOL"


def promtool() -> str:
    """promtool's path; a skip without it, or a failure where CI promised it."""
    found = shutil.which("promtool")
    if found is not None:
        return found
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"promtool is not on PATH but {REQUIRE}=1 (.ci/run failed to install it?)")
    pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")


async def test_metrics_after_every_outcome_pass_promtool(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    tool = promtool()
    async with served(fake, comfyui_mock, tmp_path) as serve:
        ok = fake.schedule_task(TASK_NAME, {"workflow": blur_workflow("ok")})
        assert decode_report(await fake.await_report(ok, timeout=15)).status == "TASK_SUCCESS"
        comfyui_mock.set_cache_enabled(False)
        comfyui_mock.fail_node("2", message="bad image")
        bad = fake.schedule_task(TASK_NAME, {"workflow": blur_workflow("bad")})
        report = decode_report(await fake.await_report(bad, timeout=15))
        assert report.status == "TASK_EXCEPTION"
        comfyui_mock.reset_controls()
        comfyui_mock.fail_http(count=10, path="POST /prompt", status=503)
        failed = fake.schedule_task(TASK_NAME, {"workflow": blur_workflow("failed")})
        assert decode_report(await fake.await_report(failed, timeout=15)).status == "TASK_FAILED"
        response = await serve.get("/metrics")
    assert response.status_code == 200
    text = response.text
    # Every kind of series is there to be checked: labelled counters and histograms too.
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    for name in (
        "comfyui_worker_jobs_finished_total",
        "comfyui_worker_job_duration_seconds_bucket",
        "comfyui_worker_http_retries_total",
        "comfyui_worker_build_info",
        "comfyui_worker_comfyui_queue_remaining",
        "comfyui_worker_comfyui_up",
    ):
        assert name in names, name
    proc = await asyncio.create_subprocess_exec(
        tool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(text.encode()), timeout=30)
    assert proc.returncode == 0, (out + err).decode()
    assert out.strip() == b"" and err.strip() == b"", (out + err).decode()
