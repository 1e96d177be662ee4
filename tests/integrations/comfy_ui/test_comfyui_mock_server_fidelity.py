"""Replay request bodies a real ComfyUI v0.3.64 answered (tests/fixtures/captures) against the
mock and compare the SHAPE of every answer: keys and JSON types, recursively, not ids, timestamps
or values. Lists compare as the set of their element shapes, so lengths may differ."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from mock_server_helpers import (
    Comfy,
    load_capture,
    new_client_id,
    open_ws,
    read_until_done,
    shape,
    types,
    wait_for_executing,
)

from comfyui_mock.handle import MockHandle


def assert_same_shape(real: Any, mock: Any, where: str) -> None:
    expected, got = shape(real), shape(mock)
    assert got == expected, (
        f"{where}: shape differs\nreal: {json.dumps(expected, indent=1)[:3000]}\n"
        f"mock: {json.dumps(got, indent=1)[:3000]}"
    )


def with_client(body: dict[str, Any], client_id: str) -> dict[str, Any]:
    return {**body, "client_id": client_id}


def after_post(recorded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recorded text messages of one run (the capture starts at the POST)."""
    return [m["msg"] for m in recorded if m["kind"] == "text"]


def assert_same_stream(real: list[dict[str, Any]], mock: list[dict[str, Any]], where: str) -> None:
    assert types(mock) == types(real), where
    for index, (r, m) in enumerate(zip(real, mock, strict=True)):
        assert_same_shape(r, m, f"{where} message {index} ({r['type']})")


def assert_same_event_shapes(
    real: list[dict[str, Any]], mock: list[dict[str, Any]], where: str
) -> None:
    """Per event type, the union of data shapes; for runs whose node order may differ."""

    def by_type(messages: list[dict[str, Any]]) -> dict[str, Any]:
        grouped: dict[str, list[Any]] = {}
        for m in messages:
            data = m["data"]
            if m["type"] == "progress_state":
                # Which nodes have started depends on the order; each node entry must match.
                data = {**data, "nodes": list(data["nodes"].values())}
            grouped.setdefault(m["type"], []).append(data)
        return grouped

    assert_same_shape(by_type(real), by_type(mock), where)


async def upload(comfy: Comfy, name: str, content: bytes) -> None:
    response = await comfy.http.post(
        "/upload/image", files={"image": (name, content)}, data={"overwrite": "true"}
    )
    assert response.status_code == 200


async def test_server_info_endpoints(comfy: Comfy) -> None:
    recorded = load_capture("00_server_info")
    for path in (
        "/system_stats",
        "/api/system_stats",
        "/prompt",
        "/queue",
        "/features",
        "/embeddings",
    ):
        response = await comfy.http.get(path)
        real = recorded[path] if path in recorded else recorded[path.removeprefix("/api")]
        assert response.status_code == real["status"], path
        assert response.headers["content-type"] == real["headers"]["Content-Type"], path
        assert_same_shape(real["body"], response.json(), path)
    missing = await comfy.http.get("/history/does-not-exist")
    assert missing.json() == recorded["/history/does-not-exist"]["body"]


async def test_prompt_history_queue_and_stream_of_a_simple_save(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    recorded = load_capture("01_empty_image_save")
    cid = new_client_id()
    ws, greeting = await open_ws(comfyui_mock.url, cid)
    assert_same_shape(recorded["ws_on_connect"][0]["msg"], greeting, "greeting")

    comfyui_mock.set_job_delay(0.3)
    response = await comfy.http.post("/prompt", json=with_client(recorded["request_body"], cid))
    assert response.status_code == 200
    assert (
        response.headers["content-type"] == recorded["prompt_response"]["headers"]["Content-Type"]
    )
    assert_same_shape(recorded["prompt_response"]["body"], response.json(), "POST /prompt")
    prompt_id = response.json()["prompt_id"]
    queue = await comfy.queue()
    assert_same_shape(recorded["queue_snapshots"][0]["body"], queue, "GET /queue while running")

    stream = await read_until_done(ws, prompt_id)
    await ws.close()
    assert_same_stream(after_post(recorded["ws_messages"]), stream, "ws stream")
    history = await comfy.history(prompt_id)
    real_history = recorded["history_after"]["body"]
    assert_same_shape(next(iter(real_history.values())), history[prompt_id], "GET /history/{id}")
    assert_same_shape(recorded["queue_snapshots"][-1]["body"], await comfy.queue(), "idle queue")


@pytest.mark.parametrize("case", list(load_capture("06_validation_errors")))
async def test_validation_answers(comfy: Comfy, case: str) -> None:
    recorded = load_capture("06_validation_errors")[case]
    real = recorded["prompt_response"]
    if "request_body_raw" in recorded:
        response = await comfy.http.post("/prompt", content=recorded["request_body_raw"].encode())
    else:
        response = await comfy.http.post("/prompt", json=recorded["request_body"])
    assert response.status_code == real["status"], case
    assert response.headers["content-type"] == real["headers"]["Content-Type"], case
    if "body" in real:
        assert_same_shape(real["body"], response.json(), case)
    else:
        assert response.text == real["body_text"], case
    if "history_after" in recorded:
        prompt_id = response.json()["prompt_id"]
        entry = await comfy.wait_history(prompt_id)
        assert_same_shape(next(iter(recorded["history_after"]["body"].values())), entry, case)


async def test_execution_error_keeps_the_real_shapes(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    recorded = load_capture("05_runtime_error")["mixed_success_then_error"]
    await upload(comfy, "peer_corrupt.png", b"this is not an image file")
    comfyui_mock.fail_node(
        "3", "cannot identify image file 'peer_corrupt.png'", "PIL.UnidentifiedImageError"
    )
    cid = new_client_id()
    ws, _ = await open_ws(comfyui_mock.url, cid)
    prompt_id = await comfy.submit_ok(recorded["request_body"]["prompt"], cid)
    stream = await read_until_done(ws, prompt_id)
    await ws.close()
    assert_same_stream(after_post(recorded["ws_messages"]), stream, "ws stream with error")
    entry = await comfy.wait_history(prompt_id)
    assert_same_shape(next(iter(recorded["history_after"]["body"].values())), entry, "history")


async def test_interrupted_run_keeps_the_real_shapes(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    recorded = load_capture("08_interrupt_and_queue_delete")
    comfyui_mock.set_node_delay("ImageBlur", 0.2)
    cid = new_client_id()
    ws, _ = await open_ws(comfyui_mock.url, cid)
    prompt_id = await comfy.submit_ok(recorded["requests"][0]["prompt"], cid)
    await wait_for_executing(ws, "10")
    assert (await comfy.http.post("/interrupt", json={"prompt_id": prompt_id})).status_code == 200
    stream = await read_until_done(ws, prompt_id)
    await ws.close()
    real_interrupted = [
        m["msg"]
        for m in recorded["ws_messages"]
        if m.get("msg", {}).get("type") == "execution_interrupted"
    ]
    mock_interrupted = [m for m in stream if m["type"] == "execution_interrupted"]
    assert_same_shape(real_interrupted, mock_interrupted, "execution_interrupted")
    entry = await comfy.wait_history(prompt_id)
    real_entry = next(iter(recorded["history_interrupted"]["body"].values()))
    assert_same_shape(real_entry, entry, "interrupted history")


async def test_cached_resubmit_stream(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    recorded = load_capture("10_cache_resubmit")
    cid = new_client_id()
    ws, _ = await open_ws(comfyui_mock.url, cid)
    first = await comfy.submit_ok(recorded["first"]["request_body"]["prompt"], cid)
    assert_same_stream(
        after_post(recorded["first"]["ws_messages"]), await read_until_done(ws, first), "first"
    )
    for step in ("identical_resubmit", "only_output_node_changed"):
        prompt_id = await comfy.submit_ok(recorded[step]["request_body"]["prompt"], cid)
        stream = await read_until_done(ws, prompt_id)
        assert_same_stream(after_post(recorded[step]["ws_messages"]), stream, step)
        entry = await comfy.wait_history(prompt_id)
        assert_same_shape(next(iter(recorded[step]["history_after"]["body"].values())), entry, step)
    await ws.close()


async def test_every_output_type(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    recorded = load_capture("11_output_types")
    await upload(comfy, "peer_tone.wav", b"RIFF\x00\x00\x00\x00WAVEfmt ")
    cid = new_client_id()
    ws, _ = await open_ws(comfyui_mock.url, cid)
    prompt_id = await comfy.submit_ok(recorded["request_body"]["prompt"], cid)
    stream = await read_until_done(ws, prompt_id)
    await ws.close()
    real_stream = after_post(recorded["ws_messages"])
    binary_frames = [m for m in stream if m["type"] == "<binary>"]
    text_stream = [m for m in stream if m["type"] != "<binary>"]
    # The real server walks output nodes in set order; compare what was sent, not the order.
    assert Counter(types(text_stream)) == Counter(types(real_stream))
    assert_same_event_shapes(real_stream, text_stream, "output types stream")
    assert binary_frames == [{"type": "<binary>", "data": {"event": 3}}]
    entry = await comfy.wait_history(prompt_id)
    real_entry = next(iter(recorded["history_after"]["body"].values()))
    assert_same_shape(real_entry["outputs"], entry["outputs"], "outputs of every type")
    assert_same_shape(real_entry, entry, "history of every type")
    for key, view in recorded["views"].items():
        node, kind = key.split(".")
        item = entry["outputs"][node][kind][-1]
        response = await comfy.http.get("/view", params=item)
        assert response.status_code == view["status"], key


async def test_prompt_without_client_id_as_another_socket_sees_it(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    recorded = load_capture("12_ws_multi_client")["submitted_without_client_id"]
    ws, _ = await open_ws(comfyui_mock.url, new_client_id())
    prompt_id = await comfy.submit_ok(recorded["request_body"]["prompt"])
    await comfy.wait_history(prompt_id)
    await comfy.wait_idle()
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while len(seen) < len(recorded["A_saw"]):
            seen.append(json.loads(await ws.recv()))
    await ws.close()
    assert_same_stream([m["msg"] for m in recorded["A_saw"]], seen, "anonymous prompt")
