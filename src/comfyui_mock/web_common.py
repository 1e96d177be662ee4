"""Helpers every route module needs: finding the server behind a request, ComfyUI's 500."""

from __future__ import annotations

import http
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from comfyui_mock.server import MockComfyUI

SERVER_KEY: web.AppKey[MockComfyUI] = web.AppKey("comfyui_mock")
# What aiohttp itself answers when a ComfyUI handler raises: clients see exactly this.
INTERNAL_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"


def server_of(request: web.Request) -> MockComfyUI:
    return request.app[SERVER_KEY]


def internal_error(status: int = 500) -> web.Response:
    if status == 500:
        return web.Response(status=500, text=INTERNAL_ERROR_TEXT)
    return web.Response(status=status, text=f"{status}: {http.HTTPStatus(status).phrase}")
