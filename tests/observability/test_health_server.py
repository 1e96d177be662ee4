"""The health server of a real `serve` process (fake LittleHorse, mock ComfyUI): probes,
metrics that move as jobs run, fail and retry, live /jobs, JSON logs without secrets."""

from __future__ import annotations

import asyncio
import json
import platform
import re
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from comfyui_mock.handle import MockHandle
from comfyui_worker import __version__
from comfyui_worker.constants import TASK_NAME
from lh.fake_server import FakeLittleHorse, decode_report, task_run_key
from lh.identities import prompt_id_of
from observability.serve_health import free_port, serve_env, served
from observability.workflows import blur_workflow, slow_blur

SECRET = "oauth-secret-9f8e7d6c5b4a"
ROOT = Path(__file__).resolve().parents[2]


LABELS = {"task": TASK_NAME, "template": ""}
PYTHON = platform.python_version()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(response.text)


def value(
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


async def test_probes_jobs_and_metrics_follow_what_the_worker_does(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    async with served(fake, comfyui_mock, tmp_path) as serve:
        assert (await serve.get("/healthz")).json() == {"status": "ok"}
        ready = (await serve.get("/readyz")).json()
        assert ready["ready"] is True and ready["failed"] == []
        missing = await serve.get("/nope")
        assert missing.status_code == 404 and "/readyz" in missing.json()["error"]
        before = await scrape(serve.http)
        assert value(before, "comfyui_worker_comfyui_up") == 1.0
        assert value(before, "comfyui_worker_littlehorse_polling") == 1.0
        assert value(before, "comfyui_worker_jobs_in_flight") == 0.0
        assert value(before, "process_resident_memory_bytes") > 0

        # A running job shows its node and percent, live.
        slow_blur(comfyui_mock, steps=30, seconds=1.5)
        run_id = fake.schedule_task(
            TASK_NAME, {"workflow": blur_workflow("health")}, wf_run_id="g-live"
        )
        async with asyncio.timeout(15):
            while True:
                jobs = (await serve.get("/jobs")).json()
                if jobs and jobs[0]["node"] == "2" and jobs[0]["percent"] > 40:
                    break
                await asyncio.sleep(0.05)
        (job,) = jobs
        assert job["prompt_id"] == prompt_id_of("g-live") and job["wf_run_id"] == "g-live"
        assert job["task_run_id"] == "0-1"
        assert job["state"] == "running" and job["node_type"] == "ImageBlur"
        assert job["detail"].startswith("running: ") and job["elapsed_seconds"] > 0
        during = await scrape(serve.http)
        assert value(during, "comfyui_worker_jobs_in_flight") == 1.0
        assert decode_report(await fake.await_report(run_id, timeout=15)).status == "TASK_SUCCESS"
        assert (await serve.get("/jobs")).json() == []

        # A business exception, a retried request and a retryable failure then its retry.
        comfyui_mock.reset_controls()
        comfyui_mock.set_cache_enabled(False)  # node 2 must run again to fail
        comfyui_mock.fail_node("2", message="bad image")
        failing = fake.schedule_task(TASK_NAME, {"workflow": blur_workflow("bad")})
        assert decode_report(await fake.await_report(failing, timeout=15)).status == (
            "TASK_EXCEPTION"
        )
        comfyui_mock.fail_http(count=1, path="POST /prompt", status=503)
        # The first attempt's lookup of an earlier attempt fails twice (COMFYUI_RETRIES=1).
        comfyui_mock.fail_http(count=2, path=f"/history/{prompt_id_of('g-retry')}", status=500)
        retried = fake.schedule_task(
            TASK_NAME, {"workflow": blur_workflow("retry")}, wf_run_id="g-retry"
        )
        assert decode_report(await fake.await_report(retried, timeout=15)).status == "TASK_FAILED"
        fake.retry_task(retried)
        second = decode_report(await fake.await_report(retried, attempt_number=1, timeout=15))
        assert second.status == "TASK_SUCCESS" and second.output["reused"] is False

        after = await scrape(serve.http)
    finished = "comfyui_worker_jobs_finished_total"
    assert value(after, finished, **LABELS, outcome="success", exception="") == 2
    assert (
        value(
            after,
            finished,
            **LABELS,
            outcome="business_exception",
            exception="comfyui-execution-error",
        )
        == 1
    )
    assert value(after, finished, **LABELS, outcome="failed", exception="ServerError") == 1
    assert value(after, "comfyui_worker_http_retries_total", endpoint="POST /prompt") == 1
    assert value(after, "comfyui_worker_http_retries_total", endpoint="GET /history/{id}") >= 1
    assert value(after, "comfyui_worker_slot_wait_seconds_count") == 4
    assert value(after, "comfyui_worker_job_duration_seconds_count", **LABELS) == 4
    assert value(after, "comfyui_worker_build_info", version=__version__, python=PYTHON) == 1
    for histogram in ("comfyui_queue_wait_seconds", "execution_seconds"):
        # The first job, the failing one and the retry; the attempt whose lookup failed
        # never submitted.
        assert value(after, f"comfyui_worker_{histogram}_count") == 3, histogram
    assert value(after, "comfyui_worker_execution_seconds_sum") >= 1.5
    assert value(after, "comfyui_worker_completion_detection_seconds_count") == 2
    assert value(after, "comfyui_worker_outputs_delivered_total") == 2
    assert value(after, "comfyui_worker_output_bytes_delivered_total") > 0
    assert value(after, "comfyui_worker_jobs_in_flight") == 0


async def test_readyz_follows_comfyui_going_away_and_coming_back(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    async with served(fake, comfyui_mock, tmp_path) as serve:
        restart = asyncio.create_task(asyncio.to_thread(comfyui_mock.restart, 3.0))
        down = await serve.wait_for("/readyz", 503)
        body = down.json()
        assert body["ready"] is False and body["failed"][0] == "comfyui"
        # Claims are gated on ComfyUI: the poll streams pause while it is away.
        assert set(body["failed"]) <= {"comfyui", "littlehorse_polling"}
        assert body["checks"]["not_draining"] is True
        assert (await serve.get("/healthz")).status_code == 200  # alive, only not ready
        assert value(await scrape(serve.http), "comfyui_worker_comfyui_up") == 0.0
        await restart
        await serve.wait_for("/readyz", 200)
        after = await scrape(serve.http)
        assert value(after, "comfyui_worker_comfyui_up") == 1.0
        assert value(after, "comfyui_worker_comfyui_restarts_total") == 1.0


async def test_readyz_follows_littlehorse_and_reconnects_are_counted(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    async with served(fake, comfyui_mock, tmp_path) as serve:
        assert value(await scrape(serve.http), "comfyui_worker_littlehorse_reconnects_total") == 0
        restart = asyncio.create_task(asyncio.to_thread(fake.restart, downtime=2.0))
        body = (await serve.wait_for("/readyz", 503)).json()
        assert body["failed"] == ["littlehorse_polling"] and body["checks"]["comfyui"] is True
        await restart
        await serve.wait_for("/readyz", 200, within=30)
        after = await scrape(serve.http)
        assert value(after, "comfyui_worker_littlehorse_reconnects_total") >= 1
        assert value(after, "comfyui_worker_littlehorse_polling") == 1.0


async def test_readyz_is_503_while_draining_and_the_running_job_finishes(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    async with served(fake, comfyui_mock, tmp_path, COMFYUI_SHUTDOWN_GRACE="20") as serve:
        slow_blur(comfyui_mock, steps=10, seconds=2.0)
        run_id = fake.schedule_task(TASK_NAME, {"workflow": blur_workflow("drain")})
        async with asyncio.timeout(15):
            while not (await serve.get("/jobs")).json():
                await asyncio.sleep(0.05)
        serve.proc.send_signal(signal.SIGTERM)
        body = (await serve.wait_for("/readyz", 503)).json()
        assert "not_draining" in body["failed"] and body["checks"]["not_draining"] is False
        assert (await serve.get("/healthz")).status_code == 200  # alive while it drains
        assert value(await scrape(serve.http), "comfyui_worker_draining") == 1.0
        report = decode_report(await fake.await_report(run_id, timeout=20))
        assert report.status == "TASK_SUCCESS"
        async with asyncio.timeout(20):
            assert await serve.proc.wait() == 0


async def test_json_logs_carry_the_prompt_id_and_never_a_secret(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    async with served(
        fake,
        comfyui_mock,
        tmp_path,
        "-v",  # debug: every logger at every level
        COMFYUI_LOG_FORMAT="json",
        LHC_OAUTH_CLIENT_SECRET=SECRET,
        LHC_OAUTH_CLIENT_ID="worker",
        COMFYUI_STORE_SECRET_ACCESS_KEY=SECRET + "-store",
    ) as serve:
        comfyui_mock.fail_http(count=1, path="POST /prompt", status=503)
        run_id = fake.schedule_task(
            TASK_NAME, {"workflow": blur_workflow("logs")}, wf_run_id="g-logs"
        )
        assert decode_report(await fake.await_report(run_id, timeout=15)).status == "TASK_SUCCESS"
        serve.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            assert await serve.proc.wait() == 0
    text = serve.log()
    assert SECRET not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert {"@timestamp", "log.level", "log.logger", "message", "ecs.version"} <= set(records[0])
    assert any(r["log.level"] == "debug" for r in records)
    # The worker id the SDK drew (LHW_TASK_WORKER_ID unset) and polled under, on every line
    # from `serve` on.
    (handout,) = [h for h in fake.handouts if h.key == task_run_key(run_id)]
    assert handout.client_id is not None and handout.client_id.startswith("worker-")
    assert all(r["service.name"] == "comfyui-worker" for r in records)
    assert all(r["service.version"] == __version__ for r in records)
    serving = [r for r in records if "service.node.name" in r]
    assert {r["service.node.name"] for r in serving} == {handout.client_id}
    assert any("LittleHorse settings" in r["message"] for r in serving)
    job = [r for r in records if r.get("comfyui.prompt_id") == prompt_id_of("g-logs")]
    assert any("submitted" in r["message"] for r in job)
    assert any("retry 1/1" in r["message"] for r in job)  # httpx-level lines carry it too
    assert all(r["littlehorse.wf_run_id"] == "g-logs" for r in job)
    assert all(r["littlehorse.task_guid"] == "0-1" for r in job)
    assert all(r["littlehorse.tenant"] == "default" and r["littlehorse.attempt"] == 0 for r in job)
    assert all(r["littlehorse.task_def"] == TASK_NAME for r in job)
    assert any("LHC_OAUTH_CLIENT_SECRET=***" in r["message"] for r in records)


async def test_a_health_port_in_use_is_a_clear_error(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "comfyui_worker.cli", "serve",
            env=serve_env(fake, comfyui_mock, COMFYUI_WORKER_HEALTH_PORT=str(port)),
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        async with asyncio.timeout(30):
            out, _ = await proc.communicate()
    assert proc.returncode == 3
    message = out.decode()
    assert f"COMFYUI_WORKER_HEALTH_PORT={port}" in message and "cannot listen" in message
    assert TASK_NAME not in fake.task_defs  # refused before touching LittleHorse


async def test_port_zero_turns_the_health_server_off(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfyui_worker.cli", "serve",
        env=serve_env(fake, comfyui_mock, COMFYUI_WORKER_HEALTH_PORT="0"),
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            while fake.pollers(TASK_NAME) == 0:
                assert proc.returncode is None
                await asyncio.sleep(0.05)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        proc.terminate()
        out, _ = await proc.communicate()
    assert b"health server" not in out


def healthcheck_commands() -> dict[str, list[str]]:
    """The Dockerfile's HEALTHCHECK and compose's worker healthcheck, as argv lists."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    (line,) = re.findall(r"^\s+CMD (\[.*\])$", dockerfile.split("HEALTHCHECK", 1)[1], re.M)[:1]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test = compose["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return {"Dockerfile": json.loads(line), "compose": test[1:]}


async def run_probe(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    assert argv[0] == "python"  # the image's interpreter; here the test's
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv[1:], env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_the_container_healthchecks_pass_on_a_live_worker_and_fail_without_one(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    commands = healthcheck_commands()
    assert commands["Dockerfile"][-1] == "/healthz" and commands["compose"][-1] == "/readyz"
    async with served(fake, comfyui_mock, tmp_path) as serve:
        for where, argv in commands.items():
            code, out = await run_probe(argv, serve.env)
            assert code == 0, (where, out)
            assert f"{serve.env['COMFYUI_WORKER_HEALTH_PORT']}/" in out and ": 200 " in out
        restart = asyncio.create_task(asyncio.to_thread(comfyui_mock.restart, 3.0))
        await serve.wait_for("/readyz", 503)
        code, out = await run_probe(commands["compose"], serve.env)
        assert code == 1 and ": 503 " in out and "comfyui" in out
        await restart
        env = serve.env
    code, out = await run_probe(commands["Dockerfile"], env)  # nothing listens any more
    assert code == 1 and "Connection refused" in out
    off = {**env, "COMFYUI_WORKER_HEALTH_PORT": "0"}
    code, out = await run_probe(commands["Dockerfile"], off)
    assert code == 0 and "health server is off" in out
