"""GET /view and POST /upload/image with ComfyUI's path rules and answers."""

from __future__ import annotations

import asyncio
import mimetypes

from aiohttp import web
from aiohttp.web_request import FileField

from comfyui_mock.files import UnsafePath, store_upload, view_path
from comfyui_mock.web_common import server_of

# ComfyUI forces these to download instead of rendering in a browser.
_FORCED_DOWNLOAD = {
    "text/html",
    "text/html-sandboxed",
    "application/xhtml+xml",
    "text/javascript",
    "text/css",
}


async def view(request: web.Request) -> web.StreamResponse:
    """Serves the file as stored; `preview` and `channel` conversions are not simulated."""
    status, file = view_path(dict(request.rel_url.query), server_of(request).dirs)
    if file is None:
        return web.Response(status=status)
    content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    if content_type in _FORCED_DOWNLOAD:
        content_type = "application/octet-stream"
    return web.FileResponse(
        file,
        headers={"Content-Disposition": f'filename="{file.name}"', "Content-Type": content_type},
    )


def _field(post: object, name: str) -> str | None:
    value = post.get(name) if hasattr(post, "get") else None
    return value if isinstance(value, str) else None


async def upload_image(request: web.Request) -> web.Response:
    server = server_of(request)
    post = await request.post()
    image = post.get("image")
    if not isinstance(image, FileField) or not image.filename:
        return web.Response(status=400)
    data = image.file.read()
    try:
        upload = await asyncio.to_thread(
            store_upload,
            server.dirs,
            image.filename,
            data,
            _field(post, "subfolder") or "",
            _field(post, "type"),
            _field(post, "overwrite"),
        )
    except UnsafePath:
        return web.Response(status=400)
    if not upload.duplicate:
        server.record_file(upload.path)
    return web.json_response(
        {"name": upload.name, "subfolder": upload.subfolder, "type": upload.type}
    )
