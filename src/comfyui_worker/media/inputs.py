"""Before submit: a job's input files into ComfyUI's input folder, the workflow pointed at them.

Each input is fetched to a temporary file (base64 decoded, URL downloaded, object read), then
uploaded through `/upload/image` as `<prompt_id>-<name>`: unique to the job, and the same on
every attempt of one TaskRun (a retry overwrites its own file instead of piling up copies).
Every string input of every node equal to the input's name is rewritten to the uploaded name.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..comfyui.client import ComfyUIClient
from ..exceptions import InvalidInputError
from ..job import InputSource
from ..settings import Settings
from .fetch import UrlFetcher
from .store import ObjectStores

DATA_URL = re.compile(r"data:[^,;]*(;[^,;=]+=[^,;]*)*;base64,", re.IGNORECASE)


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


def upload_name(prompt_id: str, name: str) -> str:
    """`<prompt_id>-<name>`, reduced to characters every filesystem and node accepts.

    A name that had to be reduced also carries a hash of itself: `a/photo.png` and
    `b/photo.png` (or `photo 1.png` and `photo_1.png`) must not land on one file, where the
    second upload would replace the first's bytes under both names.
    """
    base = re.split(r"[\\/]", name)[-1]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".") or "input"
    if safe != name:
        safe = f"{hashlib.sha256(name.encode()).hexdigest()[:12]}-{safe}"
    return f"{prompt_id}-{safe}"


def references(workflow: Mapping[str, Any], name: str) -> list[tuple[str, str]]:
    """(node id, input name) of every string input equal to `name`."""
    return [
        (node_id, key)
        for node_id, node in workflow.items()
        if isinstance(node, dict) and isinstance(node.get("inputs"), dict)
        for key, value in node["inputs"].items()
        if value == name
    ]


def rewrite(workflow: dict[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    """A copy of `workflow` with every string input found in `renames` replaced."""
    out = copy.deepcopy(workflow)
    for node in out.values():
        if isinstance(node, dict) and isinstance(node.get("inputs"), dict):
            for key, value in node["inputs"].items():
                if isinstance(value, str) and value in renames:
                    node["inputs"][key] = renames[value]
    return out


def check_references(workflow: Mapping[str, Any], inputs: Mapping[str, object]) -> None:
    """Refuse an input no node refers to: the caller misnamed it, and it would be ignored."""
    for name in inputs:
        if not references(workflow, name):
            raise InvalidInputError(
                f"no node of the workflow has an input equal to {name!r}; name the input "
                "exactly as the loader node's value (e.g. LoadImage's image)",
                input_name=name,
                rule="unreferenced",
            )


class InputUploader:
    """Fetches inputs and uploads them to one ComfyUI server."""

    def __init__(self, settings: Settings, client: ComfyUIClient, stores: ObjectStores) -> None:
        self.settings = settings
        self.client = client
        self.stores = stores
        self.fetcher = UrlFetcher(
            max_bytes=settings.max_input_bytes,
            timeout=settings.input_timeout,
            guard=stores.guard,
        )

    async def aclose(self) -> None:
        await self.fetcher.aclose()

    async def upload(
        self, workflow: dict[str, Any], inputs: Mapping[str, InputSource], *, prompt_id: str
    ) -> tuple[dict[str, Any], list[UploadedInput]]:
        """The workflow with inputs renamed, and what each input became.

        Raises InvalidInputError (never retried) or InputFetchError (retryable).
        """
        check_references(workflow, inputs)
        uploaded: list[UploadedInput] = []
        # One at a time: a job has few inputs, and it bounds disk and connections per job.
        # The folder is made and removed off the event loop: it may hold a large download.
        tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="comfyui-inputs-"))
        try:
            for i, (name, source) in enumerate(inputs.items()):
                uploaded.append(await self._one(workflow, name, source, prompt_id, tmp / str(i)))
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)
        return rewrite(workflow, {u.name: u.uploaded for u in uploaded}), uploaded

    async def _one(
        self,
        workflow: dict[str, Any],
        name: str,
        source: InputSource,
        prompt_id: str,
        tmp: Path,
    ) -> UploadedInput:
        size, sha256 = await self._fetch(name, source, tmp)
        if size == 0:
            raise InvalidInputError("is empty", input_name=name, rule="empty")
        result = await self.client.upload_image(tmp, upload_name(prompt_id, name))
        return UploadedInput(
            name=name,
            uploaded=result.annotated,
            size=size,
            sha256=sha256,
            nodes=tuple(sorted({node for node, _ in references(workflow, name)})),
        )

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
