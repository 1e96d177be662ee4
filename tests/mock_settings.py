"""Settings for a worker talking to the mock ComfyUI: short intervals so tests stay fast."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from comfyui_mock.handle import MockHandle
from comfyui_worker.comfyui.client import ComfyUIClient
from comfyui_worker.execution import Executor
from comfyui_worker.settings import Settings


def settings_for(mock: MockHandle, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "comfyui_base_url": mock.url,
        "output_dir": mock.output_dir,
        "temp_dir": mock.temp_dir,
        "input_dir": mock.input_dir,
        "poll_interval": 0.02,
        "retries": 1,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "request_timeout": 5,
        # Long enough that no test finishes by a safety check unless it is about them.
        "reconcile_interval": 5,
        "job_deadline": 20,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextlib.asynccontextmanager
async def executor_for(
    mock: MockHandle, *, client: ComfyUIClient | None = None, **overrides: Any
) -> AsyncIterator[Executor]:
    """An Executor on `settings_for(mock, **overrides)`, closed afterwards."""
    executor = Executor(settings_for(mock, **overrides), client=client)
    try:
        yield executor
    finally:
        await executor.aclose()
