"""The websocket stream: order, routing by client id, reconnects, feature flags, drops."""

from __future__ import annotations

import asyncio
import json

from mock_server_helpers import (
    Comfy,
    chain_prompt,
    new_client_id,
    open_ws,
    read_for,
    read_n,
    read_until_done,
    save_prompt,
    types,
    wait_for_executing,
)

from comfyui_mock.handle import MockHandle

FULL_SEQUENCE = [
    "status",
    "status",
    "execution_start",
    "execution_cached",
    "progress_state",
    "executing",
    "progress_state",
    "progress_state",
    "executing",
    "executed",
    "progress_state",
    "execution_success",
    "status",
    "executing",
]


async def test_greeting_is_status_with_sid(comfyui_mock: MockHandle) -> None:
    cid = new_client_id()
    ws, greeting = await open_ws(comfyui_mock.url, cid)
    await ws.close()
    assert greeting == {
        "type": "status",
        "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": cid},
    }
    anonymous, greeting = await open_ws(comfyui_mock.url)
    await anonymous.close()
    assert len(greeting["data"]["sid"]) == 32


async def test_full_sequence_in_order_and_done_after_history(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    cid = new_client_id()
    ws, _ = await open_ws(comfyui_mock.url, cid)
    prompt_id = await comfy.submit_ok(save_prompt("ws/full", color=1), cid)
    messages = await read_until_done(ws, prompt_id)
    # The history entry exists by the time the final `executing {node: null}` is sent.
    entry = (await comfy.history(prompt_id))[prompt_id]
    await ws.close()

    assert types(messages) == FULL_SEQUENCE
    data = [m["data"] for m in messages]
    assert data[2] == {"prompt_id": prompt_id, "timestamp": data[2]["timestamp"]}
    assert data[3]["nodes"] == []
    assert data[5] == {"node": "1", "display_node": "1", "prompt_id": prompt_id}
    assert data[8]["node"] == "2"
    executed = data[9]
    assert executed["node"] == "2" and executed["prompt_id"] == prompt_id
    assert executed["output"] == entry["outputs"]["2"]
    assert data[10]["nodes"]["2"]["state"] == "finished"
    assert data[13] == {"node": None, "prompt_id": prompt_id}
    assert [m[0] for m in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]


async def test_progress_steps_emit_progress_events(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    comfyui_mock.set_progress_steps(3, node="SaveImage")
    cid = new_client_id()
    ws, _ = await open_ws(comfyui_mock.url, cid)
    prompt_id = await comfy.submit_ok(save_prompt("ws/progress", color=2), cid)
    messages = await read_until_done(ws, prompt_id)
    await ws.close()
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert progress == [
        {"value": v, "max": 3, "prompt_id": prompt_id, "node": "2"} for v in (1, 2, 3)
    ]


async def test_events_reach_only_the_submitting_client(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    mine, other = new_client_id(), new_client_id()
    ws_mine, _ = await open_ws(comfyui_mock.url, mine)
    ws_other, _ = await open_ws(comfyui_mock.url, other)
    prompt_id = await comfy.submit_ok(save_prompt("ws/route", color=3), mine)
    await read_until_done(ws_mine, prompt_id)
    seen_by_other = await read_n(ws_other, 3) + await read_for(ws_other, 0.1)
    await ws_mine.close()
    await ws_other.close()
    # Others only get the queue status broadcasts.
    assert [m["type"] for m in seen_by_other] == ["status", "status", "status"]


async def test_prompt_without_client_id_broadcasts_progress_only(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    ws, _ = await open_ws(comfyui_mock.url, new_client_id())
    prompt_id = await comfy.submit_ok(save_prompt("ws/anon", color=4))
    await comfy.wait_history(prompt_id)
    seen = await read_n(ws, 7) + await read_for(ws, 0.1)
    await ws.close()
    assert [m["type"] for m in seen] == [
        "status",
        "status",
        "progress_state",
        "progress_state",
        "progress_state",
        "progress_state",
        "status",
    ]
    assert {m["data"]["prompt_id"] for m in seen if m["type"] == "progress_state"} == {prompt_id}


async def test_newest_socket_with_same_client_id_wins_then_nobody_hears(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    cid = new_client_id()
    old, _ = await open_ws(comfyui_mock.url, cid)
    new, _ = await open_ws(comfyui_mock.url, cid)
    first = await comfy.submit_ok(save_prompt("ws/overlap", color=5), cid)
    assert types(await read_until_done(new, first))[-1] == "executing"
    assert await read_for(old, 0.1) == []
    # Closing the old socket removes the shared entry (captures/19): the new one goes deaf.
    await old.close()
    await asyncio.sleep(0.2)
    second = await comfy.submit_ok(save_prompt("ws/overlap", color=6), cid)
    await comfy.wait_history(second)
    heard = [m for m in await read_for(new, 0.2) if m["type"] != "status"]
    await new.close()
    assert heard == []


async def test_reconnect_mid_run_reports_current_node(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.set_node_delay("ImageBlur", 0.3)
    cid = new_client_id()
    ws, _ = await open_ws(comfyui_mock.url, cid)
    prompt_id = await comfy.submit_ok(chain_prompt("ws/reconnect", blurs=1), cid)
    await wait_for_executing(ws, "10")
    await ws.close()
    # Let the server drop the old socket first: its cleanup would otherwise unregister the
    # new socket sharing the id (the captured ComfyUI behaviour).
    await asyncio.sleep(0.05)
    again, greeting = await open_ws(comfyui_mock.url, cid)
    assert greeting["data"]["status"]["exec_info"]["queue_remaining"] == 1
    rest = await read_until_done(again, prompt_id)
    await again.close()
    assert rest[0] == {"type": "executing", "data": {"node": "10"}}
    assert "execution_success" in types(rest)


async def test_feature_flags_answered_when_sent_first(comfyui_mock: MockHandle) -> None:
    ws, _ = await open_ws(comfyui_mock.url, new_client_id())
    await ws.send(
        json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    )
    reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
    await ws.close()
    assert reply == {
        "type": "feature_flags",
        "data": {"supports_preview_metadata": True, "max_upload_size": 104857600},
    }


async def test_drop_after_event_closes_sockets_and_job_still_finishes(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.drop_websockets(after_event="executing")
    cid = new_client_id()
    ws, _ = await open_ws(comfyui_mock.url, cid)
    prompt_id = await comfy.submit_ok(save_prompt("ws/drop", color=7), cid)
    seen = await read_for(ws, 2.0)
    assert ws.close_code is not None
    assert [m["type"] for m in seen][-1] == "executing"
    entry = await comfy.wait_history(prompt_id)
    assert entry["status"]["status_str"] == "success"


async def test_drop_after_n_events_and_immediately(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    comfyui_mock.drop_websockets(after_events=4)
    cid = new_client_id()
    ws, _ = await open_ws(comfyui_mock.url, cid)
    prompt_id = await comfy.submit_ok(save_prompt("ws/drop-n", color=8), cid)
    seen = await read_for(ws, 2.0)
    assert len(seen) == 4 and ws.close_code is not None
    await comfy.wait_history(prompt_id)

    idle, _ = await open_ws(comfyui_mock.url, new_client_id())
    comfyui_mock.drop_websockets()
    assert await read_for(idle, 2.0) == []
    assert idle.close_code is not None
