"""One poll connection on its own: the real SDK connection code against the fake LittleHorse."""

from __future__ import annotations

import asyncio

from littlehorse.model import TaskDefId
from littlehorse.worker import LHTask

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import TASK_NAME
from comfyui_worker.execution import Executor
from comfyui_worker.lh.claims import InFlight
from comfyui_worker.lh.connection import SupervisedConnection
from comfyui_worker.lh.task import make_task_function
from comfyui_worker.lh.worker import register
from lh.fake_server import FakeLittleHorse
from lh.serve_process import WORKFLOW
from mock_settings import settings_for


async def test_a_connection_stopped_before_its_stream_opens_claims_nothing(
    fake: FakeLittleHorse, comfyui_mock: MockHandle
) -> None:
    """The gate closing (drain, ComfyUI down) in the same turn that opened a connection: the
    SDK's start() would set `running` again and poll, on a connection nobody stops any more."""
    executor = Executor(settings_for(comfyui_mock))
    config = fake.config(num_worker_threads=2)
    task = make_task_function(executor)
    await asyncio.to_thread(register, config, task)
    task_def = await asyncio.to_thread(
        config.stub().GetTaskDef, TaskDefId(name=TASK_NAME), timeout=10
    )
    ended: list[SupervisedConnection] = []
    connection = SupervisedConnection(
        fake.address,
        config,
        LHTask(task, task_def),
        in_flight=InFlight(),
        slots=asyncio.Semaphore(2),
        newest_stub=lambda: connection.stub,
        on_end=ended.append,
    )
    fake.schedule_task(TASK_NAME, {"workflow": WORKFLOW})
    starting = asyncio.create_task(connection.start())
    connection.stop()  # before `starting` took its first step
    try:
        await asyncio.sleep(1.0)  # time enough for a poll that should not be sent
        assert fake.handouts == []
        await asyncio.wait_for(starting, 10)
        assert fake.pollers(TASK_NAME) == 0
        assert connection.ended and not connection.running and ended == []
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await executor.aclose()
