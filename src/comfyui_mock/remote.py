"""RemoteMockComfyUI: drive a comfyui-mock running elsewhere through /mock/control.

It offers the same handle as MockComfyUIThread, so a test does not care whether the pytest
fixture started a mock itself or was pointed at one with COMFYUI_MOCK_URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx


class RemoteMockComfyUI:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        state = self.state()
        self.output_dir = Path(state["output_dir"])
        self.temp_dir = Path(state["temp_dir"])
        self.input_dir = Path(state["input_dir"])

    def close(self) -> None:
        self._http.close()

    def state(self) -> dict[str, Any]:
        response = self._http.get("/mock/state")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def _call(self, op: str, **args: Any) -> Any:
        response = self._http.post("/mock/control", json={"op": op, "args": args})
        if response.status_code != 200:
            raise RuntimeError(f"comfyui-mock refused {op}: {response.text}")
        return response.json()["result"]

    def restart(self, downtime: float = 0.0) -> None:
        self._call("restart", downtime=downtime)

    def set_job_delay(self, seconds: float) -> None:
        self._call("set_job_delay", seconds=seconds)

    def set_node_delay(self, node: str, seconds: float) -> None:
        self._call("set_node_delay", node=node, seconds=seconds)

    def set_progress_steps(self, steps: int, node: str | None = None) -> None:
        self._call("set_progress_steps", steps=steps, node=node)

    def set_cache_enabled(self, enabled: bool) -> None:
        self._call("set_cache_enabled", enabled=enabled)

    def fail_next_validation(self, count: int = 1) -> None:
        self._call("fail_next_validation", count=count)

    def fail_node(
        self,
        node: str,
        message: str = "Injected failure",
        exception_type: str = "RuntimeError",
        times: int | None = 1,
    ) -> None:
        self._call(
            "fail_node", node=node, message=message, exception_type=exception_type, times=times
        )

    def fail_http(self, count: int = 1, path: str | None = None, status: int = 500) -> None:
        self._call("fail_http", count=count, path=path, status=status)

    def drop_websockets(
        self, after_event: str | None = None, after_events: int | None = None
    ) -> None:
        self._call("drop_websockets", after_event=after_event, after_events=after_events)

    def set_response_delay(self, seconds: float, path: str | None = None) -> None:
        self._call("set_response_delay", seconds=seconds, path=path)

    def reset_controls(self) -> None:
        self._call("reset_controls")

    def clear_cache(self) -> None:
        self._call("clear_cache")

    def cleanup_files(self) -> None:
        self._call("cleanup_files")

    def executions(self, prompt_id: str) -> int:
        return int(self._call("executions", prompt_id=prompt_id))

    def request_count(self, path: str, method: str | None = None) -> int:
        return int(self._call("request_count", path=path, method=method))

    def request_counts(self) -> dict[str, int]:
        counts: dict[str, int] = self._call("request_counts")
        return counts
