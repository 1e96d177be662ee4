"""Before the slot: a job's input files fetched and uploaded into ComfyUI's input folder.

Each input is fetched to a temporary file (base64 decoded, URL downloaded, object read), then
uploaded through `/upload/image` under its `naming.upload_name`: unique to the job, and the
same on every attempt of one TaskRun. A retry's identical upload leaves ComfyUI's file as it
is (ComfyUI keeps a file of the same name and bytes), so a prompt of the earlier attempt that
may be reading it is not disturbed. The node inputs that refer to each input
(`naming.FileInputs`) are pointed at the uploaded name when the prompt is submitted.

This happens before the job takes one of the in-flight slots, COMFYUI_MAX_INPUT_DOWNLOADS
inputs at once in the process, so a slow download never keeps ComfyUI idle while a job that is
ready waits; and so before the job knows whether an earlier attempt's prompt exists.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..comfyui.client import ComfyUIClient
from ..exceptions import InputError, InvalidInputError, ServerError
from ..job import InputSource
from ..settings import Settings
from .fetch import UrlFetcher
from .naming import FileInputs, Reference, rewrite, upload_name
from .store import ObjectStores

DATA_URL = re.compile(r"data:[^,;]*(;[^,;=]+=[^,;]*)*;base64,", re.IGNORECASE)
# ComfyUI's answers to an upload that only another request could change.
RETRYABLE_UPLOAD_STATUSES = (408, 429)


@dataclass(frozen=True, slots=True)
class UploadedInput:
    """What the job's input `name` became in ComfyUI."""

    name: str  # the key in the envelope's inputs
    uploaded: str  # how nodes now refer to it
    size: int
    sha256: str
    nodes: tuple[str, ...]  # ids of the nodes whose inputs were rewritten

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"nodes": list(self.nodes)}


@dataclass(slots=True)
class StagedInputs:
    """A job's inputs on their way into ComfyUI: what is uploaded so far (for cleanup after
    an error) and an input error held back (`InputUploader.stage`)."""

    references: dict[str, list[Reference]] = field(default_factory=dict)
    uploaded: list[UploadedInput] = field(default_factory=list)
    held: InputError | None = None

    def prompt(self, workflow: dict[str, Any]) -> dict[str, Any]:
        """The prompt to submit: `workflow` pointed at the uploaded inputs; raises the input
        error held back, since a prompt that must be submitted needs every input."""
        if self.held is not None:
            raise self.held
        return rewrite(
            workflow, {ref: u.uploaded for u in self.uploaded for ref in self.references[u.name]}
        )


class InputUploader:
    """Fetches inputs and uploads them to one ComfyUI server; one per process."""

    def __init__(self, settings: Settings, client: ComfyUIClient, stores: ObjectStores) -> None:
        self.settings = settings
        self.client = client
        self.stores = stores
        self.file_inputs = FileInputs(client)
        self.fetcher = UrlFetcher(
            max_bytes=settings.max_input_bytes,
            timeout=settings.input_timeout,
            guard=stores.guard,
        )
        self._downloads = asyncio.Semaphore(settings.max_input_downloads)

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    async def stage(
        self,
        staged: StagedInputs,
        workflow: dict[str, Any],
        inputs: Mapping[str, InputSource],
        *,
        prompt_id: str,
        may_resume: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """Find the node inputs that refer to each input, then fetch and upload every input,
        adding each to `staged` once it is in ComfyUI.

        Raises InvalidInputError (never retried) or InputFetchError (retryable). A URL or
        object input that fails while `may_resume()` says an earlier attempt's prompt may be
        attached to or reused is held in `staged` instead: a presigned URL has often expired
        by a retry, and must not fail work that is done.
        """
        staged.references = await self.file_inputs.references(workflow, list(inputs))
        # One input at a time per job bounds disk per job; the folder is made and removed
        # off the event loop, as it may hold a large download.
        tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="comfyui-inputs-"))
        try:
            for i, (name, source) in enumerate(inputs.items()):
                try:
                    refs = staged.references[name]
                    staged.uploaded.append(
                        await self._one(name, source, refs, prompt_id, tmp / str(i))
                    )
                except InputError as exc:
                    # base64 is the same on every attempt: its error is final.
                    if source.kind == "base64" or may_resume is None or not await may_resume():
                        raise
                    staged.held = exc
                    return
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)

    async def _one(
        self,
        name: str,
        source: InputSource,
        refs: list[Reference],
        prompt_id: str,
        tmp: Path,
    ) -> UploadedInput:
        async with self._downloads:
            size, sha256 = await self._fetch(name, source, tmp)
            if size == 0:
                raise InvalidInputError("is empty", input_name=name, rule="empty")
            uploaded = await self._upload(name, tmp, upload_name(prompt_id, name))
        return UploadedInput(
            name=name,
            uploaded=uploaded,
            size=size,
            sha256=sha256,
            nodes=tuple(sorted({node for node, _ in refs})),
        )

    async def _upload(self, name: str, path: Path, filename: str) -> str:
        try:
            return (await self.client.upload_image(path, filename)).annotated
        except ServerError as exc:
            if exc.status_code >= 500 or exc.status_code in RETRYABLE_UPLOAD_STATUSES:
                raise
            # The same upload would be refused again: not something to retry.
            raise InvalidInputError(
                f"ComfyUI refused its upload as {filename!r}: {exc}",
                input_name=name,
                rule="upload-refused",
            ) from exc

    async def _fetch(self, name: str, source: InputSource, dest: Path) -> tuple[int, str]:
        if source.base64 is not None:
            # Decoding, hashing and writing up to COMFYUI_MAX_INPUT_BYTES take a while: in a
            # worker thread, where the event loop keeps serving the other jobs.
            text, limit = source.base64, self.settings.max_input_bytes
            return await asyncio.to_thread(_save_base64, name, text, limit, dest)
        if source.url is not None:
            return await self.fetcher.fetch(name, source.url, dest)
        assert source.uri is not None
        return await self.stores.download(
            name, source.uri, dest, max_bytes=self.settings.max_input_bytes
        )


def _save_base64(name: str, text: str, max_bytes: int, dest: Path) -> tuple[int, str]:
    data = decode_base64(name, text, max_bytes)
    dest.write_bytes(data)
    return len(data), hashlib.sha256(data).hexdigest()


def decode_base64(name: str, text: str, max_bytes: int) -> bytes:
    """Strict base64 (an optional data: URL prefix, whitespace ignored); never empty."""
    body = text.strip()
    if match := DATA_URL.match(body):
        body = body[match.end() :]
    body = re.sub(r"\s+", "", body)
    # Checked before decoding: a huge string must not become a huge buffer first.
    if len(body) * 3 // 4 > max_bytes + 2:
        raise InvalidInputError(
            f"is larger than COMFYUI_MAX_INPUT_BYTES ({max_bytes} bytes)",
            input_name=name,
            rule="max-bytes",
        )
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(
            f"is not valid base64 ({exc})", input_name=name, rule="base64"
        ) from exc
    if len(data) > max_bytes:
        raise InvalidInputError(
            f"is larger than COMFYUI_MAX_INPUT_BYTES ({len(data)} > {max_bytes} bytes)",
            input_name=name,
            rule="max-bytes",
        )
    return data
