"""One prompt per TaskRun, whatever else shares the ComfyUI: WfRuns of one WfSpec (whose first
task's `task_guid` is always "0-1"), tenants, child WfRuns, other LittleHorse clusters. Through
the real SDK worker, the fake LittleHorse (which mints guids as the real server does) and the
mock ComfyUI."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from littlehorse.config import LHConfig
from littlehorse.model import TaskRunId
from littlehorse.worker import LHTaskWorker

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import JOB_TASK_NAME, TASK_NAME
from comfyui_worker.execution import Executor
from comfyui_worker.lh.identity import JobScope
from comfyui_worker.lh.task import make_job_task_function, make_task_function
from comfyui_worker.lh.worker import register
from comfyui_worker.runner import Media
from comfyui_worker.settings import Settings
from lh.fake_server import FakeLittleHorse, TaskReport, decode_report, running_worker
from lh.identities import prompt_id_of
from mock_settings import settings_for
from s3_server import S3


def workflow(prefix: str, color: int) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


@contextlib.asynccontextmanager
async def serving(
    fake: FakeLittleHorse,
    settings: Settings,
    *,
    task_name: str = TASK_NAME,
    config: LHConfig | None = None,
) -> AsyncIterator[None]:
    """One worker process's worth for `task_name`, its scope taken from its LittleHorse
    config as `serve` takes it."""
    config = config or fake.config(num_worker_threads=4)
    executor = Executor(settings)
    media = Media(settings, executor.client)
    scope = JobScope.of(config, settings)
    task = (
        make_task_function(executor, media, scope=scope)
        if task_name == TASK_NAME
        else make_job_task_function(executor, media, scope=scope)
    )
    register(config, task, task_name)
    try:
        async with running_worker(fake, LHTaskWorker(task, task_name, config), task_name):
            yield
    finally:
        await media.aclose()
        await executor.aclose()


async def report_of(fake: FakeLittleHorse, run_id: TaskRunId, **kwargs: Any) -> TaskReport:
    return decode_report(await fake.await_report(run_id, timeout=15, **kwargs))


def saved(report: TaskReport) -> Path:
    assert report.status == "TASK_SUCCESS", report.error_message or report.exception_message
    (path,) = report.output["outputs"]
    return Path(path)


async def test_two_wf_runs_of_one_wfspec_each_get_their_own_outputs(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    async with serving(fake, settings_for(comfyui_mock)):
        first = fake.schedule_task(TASK_NAME, {"workflow": workflow("id/first", 10)})
        first_report = await report_of(fake, first)
        second = fake.schedule_task(TASK_NAME, {"workflow": workflow("id/second", 20)})
        second_report = await report_of(fake, second)
    assert first.task_guid == second.task_guid == "0-1"
    assert saved(first_report).name.startswith("first_")
    assert saved(second_report).name.startswith("second_")
    assert second_report.output["reused"] is False
    pids = {first_report.output["prompt_id"], second_report.output["prompt_id"]}
    assert pids == {prompt_id_of(first), prompt_id_of(second)} and len(pids) == 2
    assert all(comfyui_mock.executions(pid) == 1 for pid in pids)


async def test_twenty_wf_runs_at_once_each_get_their_own_file(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    async with serving(fake, settings_for(comfyui_mock)):
        run_ids = [
            fake.schedule_task(TASK_NAME, {"workflow": workflow(f"id/many{i:02d}", i)})
            for i in range(20)
        ]
        reports = [await report_of(fake, run_id) for run_id in run_ids]
    names = [saved(report).name for report in reports]
    assert [name.split("_")[0] for name in names] == [f"many{i:02d}" for i in range(20)]
    assert comfyui_mock.request_count("/prompt", "POST") == 20


async def test_two_wf_runs_of_a_job_get_their_own_inputs_and_store_keys(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, s3: S3
) -> None:
    def envelope(photo: bytes) -> dict[str, Any]:
        return {
            "workflow": {
                "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
                "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
                "3": {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["2", 0], "filename_prefix": "id/job"},
                },
            },
            "inputs": {"photo.png": {"base64": base64.b64encode(photo).decode()}},
            "output": {"mode": "store"},
        }

    photos = [b"\x89PNG\r\n\x1a\n" + tag * 300 for tag in (b"one", b"two")]
    settings = settings_for(comfyui_mock, output_store=f"s3://{s3.bucket}/out")
    async with serving(fake, settings, task_name=JOB_TASK_NAME):
        run_ids = [fake.schedule_task(JOB_TASK_NAME, {"job": envelope(photo)}) for photo in photos]
        reports = [await report_of(fake, run_id) for run_id in run_ids]
    keys = []
    for run_id, report, photo in zip(run_ids, reports, photos, strict=True):
        assert report.status == "TASK_SUCCESS", report.error_message or report.exception_message
        pid = report.output["prompt_id"]
        assert pid == prompt_id_of(run_id)
        uploaded = report.output["inputs"]["photo.png"]
        assert uploaded["uploaded"].startswith(pid)
        assert uploaded["sha256"] == hashlib.sha256(photo).hexdigest()
        (entry,) = report.output["files"]
        keys.append(entry["uri"].removeprefix(f"s3://{s3.bucket}/"))
        assert keys[-1].startswith(f"out/{pid}/")
        assert comfyui_mock.executions(pid) == 1
    assert sorted(s3.keys("out/")) == sorted(keys) and len(set(keys)) == 2


async def test_the_same_wf_run_id_in_two_tenants_runs_twice(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    settings = settings_for(comfyui_mock)
    reports = {}
    for tenant, color in (("acme", 30), ("globex", 40)):
        config = fake.config(extra={"LHC_TENANT_ID": tenant})
        async with serving(fake, settings, config=config):
            wf = workflow(f"id/{tenant}", color)
            run_id = fake.schedule_task(
                TASK_NAME, {"workflow": wf}, wf_run_id="order-1", tenant=tenant
            )
            reports[tenant] = await report_of(fake, run_id, tenant=tenant)
    assert saved(reports["acme"]).name.startswith("acme_")
    assert saved(reports["globex"]).name.startswith("globex_")
    assert reports["globex"].output["prompt_id"] == prompt_id_of("order-1", tenant="globex")
    assert reports["acme"].output["prompt_id"] != reports["globex"].output["prompt_id"]


async def test_children_of_the_same_id_under_two_parents_run_twice(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    async with serving(fake, settings_for(comfyui_mock)):
        run_ids = [
            fake.schedule_task(
                TASK_NAME,
                {"workflow": workflow(f"id/{parent}", i)},
                wf_run_id="child",
                parent_wf_run_id=parent,
            )
            for i, parent in enumerate(("parent-a", "parent-b"))
        ]
        reports = [await report_of(fake, run_id) for run_id in run_ids]
    assert [saved(r).name.split("_")[0] for r in reports] == ["parent-a", "parent-b"]
    pids = [r.output["prompt_id"] for r in reports]
    assert pids == [prompt_id_of(run_id) for run_id in run_ids] and pids[0] != pids[1]


async def test_another_cluster_s_prompt_is_never_delivered(
    comfyui_mock: MockHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """Two LittleHorse clusters whose workers share one ComfyUI and one (default) namespace:
    the same WfRun id in both maps to one prompt id. The second job must fail clearly, not
    return the first one's image; with their own namespaces both run."""
    settings = settings_for(comfyui_mock)
    with FakeLittleHorse() as east, FakeLittleHorse() as west:
        async with serving(east, settings):
            east_run = east.schedule_task(
                TASK_NAME, {"workflow": workflow("id/east", 50)}, wf_run_id="order-7"
            )
            assert saved(await report_of(east, east_run)).name.startswith("east_")
        async with serving(west, settings):
            west_run = west.schedule_task(
                TASK_NAME, {"workflow": workflow("id/west", 60)}, wf_run_id="order-7"
            )
            with caplog.at_level(logging.ERROR, logger="comfyui_worker"):
                conflict = await report_of(west, west_run)
        assert conflict.status == "TASK_EXCEPTION"
        assert conflict.exception_name == "comfyui-prompt-conflict"
        assert "COMFYUI_JOB_NAMESPACE" in (conflict.exception_message or "")
        pid = prompt_id_of("order-7")
        assert conflict.exception_content["prompt_id"] == pid
        assert conflict.exception_content["found_job"] == "default/order-7/0-1"
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(pid in line and "digests" in line for line in errors), errors
        # Nothing of the other job's was touched or delivered, and nothing ran again.
        assert comfyui_mock.executions(pid) == 1

        # Told apart by namespace, the same WfRun id runs in each cluster.
        west_settings = settings.model_copy(update={"job_namespace": "west"})
        async with serving(west, west_settings):
            retry = west.schedule_task(
                TASK_NAME, {"workflow": workflow("id/west", 60)}, wf_run_id="order-8"
            )
            assert saved(await report_of(west, retry)).name.startswith("west_")
        west_pid = prompt_id_of("order-8", namespace="west")
        assert comfyui_mock.executions(west_pid) == 1
        assert west_pid != prompt_id_of("order-8")


async def test_a_retry_with_the_same_inputs_still_reuses_its_prompt(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    async with serving(fake, settings_for(comfyui_mock)):
        run_id = fake.schedule_task(TASK_NAME, {"workflow": workflow("id/retry", 70)})
        first = await report_of(fake, run_id)
        fake.retry_task(run_id)
        again = await report_of(fake, run_id, attempt_number=1)
    assert again.output["reused"] is True and saved(again) == saved(first)
    assert comfyui_mock.executions(prompt_id_of(run_id)) == 1
