"""Executor: the path from workflow to result, with ComfyUI faked by pytest-httpx and a
tiny real websocket server on loopback."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from executor_fakes import (
    EMPTY_QUEUE,
    PID,
    RUNNING,
    URL,
    WORKFLOW,
    event,
    expect_history,
    expect_output_classes,
    expect_submit,
    history_with,
    nothing_earlier,
    run,
    settings_for,
)
from pytest_httpx import HTTPXMock
from websockets.asyncio.server import ServerConnection

from comfyui_worker.exceptions import (
    ExecutionError,
    ExecutionInterrupted,
    FolderMappingError,
    InvalidWorkflowError,
    JobTimeoutError,
    OutputMissingError,
    PromptLostError,
    UnsafeOutputPathError,
)
from comfyui_worker.execution import Executor

# -- polling ---------------------------------------------------------------------------


async def test_poll_returns_resolved_paths(
    tmp_path: Path, httpx_mock: HTTPXMock, ok_history: dict[str, Any]
) -> None:
    nothing_earlier(httpx_mock, URL)
    expect_submit(httpx_mock, URL)
    httpx_mock.add_response(url=f"{URL}/queue", json=RUNNING)
    httpx_mock.add_response(url=f"{URL}/queue", json=EMPTY_QUEUE)
    expect_history(httpx_mock, URL, ok_history)
    result = await run(settings_for(tmp_path, URL), prompt_id=PID)
    out = tmp_path / "out"
    assert result.outputs == [str(out / "peer" / "s01_00001_.png")]
    body = result.to_dict()
    assert json.loads(json.dumps(body)) == body
    assert body["status"] == "success" and body["reused"] is False
    assert body["files"][0] == {
        "node_id": "2",
        "key": "images",
        "filename": "s01_00001_.png",
        "subfolder": "peer",
        "type": "output",
        "path": str(out / "peer" / "s01_00001_.png"),
    }


async def test_raises_timeout_when_the_queue_never_clears(
    tmp_path: Path, httpx_mock: HTTPXMock
) -> None:
    nothing_earlier(httpx_mock, URL)
    expect_submit(httpx_mock, URL)
    httpx_mock.add_response(url=f"{URL}/queue", json=RUNNING, is_reusable=True)
    httpx_mock.add_response(method="POST", url=f"{URL}/interrupt")
    httpx_mock.add_response(method="POST", url=f"{URL}/queue")
    with pytest.raises(TimeoutError) as info:
        await run(settings_for(tmp_path, URL, job_deadline=0.3), prompt_id=PID)
    assert isinstance(info.value, JobTimeoutError) and "0.3 s deadline" in str(info.value)
    # The abandoned job is interrupted (running) and dropped (pending), by its own id.
    posts = {r.url.path: r.content for r in httpx_mock.get_requests() if r.method == "POST"}
    assert posts["/interrupt"] == json.dumps({"prompt_id": PID}, separators=(",", ":")).encode()
    assert posts["/queue"] == json.dumps({"delete": [PID]}, separators=(",", ":")).encode()


async def test_prompt_in_neither_queue_nor_history_is_lost(
    tmp_path: Path, httpx_mock: HTTPXMock
) -> None:
    # No prompt_id given: a fresh uuid4 is submitted, never resumed.
    expect_submit(httpx_mock, URL)
    httpx_mock.add_response(url=f"{URL}/queue", json=EMPTY_QUEUE)
    httpx_mock.add_response(url=re.compile(rf"{URL}/history/[0-9a-f-]{{36}}"), json={})
    with pytest.raises(PromptLostError, match="restarted") as info:
        await run(settings_for(tmp_path, URL))
    submitted = json.loads(httpx_mock.get_requests()[0].content)["prompt_id"]
    assert info.value.prompt_id == submitted != PID
    assert len(httpx_mock.get_requests()) == 3  # no resume check before a fresh submit


async def test_execution_error_carries_comfyuis_fields(
    tmp_path: Path, httpx_mock: HTTPXMock, capture: Any
) -> None:
    nothing_earlier(httpx_mock, URL)
    expect_submit(httpx_mock, URL)
    httpx_mock.add_response(url=f"{URL}/queue", json=EMPTY_QUEUE)
    expect_history(
        httpx_mock, URL, history_with(capture("05_runtime_error")["history_after"]["body"])
    )
    with pytest.raises(ExecutionError) as info:
        await run(settings_for(tmp_path, URL), prompt_id=PID)
    err = info.value
    assert (err.node_id, err.node_type) == ("1", "LoadImage")
    assert err.exception_type == "PIL.UnidentifiedImageError"
    assert "cannot identify image file" in err.exception_message
    assert err.traceback and "raise UnidentifiedImageError" in err.traceback[-1]
    assert "node 1 (LoadImage) failed" in str(err)


async def test_interrupted_prompt(tmp_path: Path, httpx_mock: HTTPXMock, capture: Any) -> None:
    nothing_earlier(httpx_mock, URL)
    expect_submit(httpx_mock, URL)
    httpx_mock.add_response(url=f"{URL}/queue", json=EMPTY_QUEUE)
    interrupted = capture("08_interrupt_and_queue_delete")["history_interrupted"]["body"]
    expect_history(httpx_mock, URL, history_with(interrupted))
    with pytest.raises(ExecutionInterrupted, match="interrupted at node 12 "):
        await run(settings_for(tmp_path, URL), prompt_id=PID)


async def test_unsafe_history_filename_is_rejected(tmp_path: Path, httpx_mock: HTTPXMock) -> None:
    nothing_earlier(httpx_mock, URL)
    expect_submit(httpx_mock, URL)
    httpx_mock.add_response(url=f"{URL}/queue", json=EMPTY_QUEUE)
    httpx_mock.add_response(
        url=f"{URL}/history/{PID}",
        json={
            PID: {
                "outputs": {
                    "9": {
                        "images": [
                            {"filename": "../../../etc/shadow", "subfolder": "", "type": "output"}
                        ]
                    }
                },
                "status": {"status_str": "success", "completed": True, "messages": []},
            }
        },
    )
    with pytest.raises(UnsafeOutputPathError, match="node 9"):
        await run(settings_for(tmp_path, URL), prompt_id=PID)


async def test_files_comfyui_no_longer_has_are_made_again_then_fail_naming_them(
    tmp_path: Path, httpx_mock: HTTPXMock, capture: Any
) -> None:
    # The entry points at a file that is not on disk, and ComfyUI's /view has it neither
    # (something removes its files): not a folder setting, so the prompt runs once more.
    entry = history_with(capture("01_empty_image_save")["history_after"]["body"])
    nothing_earlier(httpx_mock, URL)
    httpx_mock.add_response(url=re.compile(rf"{URL}/view\?.*"), status_code=404, is_reusable=True)
    httpx_mock.add_response(method="POST", url=f"{URL}/free")
    for _ in range(2):
        expect_submit(httpx_mock, URL)
        httpx_mock.add_response(url=f"{URL}/queue", json=EMPTY_QUEUE)
        expect_history(httpx_mock, URL, entry)
    with pytest.raises(OutputMissingError) as info:
        await run(settings_for(tmp_path, URL), prompt_id=PID)
    assert not isinstance(info.value, FolderMappingError)
    assert "even after it ran the prompt again" in str(info.value)
    assert "ComfyUI does not have them either" in str(info.value)
    assert len(httpx_mock.get_requests(method="POST", url=f"{URL}/free")) == 1
    views = httpx_mock.get_requests(url=re.compile(rf"{URL}/view\?.*"))
    assert len(views) == 2 and views[0].url.params["filename"] == "s01_00001_.png"
    assert (views[0].url.params["subfolder"], views[0].url.params["type"]) == ("peer", "output")


async def test_invalid_workflow_never_reaches_comfyui(tmp_path: Path) -> None:
    executor = Executor(settings_for(tmp_path, URL))
    with pytest.raises(InvalidWorkflowError, match="has no class_type"):
        await executor.run({"1": {"inputs": {}}})
    await executor.aclose()  # httpx_mock would fail the test on any unexpected request


# -- attaching to an earlier attempt ---------------------------------------------------


async def test_earlier_success_is_reused_without_submitting(
    tmp_path: Path, httpx_mock: HTTPXMock, ok_history: dict[str, Any], capture: Any
) -> None:
    httpx_mock.add_response(url=f"{URL}/queue", json=EMPTY_QUEUE)
    httpx_mock.add_response(url=f"{URL}/history/{PID}", json=ok_history)
    expect_output_classes(httpx_mock, capture)
    result = await run(settings_for(tmp_path, URL), prompt_id=PID)
    assert result.reused and result.prompt_id == PID and len(result.outputs) == 1
    assert all(r.method == "GET" for r in httpx_mock.get_requests())


async def test_running_prompt_is_attached_to(
    tmp_path: Path, httpx_mock: HTTPXMock, ok_history: dict[str, Any], capture: Any
) -> None:
    expect_output_classes(httpx_mock, capture)
    httpx_mock.add_response(url=f"{URL}/queue", json=RUNNING)  # attach decision
    httpx_mock.add_response(url=f"{URL}/queue", json=RUNNING)
    httpx_mock.add_response(url=f"{URL}/queue", json=EMPTY_QUEUE)
    httpx_mock.add_response(url=f"{URL}/history/{PID}", json=ok_history)
    result = await run(settings_for(tmp_path, URL, completion_mode="websocket"), prompt_id=PID)
    assert result.reused
    assert not [r for r in httpx_mock.get_requests() if r.method == "POST"]


async def test_earlier_failure_is_resubmitted(
    tmp_path: Path, httpx_mock: HTTPXMock, capture: Any, ok_history: dict[str, Any]
) -> None:
    failed = history_with(capture("08_interrupt_and_queue_delete")["history_interrupted"]["body"])
    httpx_mock.add_response(url=f"{URL}/queue", json=EMPTY_QUEUE)
    httpx_mock.add_response(url=f"{URL}/history/{PID}", json=failed)
    expect_submit(httpx_mock, URL)
    httpx_mock.add_response(url=f"{URL}/queue", json=EMPTY_QUEUE)
    expect_history(httpx_mock, URL, ok_history)
    result = await run(settings_for(tmp_path, URL), prompt_id=PID)
    assert not result.reused and result.outputs


# -- websocket ---------------------------------------------------------------------------


async def test_websocket_done_signal_filters_other_prompts(
    tmp_path: Path, httpx_mock: HTTPXMock, ok_history: dict[str, Any], ws_server: Any
) -> None:
    async def script(conn: ServerConnection, n: int) -> None:
        await asyncio.sleep(0.05)  # after the submit
        await conn.send(event("execution_start", prompt_id="other"))
        await conn.send(event("executing", node=None, prompt_id="other"))
        await conn.send(b"\x00\x00\x00\x01\x00\x00\x00\x02binary preview")
        await conn.send("not json at all")
        await conn.send(event("executing", node="2", display_node="2", prompt_id=PID))
        await conn.send(event("executing", node=None, prompt_id=PID))
        await conn.wait_closed()

    url, seen = await ws_server(script)
    nothing_earlier(httpx_mock, url)
    expect_submit(httpx_mock, url)
    expect_history(httpx_mock, url, ok_history)
    result = await run(settings_for(tmp_path, url, completion_mode="websocket"), prompt_id=PID)
    assert result.outputs
    (post,) = httpx_mock.get_requests(method="POST")
    assert seen == [
        json.loads(post.content)["client_id"]
    ]  # connected with that id before submitting
    # Only the resume check reads the queue: the done signal needs no polling.
    assert len([r for r in httpx_mock.get_requests() if r.url.path == "/queue"]) == 1


async def test_websocket_drop_reconnects_with_the_same_id_and_reconciles(
    tmp_path: Path, httpx_mock: HTTPXMock, ok_history: dict[str, Any], ws_server: Any
) -> None:
    async def script(conn: ServerConnection, n: int) -> None:
        if n == 1:
            await asyncio.sleep(0.05)
            await conn.send(event("execution_start", prompt_id=PID))
            await conn.close()
            return
        await asyncio.sleep(0.05)
        await conn.send(event("executing", node="2"))  # reconnect mid-run: no prompt_id
        await conn.send(event("executing", node=None, prompt_id=PID))
        await conn.wait_closed()

    url, seen = await ws_server(script)
    nothing_earlier(httpx_mock, url)
    expect_submit(httpx_mock, url)
    httpx_mock.add_response(url=f"{url}/queue", json=RUNNING)
    expect_history(httpx_mock, url, ok_history)
    result = await run(settings_for(tmp_path, url, completion_mode="websocket"), prompt_id=PID)
    assert result.outputs
    assert len(seen) == 2 and seen[0] == seen[1]


async def test_deaf_websocket_is_caught_by_reconciliation(
    tmp_path: Path, httpx_mock: HTTPXMock, ok_history: dict[str, Any], ws_server: Any
) -> None:
    async def script(conn: ServerConnection, n: int) -> None:
        await conn.wait_closed()  # hears nothing, like a superseded clientId (captures/19)

    url, _ = await ws_server(script)
    nothing_earlier(httpx_mock, url)
    expect_submit(httpx_mock, url)
    httpx_mock.add_response(url=f"{url}/queue", json=EMPTY_QUEUE)
    expect_history(httpx_mock, url, ok_history)
    settings = settings_for(tmp_path, url, completion_mode="websocket", reconcile_interval=0.1)
    assert (await run(settings, prompt_id=PID)).outputs


async def test_unusable_websocket_falls_back_to_polling(
    tmp_path: Path, httpx_mock: HTTPXMock, ok_history: dict[str, Any]
) -> None:
    # Nothing listens on this port's websocket: HTTP is mocked, the socket cannot open.
    url = "http://127.0.0.1:9"
    nothing_earlier(httpx_mock, url)
    expect_submit(httpx_mock, url)
    httpx_mock.add_response(url=f"{url}/queue", json=RUNNING)
    httpx_mock.add_response(url=f"{url}/queue", json=EMPTY_QUEUE)
    expect_history(httpx_mock, url, ok_history)
    settings = settings_for(tmp_path, url, completion_mode="websocket", request_timeout=2)
    assert (await run(settings, prompt_id=PID)).outputs


async def test_in_flight_limit_is_process_wide(
    tmp_path: Path, httpx_mock: HTTPXMock, ok_history: dict[str, Any]
) -> None:
    executor = Executor(settings_for(tmp_path, URL, max_in_flight=1))
    entered = 0

    async def slow_queue() -> Any:
        nonlocal entered
        entered += 1
        await asyncio.sleep(0.2)
        raise asyncio.CancelledError

    executor.client.queue = slow_queue  # type: ignore[method-assign]
    jobs = [asyncio.create_task(executor.run(WORKFLOW, prompt_id=PID)) for _ in range(3)]
    await asyncio.sleep(0.1)
    assert entered == 1  # the other two wait for the slot
    for job in jobs:
        job.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    await executor.aclose()


async def test_a_done_signal_whose_entry_is_an_earlier_attempts_is_not_taken(
    tmp_path: Path,
    httpx_mock: HTTPXMock,
    ok_history: dict[str, Any],
    capture: Any,
    ws_server: Any,
) -> None:
    # The history read after the done signal still shows the earlier attempt's entry
    # (another client_id): this submission's is checked for until it is there.
    async def script(conn: ServerConnection, n: int) -> None:
        await asyncio.sleep(0.05)
        await conn.send(event("executing", node=None, prompt_id=PID))
        await conn.wait_closed()

    url, _ = await ws_server(script)
    nothing_earlier(httpx_mock, url)
    expect_submit(httpx_mock, url)
    stale = history_with(capture("08_interrupt_and_queue_delete")["history_interrupted"]["body"])
    httpx_mock.add_response(url=f"{url}/history/{PID}", json=stale)
    httpx_mock.add_response(url=f"{url}/queue", json=RUNNING)
    httpx_mock.add_response(url=f"{url}/queue", json=EMPTY_QUEUE)
    expect_history(httpx_mock, url, ok_history)
    result = await run(settings_for(tmp_path, url, completion_mode="websocket"), prompt_id=PID)
    assert result.outputs and not result.reused
