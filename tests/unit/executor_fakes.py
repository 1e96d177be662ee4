"""ComfyUI faked for Executor tests: pytest-httpx answers as ComfyUI would for one prompt
(PID), and `event` frames for the tiny websocket server in `conftest.ws_server`."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pytest_httpx import HTTPXMock
from websockets.asyncio.server import ServerConnection

from comfyui_worker.execution import Executor
from comfyui_worker.settings import Settings

PID = "11111111-2222-3333-4444-555555555555"
WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}},
}
EMPTY_QUEUE = {"queue_running": [], "queue_pending": []}
RUNNING = {"queue_running": [[1, PID, {}, {}, ["2"]]], "queue_pending": []}


def settings_for(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "comfyui_base_url": url,
        "output_dir": tmp_path / "out",
        "temp_dir": tmp_path / "tmp",
        "input_dir": tmp_path / "in",
        "completion_mode": "poll",
        "poll_interval": 0.01,
        "retries": 0,
        "backoff_base": 0.0,
        "reconcile_interval": 30,
        "job_deadline": 10,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def history_with(entry_from: dict[str, Any], pid: str = PID) -> dict[str, Any]:
    (entry,) = entry_from.values()
    return {pid: entry}


def as_submitted(httpx_mock: HTTPXMock, body: dict[str, Any]) -> Callable[[httpx.Request], Any]:
    """Answer GET /history with `body` as ComfyUI writes it for the prompt this job
    submitted: ComfyUI records the submission's client_id in the entry's prompt."""

    def answer(request: httpx.Request) -> httpx.Response:
        (*_, post) = httpx_mock.get_requests(method="POST", url=re.compile(r".*/prompt$"))
        entry = copy.deepcopy(body)
        entry[PID]["prompt"][3]["client_id"] = json.loads(post.content)["client_id"]
        return httpx.Response(200, json=entry)

    return answer


def expect_history(httpx_mock: HTTPXMock, url: str, body: dict[str, Any]) -> None:
    httpx_mock.add_callback(as_submitted(httpx_mock, body), url=f"{url}/history/{PID}")


def expect_output_classes(httpx_mock: HTTPXMock, capture: Any, url: str = "") -> None:
    """GET /object_info/{class} for WORKFLOW's classes, as a retry rebuilding node_errors
    reads them."""
    nodes = capture("00_object_info_used_nodes")["nodes"]
    for class_type in ("EmptyImage", "SaveImage"):
        httpx_mock.add_response(
            url=f"{url or URL}/object_info/{class_type}", json={class_type: nodes[class_type]}
        )


def expect_submit(httpx_mock: HTTPXMock, url: str) -> None:
    """Accept one POST /prompt; tests read history under PID, so jobs submit PID."""

    def accept(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)["prompt_id"]
        return httpx.Response(200, json={"prompt_id": sent, "number": 1, "node_errors": {}})

    httpx_mock.add_callback(accept, method="POST", url=f"{url}/prompt")


URL = "http://comfy.test:8188"


def nothing_earlier(httpx_mock: HTTPXMock, url: str) -> None:
    """The resume check of a job given a prompt_id finds no earlier attempt."""
    httpx_mock.add_response(url=f"{url}/queue", json=EMPTY_QUEUE)
    httpx_mock.add_response(url=f"{url}/history/{PID}", json={})


async def run(settings: Settings, **kwargs: Any) -> Any:
    executor = Executor(settings)
    try:
        return await executor.run(WORKFLOW, **kwargs)
    finally:
        await executor.aclose()


Script = Callable[[ServerConnection, int], Any]


def event(kind: str, **data: Any) -> str:
    return json.dumps({"type": kind, "data": data})
