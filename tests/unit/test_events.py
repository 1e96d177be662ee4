from __future__ import annotations

import json
from typing import Any

import pytest

from comfyui_worker.comfyui.events import EventStream, parse_event
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
