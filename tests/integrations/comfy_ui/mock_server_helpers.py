"""Plain HTTP and websocket helpers for the mock ComfyUI server tests (httpx + websockets)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from captures import load_capture

__all__ = ["load_capture"]  # re-exported: the mock tests import it from here

TIMEOUT = 10.0


def save_prompt(prefix: str = "mock/t", color: int = 0, batch: int = 1) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": batch, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def chain_prompt(prefix: str, blurs: int, color: int = 0) -> dict[str, Any]:
    """EmptyImage -> ImageBlur x blurs -> SaveImage: several node boundaries to interrupt at."""
    prompt: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": color},
        }
    }
    previous = "1"
    for i in range(blurs):
        nid = str(10 + i)
        prompt[nid] = {
            "class_type": "ImageBlur",
            "inputs": {"image": [previous, 0], "blur_radius": 3, "sigma": 1.0},
        }
        previous = nid
    prompt["99"] = {
        "class_type": "SaveImage",
        "inputs": {"images": [previous, 0], "filename_prefix": prefix},
    }
    return prompt


def ws_url(base_url: str, client_id: str | None) -> str:
    url = base_url.replace("http://", "ws://", 1) + "/ws"
    return f"{url}?clientId={client_id}" if client_id else url


class Comfy:
    """A tiny ComfyUI client: just enough to exercise the mock over loopback."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def submit(
        self, prompt: dict[str, Any], client_id: str | None = None, **extra: Any
    ) -> httpx.Response:
        body: dict[str, Any] = {"prompt": prompt, **extra}
        if client_id is not None:
            body["client_id"] = client_id
        return await self.http.post("/prompt", json=body)

    async def submit_ok(
        self, prompt: dict[str, Any], client_id: str | None = None, **extra: Any
    ) -> str:
        response = await self.submit(prompt, client_id, **extra)
        assert response.status_code == 200, response.text
        prompt_id: str = response.json()["prompt_id"]
        return prompt_id

    async def history(self, prompt_id: str) -> dict[str, Any]:
        response = await self.http.get(f"/history/{quote(prompt_id, safe='')}")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    async def wait_history(self, prompt_id: str, limit: float = TIMEOUT) -> dict[str, Any]:
        async with asyncio.timeout(limit):
            while True:
                body = await self.history(prompt_id)
                if prompt_id in body:
                    entry: dict[str, Any] = body[prompt_id]
                    return entry
                await asyncio.sleep(0.01)

    async def queue(self) -> dict[str, Any]:
        body: dict[str, Any] = (await self.http.get("/queue")).json()
        return body

    async def wait_idle(self, limit: float = TIMEOUT) -> None:
        async with asyncio.timeout(limit):
            while (await self.http.get("/prompt")).json()["exec_info"]["queue_remaining"]:
                await asyncio.sleep(0.01)


async def open_ws(
    base_url: str, client_id: str | None = None
) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect and return the socket plus its greeting (the first `status`)."""
    ws = await connect(ws_url(base_url, client_id), max_size=None)
    greeting = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    return ws, greeting


def new_client_id() -> str:
    return uuid.uuid4().hex


async def read_until_done(
    ws: ClientConnection, prompt_id: str, limit: float = TIMEOUT
) -> list[dict[str, Any]]:
    """Text messages up to and including `executing {node: null}` for prompt_id."""
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(limit):
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                messages.append(
                    {"type": "<binary>", "data": {"event": int.from_bytes(raw[:4], "big")}}
                )
                continue
            msg = json.loads(raw)
            messages.append(msg)
            data = msg.get("data", {})
            if (
                msg["type"] == "executing"
                and data.get("node") is None
                and data.get("prompt_id") == prompt_id
            ):
                return messages


async def wait_for_executing(ws: ClientConnection, node: str, limit: float = 5.0) -> None:
    """Read until the server says it started executing `node`."""
    async with asyncio.timeout(limit):
        while True:
            raw = await ws.recv()
            if isinstance(raw, bytes):
                continue
            msg = json.loads(raw)
            if msg["type"] == "executing" and msg["data"]["node"] == node:
                return


async def read_for(ws: ClientConnection, seconds: float) -> list[Any]:
    """Whatever arrives within `seconds` (text decoded, binary raw); stops early on close."""
    messages: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            raw = await asyncio.wait_for(ws.recv(), left)
        except (TimeoutError, ConnectionClosed):
            break
        messages.append(raw if isinstance(raw, bytes) else json.loads(raw))
    return messages


async def read_n(ws: ClientConnection, count: int, limit: float = TIMEOUT) -> list[Any]:
    """Exactly the next `count` messages (text decoded, binary raw)."""
    messages: list[Any] = []
    async with asyncio.timeout(limit):
        while len(messages) < count:
            raw = await ws.recv()
            messages.append(raw if isinstance(raw, bytes) else json.loads(raw))
    return messages


def types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


def shape(value: Any) -> Any:
    """JSON structure without values: dict keys recursively, list element shapes as a set."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return ["list", sorted({json.dumps(shape(v), sort_keys=True) for v in value})]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    assert value is None, f"not JSON: {value!r}"
    return "null"
