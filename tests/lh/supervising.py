"""A `Supervisor` over the real task functions, polling the fake LittleHorse server, for tests
of what the process does as a whole (claims, restarts, gating)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from comfyui_mock.handle import MockHandle
from comfyui_worker.execution import Executor
from comfyui_worker.lh.supervisor import Supervisor
from comfyui_worker.lh.worker import register_all, task_functions
from comfyui_worker.runner import Media
from lh.fake_server import FakeLittleHorse
from mock_settings import settings_for


@contextlib.asynccontextmanager
async def supervised(
    fake: FakeLittleHorse,
    mock: MockHandle,
    *,
    threads: int = 2,
    settings: dict[str, Any] | None = None,
    **kwargs: Any,
) -> AsyncIterator[Supervisor]:
    """The TaskDefs `settings["tasks"]` names (default: all) registered and polled; stopped,
    with every claim reported, on the way out. `kwargs` go to the Supervisor."""
    executor = Executor(settings_for(mock, **(settings or {})))
    media = Media(executor.settings, executor.client)
    config = fake.config(num_worker_threads=threads)
    tasks = task_functions(executor, media)
    await asyncio.to_thread(register_all, config, tasks)
    supervisor = Supervisor(tasks, config, **kwargs)
    runner = asyncio.create_task(supervisor.run())
    try:
        async with asyncio.timeout(10):
            while not all(fake.pollers(name) for name in tasks):
                await asyncio.sleep(0.01)
        yield supervisor
    finally:
        supervisor.stop()
        await asyncio.wait_for(runner, 10)
        await supervisor.in_flight.wait_empty(5)
        await media.aclose()
        await executor.aclose()
