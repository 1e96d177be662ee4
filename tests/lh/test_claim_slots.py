"""How many tasks one process claims when it serves several TaskDefs: LHW_NUM_WORKER_THREADS
bounds them all together (the SDK alone gives each TaskDef its own slots), and COMFYUI_TASKS
narrows what is served at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import JOB_TASK_NAME, TASK_NAME, TEMPLATE_TASK_NAME
from lh.fake_server import FakeLittleHorse, decode_report
from lh.serve_process import WORKFLOW
from lh.supervising import supervised

THREADS = 2


async def test_threads_bound_the_claims_of_every_taskdef_together(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    """Tasks of two TaskDefs at once: no more of them run than LHW_NUM_WORKER_THREADS. The
    Executor's own bound is lifted so that the claim slots are what ComfyUI's queue shows."""
    comfyui_mock.set_job_delay(0.3)
    async with supervised(
        fake,
        comfyui_mock,
        threads=THREADS,
        settings={"max_in_flight": 10, "templates_dir": tmp_path},
    ) as supervisor:
        assert {w._task_def_name for w in supervisor.workers} == {
            TASK_NAME,
            JOB_TASK_NAME,
            TEMPLATE_TASK_NAME,
        }
        runs = [fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW}) for _ in range(6)]
        runs += [
            fake.schedule_task(JOB_TASK_NAME, {"job": {"workflow": WORKFLOW}}) for _ in range(6)
        ]
        depths: list[int] = []
        watcher = asyncio.create_task(watch_queue(comfyui_mock, depths))
        reports = [decode_report(await fake.await_report(r, timeout=60)) for r in runs]
        watcher.cancel()
    assert all(r.status == "TASK_SUCCESS" for r in reports), [r.error_message for r in reports]
    # Each TaskDef with its own slots would run 2 x THREADS prompts at once.
    assert max(depths) == THREADS, depths


async def watch_queue(mock: MockHandle, depths: list[int]) -> None:
    """Sample how many prompts ComfyUI holds (running + pending) until cancelled."""
    async with httpx.AsyncClient(base_url=mock.url) as http:
        while True:
            queue = (await http.get("/queue")).json()
            depths.append(len(queue["queue_running"]) + len(queue["queue_pending"]))
            await asyncio.sleep(0.02)


async def test_comfyui_tasks_chooses_the_taskdefs_served(
    fake: FakeLittleHorse, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    async with supervised(
        fake, comfyui_mock, settings={"tasks": (JOB_TASK_NAME,), "templates_dir": tmp_path}
    ) as supervisor:
        assert [w._task_def_name for w in supervisor.workers] == [JOB_TASK_NAME]
        assert fake.pollers(JOB_TASK_NAME) > 0 and fake.pollers(TASK_NAME) == 0
        assert set(fake.task_defs) == {JOB_TASK_NAME}
        run = fake.schedule_task(JOB_TASK_NAME, {"job": {"workflow": WORKFLOW}})
        assert decode_report(await fake.await_report(run, timeout=30)).status == "TASK_SUCCESS"
