"""The aiohttp application: ComfyUI's HTTP routes (each also under /api) plus the mock's own."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from comfyui_mock import catalogue, routes_files, routes_mock, routes_ws
from comfyui_mock.files import Dirs
from comfyui_mock.state import QueueItem
from comfyui_mock.validation import ValidationResult, validate_prompt
from comfyui_mock.web_common import SERVER_KEY, internal_error, server_of

if TYPE_CHECKING:
    from comfyui_mock.server import MockComfyUI

log = logging.getLogger(__name__)

MAX_UPLOAD_SIZE = 100 * 1024 * 1024


@web.middleware
async def mock_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    server = server_of(request)
    if request.path.startswith("/mock/"):
        response: web.StreamResponse = await handler(request)
        return response
    controls = server.controls
    controls.count_request(request.method, request.path)
    delay = controls.response_delay(request.path, request.method)
    if delay > 0 and request.headers.get("Upgrade", "").lower() == "websocket":
        # A websocket's answer is its handshake, so that is what comes late.
        await asyncio.sleep(delay)
        delay = 0.0
    if server.down:
        # A restarting ComfyUI drops connections it still had; refuse like a dead peer.
        if request.transport is not None:
            request.transport.close()
        raise web.HTTPServiceUnavailable()
    try:
        injected = controls.take_http_failure(request.path, request.method)
        if injected is not None:
            return internal_error(injected)
        try:
            response = await handler(request)
            return response
        except web.HTTPException:
            raise
        except Exception as ex:
            log.debug("handler for %s %s raised %r", request.method, request.path, ex)
            return internal_error()
    finally:
        # The request is handled first and only the answer is slow, as when ComfyUI's loop
        # stalls after reading a request: a client that gives up on a POST /prompt may still
        # have had its prompt enqueued. Sleeping first instead would let the client's
        # disconnect fail the body read, so a timed-out POST would never be handled.
        if delay > 0:
            await asyncio.sleep(delay)


def _injected_validation_error(
    prompt: dict[str, Any], result: ValidationResult, dirs: Dirs
) -> ValidationResult:
    node = result.outputs[0]
    class_type = prompt[node]["class_type"]
    inputs = catalogue.declared_inputs(class_type, dirs.input)
    input_name = inputs[0].name if inputs else "value"
    reason = {
        "type": "custom_validation_failed",
        "message": "Custom validation failed for node",
        "details": f"{input_name} - failure injected by comfyui-mock",
        "extra_info": {"input_name": input_name},
    }
    error = {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": f"{reason['message']}: {reason['details']}",
        "extra_info": {},
    }
    node_errors = {
        node: {"errors": [reason], "dependent_outputs": [node], "class_type": class_type}
    }
    return ValidationResult(False, error, [], node_errors)


async def _json_object(request: web.Request) -> dict[str, Any]:
    """The JSON body as ComfyUI reads it; malformed JSON raises and so answers 500."""
    body = await request.json()
    if isinstance(body, list):
        # ComfyUI only tests keys with `in`, which finds none in a list.
        return {}
    if not isinstance(body, dict):
        raise TypeError("JSON body must be an object")
    return body


async def post_prompt(request: web.Request) -> web.Response:
    server = server_of(request)
    queue = server.queue
    body = await _json_object(request)
    if "number" in body:
        number: int | float = float(body["number"])
    else:
        number = queue.next_number
        if body.get("front"):
            number = -number
        queue.next_number += 1
    if "prompt" not in body:
        error = {
            "type": "no_prompt",
            "message": "No prompt provided",
            "details": "No prompt provided",
            "extra_info": {},
        }
        return web.json_response({"error": error, "node_errors": {}}, status=400)
    prompt = body["prompt"]
    prompt_id = str(body.get("prompt_id", uuid.uuid4()))
    partial = body.get("partial_execution_targets")
    if not isinstance(prompt, dict):
        raise TypeError("prompt must be an object")
    result = validate_prompt(prompt, partial, server.dirs)
    extra_data = body.get("extra_data", {})
    if not isinstance(extra_data, dict):
        raise TypeError("extra_data must be an object")
    if "client_id" in body:
        extra_data["client_id"] = body["client_id"]
    if result.ok and server.controls.take_validation_failure():
        result = _injected_validation_error(prompt, result, server.dirs)
    if not result.ok:
        return web.json_response(
            {"error": result.error, "node_errors": result.node_errors}, status=400
        )
    clash = queue.put(QueueItem(number, prompt_id, prompt, extra_data, result.outputs))
    server.broadcast_status()
    if clash:
        return internal_error()
    return web.json_response(
        {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors}
    )


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response({"exec_info": {"queue_remaining": server_of(request).queue.remaining}})


async def get_queue(request: web.Request) -> web.Response:
    return web.json_response(server_of(request).queue.snapshot())


async def post_queue(request: web.Request) -> web.Response:
    server = server_of(request)
    body = await _json_object(request)
    if body.get("clear"):
        server.queue.clear_pending()
        server.broadcast_status()
    if "delete" in body:
        for prompt_id in body["delete"]:
            if server.queue.delete_pending(prompt_id):
                server.broadcast_status()
    return web.Response(status=200)


async def get_history(request: web.Request) -> web.Response:
    query = request.rel_url.query
    max_items = int(query["max_items"]) if "max_items" in query else None
    offset = int(query["offset"]) if "offset" in query else -1
    return web.json_response(server_of(request).queue.history_page(max_items, offset))


async def get_history_entry(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    return web.json_response(server_of(request).queue.history_entry(prompt_id))


async def post_history(request: web.Request) -> web.Response:
    queue = server_of(request).queue
    body = await _json_object(request)
    if body.get("clear"):
        queue.history.clear()
    if "delete" in body:
        for prompt_id in body["delete"]:
            queue.history.pop(prompt_id, None)
    return web.Response(status=200)


async def get_object_info(request: web.Request) -> web.Response:
    return web.json_response(catalogue.object_info(server_of(request).dirs.input))


async def get_object_info_node(request: web.Request) -> web.Response:
    name = request.match_info["node_class"]
    if not catalogue.has_class(name):
        return web.json_response({})
    return web.json_response({name: catalogue.node_info(name, server_of(request).dirs.input)})


async def post_interrupt(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        body = {}
    server_of(request).executor.interrupt(body.get("prompt_id"))
    return web.Response(status=200)


async def post_free(request: web.Request) -> web.Response:
    body = await _json_object(request)
    if body.get("free_memory", False):
        server_of(request).executor.free_memory()
    return web.Response(status=200)


async def get_system_stats(request: web.Request) -> web.Response:
    return web.json_response(server_of(request).system_stats())


async def get_features(request: web.Request) -> web.Response:
    return web.json_response(routes_ws.SERVER_FEATURES)


async def get_embeddings(request: web.Request) -> web.Response:
    return web.json_response([])


def _comfy_routes() -> list[web.RouteDef]:
    return [
        web.post("/prompt", post_prompt),
        web.get("/prompt", get_prompt),
        web.get("/queue", get_queue),
        web.post("/queue", post_queue),
        web.get("/history", get_history),
        web.get("/history/{prompt_id}", get_history_entry),
        web.post("/history", post_history),
        web.get("/object_info", get_object_info),
        web.get("/object_info/{node_class}", get_object_info_node),
        web.post("/interrupt", post_interrupt),
        web.post("/free", post_free),
        web.get("/system_stats", get_system_stats),
        web.get("/features", get_features),
        web.get("/embeddings", get_embeddings),
        web.get("/view", routes_files.view),
        web.post("/upload/image", routes_files.upload_image),
        web.get("/ws", routes_ws.websocket),
    ]


def build_app(server: MockComfyUI) -> web.Application:
    app = web.Application(client_max_size=MAX_UPLOAD_SIZE, middlewares=[mock_middleware])
    app[SERVER_KEY] = server
    routes = _comfy_routes()
    app.add_routes(routes)
    app.add_routes([web.route(r.method, "/api" + r.path, r.handler) for r in routes])
    app.add_routes(routes_mock.routes())
    return app
