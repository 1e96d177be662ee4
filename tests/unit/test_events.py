from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from comfyui_worker.comfyui.events import EventStream, parse_event, proxy_for
from comfyui_worker.exceptions import TransportError


def test_parses_every_recorded_text_message(capture: Any) -> None:
    messages = capture("01_empty_image_save")["ws_messages"]
    events = [parse_event(json.dumps(m["msg"])) for m in messages if m["kind"] == "text"]
    assert all(e is not None for e in events)
    types = [e.type for e in events if e]
    assert types[0] == "status" and types[-1] == "executing"
    pid = capture("01_empty_image_save")["prompt_response"]["body"]["prompt_id"]
    done = [e for e in events if e and e.is_done_signal(pid)]
    assert len(done) == 1 and done[0] is events[-1]
    assert not any(e and e.is_done_signal("someone-else") for e in events)


@pytest.mark.parametrize("frame", ["", "nope", "[1,2]", '{"data": {}}', '{"type": 5}'])
def test_garbage_frames_are_skipped(frame: str) -> None:
    assert parse_event(frame) is None


def test_event_without_prompt_id() -> None:
    event = parse_event('{"type": "executing", "data": {"node": "4"}}')
    assert event is not None and event.prompt_id is None and not event.is_done_signal("p")
    odd = parse_event('{"type": "status", "data": [1]}')
    assert odd is not None and odd.data == {}


async def test_connect_failure_is_a_transport_error() -> None:
    stream = EventStream("ws://127.0.0.1:9", "cid", open_timeout=2)
    with pytest.raises(TransportError, match=r"websocket ws://127.0.0.1:9/ws\?clientId=cid"):
        await stream.connect()


async def test_the_socket_asks_for_no_compression() -> None:
    """ComfyUI's aiohttp deflates every message when the client offers permessage-deflate:
    CPU on both sides for small JSON and already-compressed previews."""
    offered: list[str | None] = []

    async def handler(conn: ServerConnection) -> None:
        assert conn.request is not None
        offered.append(conn.request.headers.get("Sec-WebSocket-Extensions"))
        await conn.send(json.dumps({"type": "status", "data": {}}))
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        stream = EventStream(f"ws://127.0.0.1:{port}", "cid")
        await stream.connect()
        assert (await stream.next_event()).type == "status"
        await stream.close()
    assert offered == [None]


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in ("ws_proxy", "wss_proxy", "socks_proxy", "https_proxy", "http_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    proxy_for.cache_clear()
    yield monkeypatch
    proxy_for.cache_clear()


def test_proxy_comes_from_the_environment_as_websockets_chooses_it(
    proxy_env: pytest.MonkeyPatch,
) -> None:
    proxy_env.setenv("https_proxy", "http://proxy.internal:3128")
    proxy_env.setenv("no_proxy", "comfyui.local")
    assert proxy_for("ws://gpu-1:8188") == "http://proxy.internal:3128"
    assert proxy_for("ws://comfyui.local:8188") is None


def test_proxy_is_looked_up_once_per_url(proxy_env: pytest.MonkeyPatch) -> None:
    assert proxy_for("ws://gpu-1:8188") is None
    # The environment is read once: the worker's own does not change while it runs.
    proxy_env.setenv("ws_proxy", "http://proxy.internal:3128")
    assert proxy_for("ws://gpu-1:8188") is None
    assert proxy_for("ws://gpu-2:8188") == "http://proxy.internal:3128"


async def test_connect_goes_through_the_proxy(proxy_env: pytest.MonkeyPatch) -> None:
    proxy_env.setenv("ws_proxy", "http://127.0.0.1:9")  # nothing listens there
    stream = EventStream("ws://comfyui.invalid:8188", "cid", open_timeout=2)
    # Refused by the proxy's address, not a failed DNS lookup of ComfyUI's.
    with pytest.raises(TransportError, match=r"Connect call failed \('127.0.0.1', 9\)"):
        await stream.connect()


async def test_invalid_url_is_a_transport_error() -> None:
    with pytest.raises(TransportError, match="unavailable"):
        await EventStream("http://not-a-ws-url", "cid").connect()
