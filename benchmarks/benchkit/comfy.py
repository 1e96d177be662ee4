"""The ComfyUI side: the mock as its own process, the workload, the minimal client (the
floor every worker figure is compared with), a burst straight to ComfyUI, and what ComfyUI's
history says about when each job ran."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from lh.serve_process import terminate

JOB_TIMEOUT = 60.0
_colors = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Target:
    """A ComfyUI server and where its folders are mounted here."""

    url: str
    output_dir: Path
    temp_dir: Path

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")


def tiny_workflow() -> dict[str, Any]:
    """A model-free job that really runs: a new colour each time, so nothing is cached.

    PreviewImage writes to ComfyUI's temp folder, which ComfyUI clears itself, so a run
    against someone's ComfyUI leaves nothing in their output folder.
    """
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": next(_colors) % 2**24},
        },
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }


@contextlib.asynccontextmanager
async def mock_comfyui(job_seconds: float) -> AsyncIterator[Target]:
    """The bundled mock in a process of its own, as a real ComfyUI would be: a mock in this
    process would share its interpreter lock with the clients being measured. Each job takes
    `job_seconds`, as long as the tiny job takes a real ComfyUI."""
    with tempfile.TemporaryDirectory(prefix="comfyui-bench-") as root:
        dirs = {name: Path(root) / name for name in ("output", "temp", "input")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "comfyui_mock.cli",
            "--port",
            "0",
            "--log-level",
            "WARNING",
            "--delay",
            str(job_seconds),
            *itertools.chain.from_iterable((f"--{k}-dir", str(v)) for k, v in dirs.items()),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(30):
                first = (await proc.stdout.readline()).decode()
            if "listening on" not in first:
                raise RuntimeError(f"the mock ComfyUI did not start: {first!r}")
            yield Target(first.split()[-1], dirs["output"], dirs["temp"])
        finally:
            await terminate(proc)


def http_client(target: Target) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=target.url, timeout=httpx.Timeout(30.0))


async def post_prompt(
    http: httpx.AsyncClient, workflow: dict[str, Any], prompt_id: str, client_id: str
) -> None:
    response = await http.post(
        "/prompt", json={"prompt": workflow, "prompt_id": prompt_id, "client_id": client_id}
    )
    response.raise_for_status()


async def history_entry(http: httpx.AsyncClient, prompt_id: str) -> dict[str, Any]:
    entry: dict[str, Any] = (await http.get(f"/history/{prompt_id}")).json()[prompt_id]
    return entry


async def _done_signal(ws: ClientConnection) -> str:
    """Wait for the next `executing {node: null}` and return its prompt id."""
    while True:
        frame = await ws.recv()
        if isinstance(frame, bytes):
            continue
        msg = json.loads(frame)
        data = msg.get("data") or {}
        if msg.get("type") == "executing" and data.get("node") is None and data.get("prompt_id"):
            return str(data["prompt_id"])


async def minimal_job(http: httpx.AsyncClient, target: Target) -> tuple[str, float, float]:
    """What anyone would write against ComfyUI's API, with the same libraries the worker uses:
    a fresh websocket, POST, wait for the done signal, GET history. Returns the prompt id
    and when it had the result, by the wall clock and by `perf_counter` (before closing the
    socket, as the worker has its result before its socket is closed)."""
    client_id, prompt_id = uuid.uuid4().hex, str(uuid.uuid4())
    async with (
        asyncio.timeout(JOB_TIMEOUT),
        # Without permessage-deflate, as the worker connects: the floor is the least a client
        # must spend, and ComfyUI's compression is not part of it (about 1 ms of CPU a job).
        connect(f"{target.ws_url}/ws?clientId={client_id}", max_size=None, compression=None) as ws,
    ):
        await post_prompt(http, tiny_workflow(), prompt_id, client_id)
        while await _done_signal(ws) != prompt_id:
            pass
        entry = await history_entry(http, prompt_id)
        done, done_counter = time.time(), time.perf_counter()
    if entry["status"]["status_str"] != "success":
        raise RuntimeError(f"prompt {prompt_id} failed: {entry['status']}")
    return prompt_id, done, done_counter


async def direct_burst(
    http: httpx.AsyncClient, target: Target, count: int
) -> tuple[float, list[str]]:
    """`count` prompts posted one after the other straight to ComfyUI; jobs/s from the first
    POST to the last done signal, and the prompt ids in submission order."""
    client_id = uuid.uuid4().hex
    prompt_ids = [str(uuid.uuid4()) for _ in range(count)]
    async with (
        asyncio.timeout(JOB_TIMEOUT + count),
        connect(f"{target.ws_url}/ws?clientId={client_id}", max_size=None, compression=None) as ws,
    ):
        start = time.perf_counter()
        for prompt_id in prompt_ids:
            await post_prompt(http, tiny_workflow(), prompt_id, client_id)
        pending = set(prompt_ids)
        while pending:
            pending.discard(await _done_signal(ws))
        elapsed = time.perf_counter() - start
    return count / elapsed, prompt_ids


def event_ms(entry: dict[str, Any], event: str) -> int:
    """ComfyUI's own timestamp (ms since the epoch) of an event in a history entry."""
    for name, data in entry["status"]["messages"]:
        if name == event:
            return int(data["timestamp"])
    raise RuntimeError(f"history entry has no {event} message: {entry['status']}")


async def detection_ms(http: httpx.AsyncClient, done: Sequence[tuple[str, float]]) -> list[float]:
    """ComfyUI's execution_success to the moment the client had the result, per job (ComfyUI
    stamps whole milliseconds, so each figure is +-1 ms)."""
    return [
        finished * 1000 - event_ms(await history_entry(http, prompt_id), "execution_success")
        for prompt_id, finished in done
    ]


async def idle_gaps_ms(http: httpx.AsyncClient, prompt_ids: Sequence[str]) -> list[float]:
    """ComfyUI idle between consecutive jobs: one's execution_success to the next's
    execution_start, in the order ComfyUI ran them."""
    spans = sorted(
        [
            (event_ms(entry, "execution_start"), event_ms(entry, "execution_success"))
            for entry in [await history_entry(http, pid) for pid in prompt_ids]
        ]
    )
    return [float(nxt[0] - prev[1]) for prev, nxt in itertools.pairwise(spans)]
