"""The mock's control API, written once for the server and for its thread runner.

Every method is synchronous and safe to call from any thread: settings go to `Controls` under
its lock, and what must touch the event loop is handed to it with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from comfyui_mock.server import MockComfyUI


class ControlAPI(ABC):
    """Mixed into MockComfyUI (`_mock` is itself) and MockComfyUIThread (its server)."""

    @property
    @abstractmethod
    def _mock(self) -> MockComfyUI: ...

    @property
    def output_dir(self) -> Path:
        return self._mock.dirs.output

    @property
    def temp_dir(self) -> Path:
        return self._mock.dirs.temp

    @property
    def input_dir(self) -> Path:
        return self._mock.dirs.input

    def set_job_delay(self, seconds: float) -> None:
        """Every prompt takes this long, spread over the nodes it actually executes."""
        self._mock.controls.set_job_delay(seconds)

    def set_node_delay(self, node: str, seconds: float) -> None:
        """Extra time for one node, by node id or class_type."""
        self._mock.controls.set_node_delay(node, seconds)

    def set_progress_steps(self, steps: int, node: str | None = None) -> None:
        """`progress` events per executed node (all nodes, or one node id / class_type)."""
        self._mock.controls.set_progress_steps(steps, node)

    def set_cache_enabled(self, enabled: bool) -> None:
        """False behaves like `--cache-none`: nothing is ever served from cache."""
        self._mock.controls.set_cache_enabled(enabled)

    def fail_next_validation(self, count: int = 1) -> None:
        self._mock.controls.fail_next_validation(count)

    def fail_node(
        self,
        node: str,
        message: str = "Injected failure",
        exception_type: str = "RuntimeError",
        times: int | None = 1,
    ) -> None:
        """Raise at a node (id or class_type) `times` times, or always with None."""
        self._mock.controls.fail_node(node, message, exception_type, times)

    def fail_http(self, count: int = 1, path: str | None = None, status: int = 500) -> None:
        self._mock.controls.fail_http(count, path, status)

    def drop_websockets(
        self, after_event: str | None = None, after_events: int | None = None
    ) -> None:
        """Close every socket after the next `after_event`, after N delivered events, or now."""
        if after_event is None and after_events is None:
            self._mock._in_loop(lambda: asyncio.ensure_future(self._mock.hub.close_all()))
        else:
            self._mock.controls.drop_websockets(after_event, after_events)

    def set_response_delay(self, seconds: float, path: str | None = None) -> None:
        self._mock.controls.set_response_delay(seconds, path)

    def reset_controls(self) -> None:
        self._mock.controls.reset()

    def clear_cache(self) -> None:
        self._mock._in_loop(self._mock.executor.cache.clear)

    def cleanup_files(self) -> None:
        """Delete every file the mock wrote (outputs, previews, uploads)."""
        self._mock._remove_written(lambda p: True)

    def executions(self, prompt_id: str) -> int:
        return self._mock.controls.executions(prompt_id)

    def request_count(self, path: str, method: str | None = None) -> int:
        return self._mock.controls.request_count(path, method)

    def request_counts(self) -> dict[str, int]:
        return self._mock.controls.request_counts()
