"""Queue and history semantics: ordering, delete/clear, paging, prompt ids, restart."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from mock_server_helpers import Comfy, chain_prompt, new_client_id, open_ws, read_for, save_prompt

from comfyui_mock.handle import MockHandle


async def _start_blocker(comfy: Comfy, comfyui_mock: MockHandle, delay: float = 0.4) -> str:
    """A prompt that stays running for `delay` seconds so others queue up behind it."""
    comfyui_mock.set_node_delay("ImageBlur", delay)
    blocker = await comfy.submit_ok(chain_prompt("queue/blocker", blurs=1, color=99))
    async with asyncio.timeout(5):
        while not (await comfy.queue())["queue_running"]:
            await asyncio.sleep(0.005)
    return blocker


async def test_queue_items_and_priority_order(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    cid = new_client_id()
    blocker = await _start_blocker(comfy, comfyui_mock)
    normal1 = await comfy.submit_ok(save_prompt("queue/n1", 1), cid)
    normal2 = await comfy.submit_ok(save_prompt("queue/n2", 2), cid)
    front = await comfy.submit_ok(save_prompt("queue/front", 3), cid, front=True)
    low = await comfy.submit_ok(save_prompt("queue/low", 4), cid, number=-100)
    late = await comfy.submit_ok(save_prompt("queue/late", 5), cid, number=1e9)

    queue = await comfy.queue()
    running = queue["queue_running"]
    assert [item[1] for item in running] == [blocker]
    assert running[0][0] == 0 and running[0][4] == ["99"] and running[0][3] == {}
    pending = {item[1]: item for item in queue["queue_pending"]}
    assert set(pending) == {normal1, normal2, front, low, late}
    assert pending[normal1][3] == {"client_id": cid}
    assert pending[front][0] == -3 and pending[low][0] == -100.0

    await comfy.wait_idle()
    order = list((await comfy.http.get("/history")).json())
    assert order == [blocker, low, front, normal1, normal2, late]


async def test_queue_delete_only_affects_pending(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    ws, _ = await open_ws(comfyui_mock.url, new_client_id())
    blocker = await _start_blocker(comfy, comfyui_mock)
    doomed = await comfy.submit_ok(save_prompt("queue/doomed", 6))
    response = await comfy.http.post("/queue", json={"delete": [doomed, blocker, "unknown"]})
    assert response.status_code == 200 and response.text == ""
    queue = await comfy.queue()
    assert [i[1] for i in queue["queue_running"]] == [blocker]
    assert queue["queue_pending"] == []
    assert (await comfy.wait_history(blocker))["status"]["status_str"] == "success"
    assert await comfy.history(doomed) == {}
    assert comfyui_mock.executions(doomed) == 0
    # The only trace on the socket is the queue status, never an execution event for it.
    seen = await read_for(ws, 0.1)
    await ws.close()
    assert all(m["data"].get("prompt_id") != doomed for m in seen)


async def test_queue_clear_drops_pending(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    blocker = await _start_blocker(comfy, comfyui_mock)
    pending = [await comfy.submit_ok(save_prompt("queue/clear", c)) for c in (7, 8)]
    assert (await comfy.http.post("/api/queue", json={"clear": True})).status_code == 200
    assert (await comfy.queue())["queue_pending"] == []
    await comfy.wait_history(blocker)
    for prompt_id in pending:
        assert await comfy.history(prompt_id) == {}


async def test_history_paging_delete_and_clear(comfy: Comfy) -> None:
    ids = [await comfy.submit_ok(save_prompt("queue/page", c)) for c in (10, 11, 12)]
    await comfy.wait_idle()
    await comfy.wait_history(ids[-1])
    get = comfy.http.get
    assert list((await get("/history", params={"max_items": 2})).json()) == ids[1:]
    assert list((await get("/history", params={"max_items": 2, "offset": 0})).json()) == ids[:2]
    assert list((await get("/history", params={"offset": 1})).json()) == ids[1:]
    bad = await get("/history", params={"max_items": "abc"})
    assert bad.status_code == 500 and bad.headers["content-type"].startswith("text/plain")

    assert (await comfy.http.post("/history", json={"delete": [ids[0]]})).status_code == 200
    assert await comfy.history(ids[0]) == {}
    assert list((await get("/history")).json()) == ids[1:]
    await comfy.http.post("/history", json={"clear": True})
    assert (await get("/history")).json() == {}


async def test_history_is_empty_until_the_entry_is_written(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    blocker = await _start_blocker(comfy, comfyui_mock, delay=0.3)
    assert await comfy.history(blocker) == {}
    assert (await comfy.http.get("/prompt")).json() == {"exec_info": {"queue_remaining": 1}}
    entry = await comfy.wait_history(blocker)
    assert entry["status"] == {
        "status_str": "success",
        "completed": True,
        "messages": entry["status"]["messages"],
    }


async def test_reused_prompt_id_runs_twice_history_keeps_last(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    await _start_blocker(comfy, comfyui_mock)
    first = await comfy.submit(save_prompt("queue/first", 20), prompt_id="my-job-0001")
    second = await comfy.submit(save_prompt("queue/second", 21), prompt_id="my-job-0001")
    assert first.json()["prompt_id"] == second.json()["prompt_id"] == "my-job-0001"
    await comfy.wait_idle()
    entry = await comfy.wait_history("my-job-0001")
    assert entry["outputs"]["2"]["images"][0]["filename"].startswith("second_")
    assert comfyui_mock.executions("my-job-0001") == 2


async def test_same_number_and_id_answers_500_but_still_runs(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    await _start_blocker(comfy, comfyui_mock)
    ok = await comfy.submit(save_prompt("queue/num1", 30), prompt_id="same", number=5)
    clash = await comfy.submit(save_prompt("queue/num2", 31), prompt_id="same", number=5)
    assert ok.status_code == 200 and ok.json()["number"] == 5.0
    assert clash.status_code == 500
    assert clash.text == "500 Internal Server Error\n\nServer got itself in trouble"
    await comfy.wait_idle()
    assert comfyui_mock.executions("same") == 2


@pytest.mark.parametrize(("given", "expected"), [(None, "None"), (12345, "12345"), ("a/b", "a/b")])
async def test_client_prompt_id_is_stringified(comfy: Comfy, given: object, expected: str) -> None:
    response = await comfy.submit(save_prompt("queue/pid", 40), prompt_id=given)
    assert response.json()["prompt_id"] == expected
    entry = await comfy.wait_history(expected)
    assert entry["prompt"][1] == expected


async def test_restart_wipes_queue_history_and_sockets(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    done = await comfy.submit_ok(save_prompt("queue/before", 50))
    await comfy.wait_history(done)
    preview = {
        "1": save_prompt()["1"],
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    preview_id = await comfy.submit_ok(preview)
    temp_file = (await comfy.wait_history(preview_id))["outputs"]["2"]["images"][0]
    assert (comfyui_mock.temp_dir / temp_file["filename"]).is_file()
    blocker = await _start_blocker(comfy, comfyui_mock, delay=2.0)
    pending = await comfy.submit_ok(save_prompt("queue/pending", 51))
    ws, _ = await open_ws(comfyui_mock.url, new_client_id())

    comfyui_mock.restart()

    assert await read_for(ws, 1.0) == [] and ws.close_code is not None
    assert await comfy.queue() == {"queue_running": [], "queue_pending": []}
    assert (await comfy.http.get("/history")).json() == {}
    assert not (comfyui_mock.temp_dir / temp_file["filename"]).exists()
    assert comfyui_mock.executions(blocker) == 1 and comfyui_mock.executions(pending) == 0
    comfyui_mock.set_node_delay("ImageBlur", 0)
    again = await comfy.submit(save_prompt("queue/after", 52))
    assert again.json()["number"] == 0
    await comfy.wait_history(again.json()["prompt_id"])
    assert await comfy.history(blocker) == {}


async def test_restart_with_downtime_refuses_connections(comfyui_mock: MockHandle) -> None:
    restarting = asyncio.create_task(asyncio.to_thread(comfyui_mock.restart, 0.5))
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(base_url=comfyui_mock.url, timeout=2) as fresh:
        with pytest.raises(httpx.TransportError):
            await fresh.get("/prompt")
    await restarting
    async with httpx.AsyncClient(base_url=comfyui_mock.url, timeout=2) as fresh:
        assert (await fresh.get("/prompt")).status_code == 200
