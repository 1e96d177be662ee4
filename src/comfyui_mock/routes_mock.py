"""The mock's own test endpoints: POST /mock/control and GET /mock/state.

They let a test drive a mock running in another process through the same control methods the
in-process object offers (see comfyui_mock.remote).
"""

from __future__ import annotations

import inspect
from typing import Any

from aiohttp import web

from comfyui_mock.control import CONTROL_OPS
from comfyui_mock.web_common import server_of


async def control(request: web.Request) -> web.Response:
    server = server_of(request)
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "body must be JSON"}, status=400)
    if not isinstance(body, dict) or body.get("op") not in CONTROL_OPS:
        return web.json_response({"error": f"op must be one of {list(CONTROL_OPS)}"}, status=400)
    args = body.get("args") or {}
    if not isinstance(args, dict):
        return web.json_response({"error": "args must be an object"}, status=400)
    method = getattr(server, body["op"])
    try:
        result: Any = method(**args)
        if inspect.isawaitable(result):
            result = await result
    except (TypeError, ValueError) as ex:
        return web.json_response({"error": str(ex)}, status=400)
    return web.json_response({"ok": True, "result": result})


async def state(request: web.Request) -> web.Response:
    return web.json_response(server_of(request).describe())


def routes() -> list[web.RouteDef]:
    return [web.post("/mock/control", control), web.get("/mock/state", state)]
