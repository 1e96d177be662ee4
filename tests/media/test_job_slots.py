"""Input downloads and the in-flight slots: a job still fetching its inputs must not hold a
slot, so ComfyUI never sits idle while another job is ready (issue #18, item 7)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from job_stack import PNG, MakeStack, b64, workflow

from comfyui_mock.handle import MockHandle
from http_files import FileServer


def url_job(url: str) -> dict[str, Any]:
    return {"workflow": workflow(), "inputs": {"photo.png": {"url": url}}}


async def test_a_job_fetching_its_inputs_leaves_the_slot_to_a_ready_job(
    make_stack: MakeStack, file_server: FileServer, comfyui_mock: MockHandle
) -> None:
    file_server.files["slow.png"] = PNG
    stack = make_stack(max_in_flight=1)
    slow = asyncio.create_task(
        stack.run(url_job(file_server.held_url("slow.png")), prompt_id=str(uuid.uuid4()))
    )
    try:
        await file_server.wait_requests("/held/slow.png")  # its download has started
        ready = {"workflow": workflow(), "inputs": {"photo.png": b64(PNG)}}
        async with asyncio.timeout(5):
            done = await stack.run(ready, prompt_id=str(uuid.uuid4()))
        assert done["status"] == "success" and not slow.done()
        file_server.release.set()
        assert (await slow)["status"] == "success"
    finally:
        file_server.release.set()
        with contextlib.suppress(Exception):
            await slow
    assert comfyui_mock.request_count("/prompt", "POST") == 2


async def test_input_downloads_have_a_bound_of_their_own(
    make_stack: MakeStack, file_server: FileServer
) -> None:
    file_server.files |= {"a.png": PNG, "b.png": PNG + b"b"}
    stack = make_stack(max_in_flight=2, max_input_downloads=1)
    jobs = [
        asyncio.create_task(stack.run(url_job(file_server.held_url(name))))
        for name in ("a.png", "b.png")
    ]
    try:
        async with asyncio.timeout(5):
            while not any(r.startswith("/held/") for r in file_server.requests):
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert len([r for r in file_server.requests if r.startswith("/held/")]) == 1
        file_server.release.set()
        results = await asyncio.gather(*jobs)
    finally:
        file_server.release.set()
        await asyncio.gather(*jobs, return_exceptions=True)
    assert [r["status"] for r in results] == ["success", "success"]
    assert sorted(file_server.requests) == ["/held/a.png", "/held/b.png"]
