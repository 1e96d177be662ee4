"""The job's websocket is opened while the resume check reads the queue and history, and
closed after the job without holding it up: whatever way the job goes, no socket is left."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from executor_fakes import (
    EMPTY_QUEUE,
    PID,
    WORKFLOW,
    event,
    expect_history,
    expect_output_classes,
    expect_submit,
    run,
    settings_for,
)
from pytest_httpx import HTTPXMock
from websockets.asyncio.server import ServerConnection

from comfyui_worker.exceptions import InvalidInputError
from comfyui_worker.execution import Executor


class Sockets:
    """The websocket server's side: connections by their number, and which have closed."""

    def __init__(self) -> None:
        self.closed: list[int] = []
        self.url = ""
        self.seen: list[str] = []

    async def connected(self) -> None:
        async with asyncio.timeout(5):
            while not self.seen:
                await asyncio.sleep(0.005)

    async def all_closed(self) -> bool:
        """True once every connection the server saw has closed (waits up to 2 s)."""
        try:
            async with asyncio.timeout(2):
                while len(self.closed) < len(self.seen):
                    await asyncio.sleep(0.01)
        except TimeoutError:
            return False
        return True


async def sockets_for(ws_server: Any, *, done_signal: bool) -> Sockets:
    sockets = Sockets()

    async def script(conn: ServerConnection, n: int) -> None:
        if done_signal:
            await asyncio.sleep(0.05)  # after the submit
            await conn.send(event("executing", node=None, prompt_id=PID))
        await conn.wait_closed()
        sockets.closed.append(n)

    sockets.url, sockets.seen = await ws_server(script)
    return sockets


def history_once_connected(sockets: Sockets, body: dict[str, Any]) -> Any:
    """GET /history answered only once the job's websocket is connected: a job that opened
    it only after the resume check would never get an answer (the test times out)."""

    async def answer(request: httpx.Request) -> httpx.Response:
        await sockets.connected()
        return httpx.Response(200, json=body)

    return answer


async def resume_check(
    ws_server: Any, httpx_mock: HTTPXMock, history: Any, *, done_signal: bool = False
) -> Sockets:
    """The websocket server, and the resume check's reads: an empty queue, then `history`
    (a callback) for the prompt."""
    sockets = await sockets_for(ws_server, done_signal=done_signal)
    httpx_mock.add_response(url=f"{sockets.url}/queue", json=EMPTY_QUEUE)
    httpx_mock.add_callback(
        history if callable(history) else history_once_connected(sockets, history),
        url=f"{sockets.url}/history/{PID}",
    )
    return sockets


async def test_the_websocket_opens_while_the_resume_check_reads_history(
    tmp_path: Path, httpx_mock: HTTPXMock, ok_history: dict[str, Any], ws_server: Any
) -> None:
    sockets = await resume_check(ws_server, httpx_mock, {}, done_signal=True)
    expect_submit(httpx_mock, sockets.url)
    expect_history(httpx_mock, sockets.url, ok_history)
    settings = settings_for(tmp_path, sockets.url, completion_mode="websocket")
    result = await run(settings, prompt_id=PID)
    assert result.outputs and not result.reused
    assert len(sockets.seen) == 1  # the socket opened ahead is the one the job used
    assert await sockets.all_closed()


async def test_a_reused_prompt_closes_the_websocket_it_did_not_need(
    tmp_path: Path,
    httpx_mock: HTTPXMock,
    ok_history: dict[str, Any],
    capture: Any,
    ws_server: Any,
) -> None:
    sockets = await resume_check(ws_server, httpx_mock, ok_history)
    expect_output_classes(httpx_mock, capture, sockets.url)
    settings = settings_for(tmp_path, sockets.url, completion_mode="websocket")
    result = await run(settings, prompt_id=PID)
    assert result.reused
    assert not httpx_mock.get_requests(method="POST")
    assert len(sockets.seen) == 1 and await sockets.all_closed()


async def test_a_job_cancelled_during_the_resume_check_leaves_no_socket(
    tmp_path: Path, httpx_mock: HTTPXMock, ws_server: Any
) -> None:
    looked_up = asyncio.Event()

    async def never_answered(request: httpx.Request) -> httpx.Response:
        await sockets.connected()
        looked_up.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    sockets = await resume_check(ws_server, httpx_mock, never_answered)
    executor = Executor(settings_for(tmp_path, sockets.url, completion_mode="websocket"))
    job = asyncio.create_task(executor.run(WORKFLOW, prompt_id=PID))
    async with asyncio.timeout(5):
        await looked_up.wait()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await executor.aclose()
    assert len(sockets.seen) == 1 and await sockets.all_closed()


async def test_a_prompt_that_cannot_be_prepared_leaves_no_socket(
    tmp_path: Path, httpx_mock: HTTPXMock, ws_server: Any
) -> None:
    sockets = await resume_check(ws_server, httpx_mock, {})

    async def prepare(workflow: dict[str, Any]) -> dict[str, Any]:
        raise InvalidInputError("the URL answered 404", input_name="photo", rule="status")

    settings = settings_for(tmp_path, sockets.url, completion_mode="websocket")
    with pytest.raises(InvalidInputError, match="photo"):
        await run(settings, prompt_id=PID, prepare=prepare)
    assert not httpx_mock.get_requests(method="POST")
    assert len(sockets.seen) == 1 and await sockets.all_closed()


async def test_a_long_running_worker_gives_the_next_job_the_socket_it_kept(
    tmp_path: Path, httpx_mock: HTTPXMock, ok_history: dict[str, Any], ws_server: Any
) -> None:
    """With `keep_spare_socket` (serve), the socket opened after a job's submit is the next
    job's: that job's handshake is not on its path."""
    posted: list[str] = []

    async def done_once_submitted(conn: ServerConnection, n: int) -> None:
        # The done signal once a prompt was submitted with this socket's client id.
        while seen[n - 1] not in posted:
            if conn.close_code is not None:
                return
            await asyncio.sleep(0.005)
        await conn.send(event("executing", node=None, prompt_id=PID))
        await conn.wait_closed()

    url, seen = await ws_server(done_once_submitted)

    def accept(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content)["client_id"])
        return httpx.Response(200, json={"prompt_id": PID, "number": 1, "node_errors": {}})

    for _ in range(2):
        httpx_mock.add_response(url=f"{url}/queue", json=EMPTY_QUEUE)
        httpx_mock.add_response(url=f"{url}/history/{PID}", json={})
        httpx_mock.add_callback(accept, method="POST", url=f"{url}/prompt")
        expect_history(httpx_mock, url, ok_history)
    settings = settings_for(tmp_path, url, completion_mode="websocket")
    executor = Executor(settings, keep_spare_socket=True)
    try:
        await executor.run(WORKFLOW, prompt_id=PID)
        async with asyncio.timeout(5):  # the spare, opened once the first job submitted
            while not executor._waiter.sockets.spare_ready:
                await asyncio.sleep(0.005)
        await executor.run(WORKFLOW, prompt_id=PID)
    finally:
        await executor.aclose()
    assert posted == seen[:2]  # the second job submitted with the spare's client id
    assert len(seen) == 3  # and left a spare for the job after it
