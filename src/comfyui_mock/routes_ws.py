"""GET /ws: ComfyUI's websocket endpoint."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp
from aiohttp import web

from comfyui_mock.web_common import server_of

SERVER_FEATURES: dict[str, Any] = {"supports_preview_metadata": True, "max_upload_size": 104857600}


async def websocket(request: web.Request) -> web.WebSocketResponse:
    server = server_of(request)
    hub = server.hub
    # A short close timeout: dropping sockets must not hang on a peer that never answers.
    ws = web.WebSocketResponse(timeout=2.0)
    await ws.prepare(request)
    sid = request.rel_url.query.get("clientId", "")
    if sid:
        hub.sockets.pop(sid, None)
    else:
        sid = uuid.uuid4().hex
    # The greeting goes out before the socket is registered so it is always the first message;
    # ComfyUI registers first and can, rarely, let a broadcast overtake it.
    status = {"status": {"exec_info": {"queue_remaining": server.queue.remaining}}, "sid": sid}
    await hub.send_now(ws, "status", status)
    hub.register(sid, ws)
    executor = server.executor
    if executor.client_id == sid and executor.last_node_id is not None:
        # A client reconnecting mid-run learns the current node, without a prompt_id.
        await hub.send_now(ws, "executing", {"node": executor.last_node_id})
    first_message = True
    try:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except json.JSONDecodeError:
                continue
            if first_message and isinstance(data, dict) and data.get("type") == "feature_flags":
                hub.feature_flags[sid] = data.get("data", {})
                await hub.send_now(ws, "feature_flags", SERVER_FEATURES)
            first_message = False
    finally:
        hub.unregister(sid, ws)
    return ws
