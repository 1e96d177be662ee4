"""Async HTTP client for ComfyUI: one pooled httpx.AsyncClient per process.

Requests are retried with exponential backoff and full jitter (`retrying.Backoff`) on
connection errors, timeouts and 5xx; never on 4xx, which cannot succeed on a second try.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import httpx

from ..exceptions import (
    ComfyUIError,
    NotComfyUIError,
    ProtocolError,
    ServerError,
    TransportError,
)
from ..observability import metrics
from ..observability.logs import mask_userinfo
from ..retrying import Backoff, retry
from ..settings import Settings
from .models import (
    HistoryEntry,
    QueueState,
    Submission,
    SubmitResult,
    parse_history,
    parse_queue,
    parse_submit,
    parse_validation_error,
)
from .uploads import UploadResult, multipart

log = logging.getLogger(__name__)
T = TypeVar("T")


# Full jitter spreads the retries of many workers after a ComfyUI blip. The numbers are the
# defaults of COMFYUI_RETRIES (3, after the first try), COMFYUI_BACKOFF_BASE and _MAX.
DEFAULT_RETRY = Backoff(first=0.5, maximum=10.0, jitter=1.0, attempts=4)
# Enough of a page to say whose it is; all of it would bury the message.
PAGE_EXCERPT_CHARS = 80
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


class ComfyUIClient:
    """ComfyUI's HTTP API. `transport` is the seam tests use to inject behaviour."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retry: Backoff = DEFAULT_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if retry.attempts is None:
            raise ValueError("a ComfyUI request needs a bounded number of attempts")
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.retries = retry.attempts - 1
        # A class's OUTPUT_NODE flag is fixed while ComfyUI runs (custom nodes load at start).
        self._output_node_cache: dict[str, bool] = {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> ComfyUIClient:
        return cls(
            settings.base_url_str,
            timeout=settings.request_timeout,
            retry=replace(
                DEFAULT_RETRY,
                first=settings.backoff_base,
                maximum=settings.backoff_max,
                attempts=settings.retries + 1,
            ),
            **kwargs,
        )

    async def __aenter__(self) -> ComfyUIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- prompts -------------------------------------------------------------------------

    async def submit(
        self,
        prompt: dict[str, Any],
        *,
        prompt_id: str,
        client_id: str,
        extra_data: dict[str, Any] | None = None,
    ) -> SubmitResult:
        """POST /prompt with our own prompt_id, so that a retry can find an earlier attempt.

        A POST that timed out or got a 5xx may still have been enqueued (ComfyUI even answers
        500 to some prompts it then runs), so before each retry we look for this submission
        and never submit the same work twice. Only a queue item or history entry carrying our
        `client_id` counts: an earlier attempt (same prompt_id) left its own, and taking its
        finished entry for this submission would return its outcome without running.
        """
        body: dict[str, Any] = {"prompt": prompt, "prompt_id": prompt_id, "client_id": client_id}
        if extra_data:
            body["extra_data"] = extra_data

        async def attempt(n: int) -> SubmitResult:
            if n > 0 and (found := await self._find_submitted(prompt_id, client_id)) is not None:
                return found
            response = await self._http.post("/prompt", json=body)
            if response.status_code == 400 and _page(response) is None:
                raise parse_validation_error(_json_or_text(response))
            _raise_for_status(response)
            return parse_submit(_json(response), sent_prompt_id=prompt_id)

        return await self._with_retries("POST /prompt", attempt)

    async def _find_submitted(self, prompt_id: str, client_id: str) -> SubmitResult | None:
        # Single-shot reads: a failure here is retried by submit's own loop. The queue first:
        # ComfyUI writes the history entry before it takes a prompt off the queue.
        ours = Submission(prompt_id, client_id)
        if not parse_queue(await self._get_once("/queue")).holds(ours):
            entry = parse_history(await self._get_once(f"/history/{prompt_id}"), prompt_id)
            if entry is None or not ours.owns(entry.client_id):
                return None
        log.info("prompt %s was enqueued by the failed request; not resubmitting", prompt_id)
        return SubmitResult(prompt_id=prompt_id, number=None, answer_lost=True)

    async def queue(self) -> QueueState:
        return parse_queue(await self._get_json("/queue"))

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        return parse_history(await self._get_json(f"/history/{prompt_id}"), prompt_id)

    async def interrupt(self, prompt_id: str) -> None:
        """Interrupt `prompt_id` if it is the running prompt; ComfyUI ignores it otherwise."""
        await self._post("/interrupt", {"prompt_id": prompt_id})

    async def delete_from_queue(self, prompt_ids: list[str]) -> None:
        """Drop pending prompts; a running one is unaffected (use interrupt)."""
        await self._post("/queue", {"delete": prompt_ids})

    async def free_memory(self) -> None:
        """Drop ComfyUI's caches (and unload models), so the next prompt really runs.

        ComfyUI applies it between prompts: at once when idle, else after the running one.
        """
        await self._post("/free", {"free_memory": True})

    async def output_classes(self, class_types: set[str]) -> set[str]:
        """Which of these node classes are output nodes (`output_node` in /object_info)."""
        found = set()
        for class_type in sorted(class_types):
            known = self._output_node_cache.get(class_type)
            if known is None:
                info = (await self.object_info(class_type)).get(class_type)
                if not isinstance(info, dict):
                    continue  # not installed: it cannot have run, and may be installed later
                known = self._output_node_cache[class_type] = bool(info.get("output_node"))
            if known:
                found.add(class_type)
        return found

    async def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        path = "/object_info" if node_class is None else f"/object_info/{node_class}"
        return _require_dict(await self._get_json(path), path)

    async def system_stats(self) -> dict[str, Any]:
        return _require_dict(await self._get_json("/system_stats"), "/system_stats")

    async def queue_remaining(self) -> int | None:
        """Prompts ComfyUI holds, running and pending, from every client (`GET /prompt`, its
        lightest answer); None when it does not answer. Never raises, never retried: the
        caller asks again."""
        try:
            body = await self._with_retries(
                "GET /prompt", lambda _: self._get_once("/prompt"), retries=0
            )
        except ComfyUIError:
            return None
        info = body.get("exec_info") if isinstance(body, dict) else None
        remaining = info.get("queue_remaining") if isinstance(info, dict) else None
        # Anything else answering there is not a ComfyUI to send work to.
        return remaining if isinstance(remaining, int) else None

    async def check_health(self) -> bool:
        """True when ComfyUI answers; never raises."""
        return await self.queue_remaining() is not None

    # -- files ---------------------------------------------------------------------------

    async def upload_image(
        self,
        path: Path,
        filename: str,
        *,
        folder: str = "input",
        subfolder: str = "",
        overwrite: bool = False,
    ) -> UploadResult:
        """POST /upload/image: `path`'s bytes into ComfyUI's `folder` (input, temp, output).

        Without overwrite ComfyUI leaves a file of that name and the same bytes as it is and
        answers its name, and gives other bytes another name ("name (1).png"), so a file a
        running prompt may be reading is never rewritten under it. The body streams from disk.
        """
        fields = {"type": folder, "subfolder": subfolder, "overwrite": str(overwrite).lower()}

        async def attempt(_: int) -> UploadResult:
            boundary = uuid.uuid4().hex
            response = await self._http.post(
                "/upload/image",
                content=multipart(boundary, path, filename, fields),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            _raise_for_status(response)
            body = _require_dict(_json(response), "/upload/image")
            name = body.get("name")
            if not isinstance(name, str) or not name:
                raise ProtocolError(f"POST /upload/image: no name in ComfyUI's answer {body!r}")
            return UploadResult(
                name=name, subfolder=str(body.get("subfolder") or ""), type=str(body.get("type"))
            )

        return await self._with_retries("POST /upload/image", attempt)

    async def serves(self, filename: str, subfolder: str, folder: str) -> bool:
        """Whether ComfyUI has this file in its `folder`: `GET /view` answers 200 (the body
        is not read). 400 and 403 (a name it refuses) count as not."""
        params = {"filename": filename, "subfolder": subfolder, "type": folder}

        async def attempt(_: int) -> bool:
            async with self._http.stream("GET", "/view", params=params) as response:
                if response.status_code in (400, 403, 404):
                    return False
                if response.status_code >= 300:
                    await response.aread()
                    _raise_for_status(response)
                return True

        return await self._with_retries("GET /view", attempt)

    # -- plumbing ------------------------------------------------------------------------

    async def _get_json(self, path: str) -> Any:
        return await self._with_retries(f"GET {path}", lambda _: self._get_once(path))

    async def _get_once(self, path: str) -> Any:
        response = await self._http.get(path)
        _raise_for_status(response)
        return _json(response)

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        async def attempt(_: int) -> None:
            _raise_for_status(await self._http.post(path, json=body))

        await self._with_retries(f"POST {path}", attempt)

    async def _with_retries(
        self,
        what: str,
        attempt: Callable[[int], Awaitable[T]],
        *,
        retries: int | None = None,
    ) -> T:
        retries = self.retries if retries is None else retries

        async def once(n: int) -> T:
            try:
                return await attempt(n)
            except httpx.TransportError as exc:  # connect/read errors and timeouts
                raise TransportError(
                    f"{what}: ComfyUI at {mask_userinfo(self.base_url)} unreachable "
                    f"({type(exc).__name__}: {exc or 'no detail'})"
                ) from exc

        def retrying(failures: int, error: Exception, delay: float) -> None:
            metrics.record_http_retry(what)
            log.warning(
                "%s failed (%s); retry %d/%d in %.2fs", what, error, failures, retries, delay
            )

        return await retry(
            once,
            replace(self.retry, attempts=retries + 1),
            retry_on=_retryable,
            on_retry=retrying,
        )


def _retryable(exc: Exception) -> bool:
    # A 4xx would be answered the same on a second try.
    return isinstance(exc, TransportError) or (
        isinstance(exc, ServerError) and exc.status_code >= 500
    )


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 300:
        return
    body = response.text[:500]
    if (page := _page(response)) is not None:
        # A proxy's "502 Bad Gateway" page: ComfyUI behind it may be back soon, so it stays a
        # ServerError, retried like any 5xx. Any other status from a page is no ComfyUI at all.
        if response.status_code >= 500:
            raise ServerError(
                _not_comfyui(response, page), status_code=response.status_code, body=body
            )
        raise NotComfyUIError(_not_comfyui(response, page))
    raise ServerError(
        f"{response.request.method} {response.request.url.path}: ComfyUI answered HTTP "
        f"{response.status_code}: {body.strip() or '(empty body)'}",
        status_code=response.status_code,
        body=body,
    )


def _page(response: httpx.Response) -> str | None:
    """The title (or first words) of an HTML answer; None for any other answer."""
    text = response.text
    is_html = "html" in response.headers.get("content-type", "")
    if not is_html and not text.lstrip().startswith("<"):
        return None
    title = _TITLE.search(text)
    words = " ".join(_TAG.sub(" ", title.group(1) if title else text).split())
    return words if len(words) <= PAGE_EXCERPT_CHARS else words[:PAGE_EXCERPT_CHARS] + "…"


def _not_comfyui(response: httpx.Response, page: str) -> str:
    return (
        f"{response.request.method} {response.request.url.path}: this is not ComfyUI (is "
        f"COMFYUI_BASE_URL right?): the server answered HTTP {response.status_code} with an "
        f"HTML page: {page!r}"
    )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        if (page := _page(response)) is not None:
            raise NotComfyUIError(_not_comfyui(response, page)) from exc
        raise ProtocolError(
            f"{response.request.method} {response.request.url.path}: ComfyUI answered "
            f"non-JSON ({response.headers.get('content-type', 'no content-type')}): "
            f"{response.text[:200]!r}"
        ) from exc


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:500]


def _require_dict(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"GET {path}: expected a JSON object, got {type(value).__name__}")
    return value
