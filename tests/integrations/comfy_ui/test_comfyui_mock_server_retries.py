"""Retries and attaches against the mock ComfyUI: an earlier attempt's state (its history
entry, its interrupted prompt, its cached outputs) must never pass for this attempt's.

Every attempt of one task submits the same prompt_id, so ComfyUI's queue and history hold
what earlier attempts left under it; each test sets up such a leftover the way it happens in
production and checks what ran in ComfyUI and what the job reports.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mock_server_helpers import Comfy, chain_prompt, save_prompt

from comfyui_mock.handle import MockHandle
from comfyui_worker.comfyui.client import ComfyUIClient
from comfyui_worker.constants import ExceptionName
from comfyui_worker.exceptions import ConfigurationError, JobTimeoutError, OutputMissingError
from comfyui_worker.execution import JobObserver
from comfyui_worker.lh.errors import business_name
from mock_settings import executor_for, settings_for

PID = "11111111-2222-3333-4444-555555555555"


class Notes(JobObserver):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, prompt_id: str, message: str) -> None:
        super().note(prompt_id, message)
        self.notes.append(message)


async def wait_until(condition: Callable[[], Awaitable[bool]], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not await condition():
            await asyncio.sleep(0.005)


def partly_valid(capture: Any) -> dict[str, Any]:
    """Output 2 is fine, output 3 misses its input: ComfyUI answers 200 and runs only 2."""
    prompt: dict[str, Any] = capture("06_validation_errors")[
        "partial_valid_one_good_one_bad_output"
    ]["request_body"]["prompt"]
    return prompt


# -- the mock behaves as ComfyUI does ------------------------------------------------------


async def test_free_applies_after_the_running_prompt(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    # ComfyUI's prompt worker reads the free_memory flag between prompts.
    comfyui_mock.set_node_delay("ImageBlur", 0.3)
    running = await comfy.submit_ok(chain_prompt("free/x", blurs=2), client_id="c1")
    await wait_until(lambda: _running(comfy, running))
    assert (await comfy.http.post("/free", json={"free_memory": True})).status_code == 200
    assert (await comfy.wait_history(running))["status"]["status_str"] == "success"
    comfyui_mock.set_node_delay("ImageBlur", 0.0)
    again = await comfy.submit_ok(chain_prompt("free/x", blurs=2), client_id="c1")
    messages = (await comfy.wait_history(again))["status"]["messages"]
    cached = next(data["nodes"] for event, data in messages if event == "execution_cached")
    assert cached == []  # the cache was dropped once the first prompt was done


async def _running(comfy: Comfy, prompt_id: str) -> bool:
    return [item[1] for item in (await comfy.queue())["queue_running"]] == [prompt_id]


# -- 2: files that are gone ------------------------------------------------------------------


async def test_cached_outputs_whose_files_are_gone_are_made_again(
    comfyui_mock: MockHandle,
) -> None:
    notes = Notes()
    async with executor_for(comfyui_mock) as executor:
        first = await executor.run(save_prompt("gone/x"))
        Path(first.outputs[0]).unlink()  # delivered and cleaned up downstream
        # Same workflow, new task: ComfyUI serves it from its cache, pointing at that file.
        result = await executor.run(save_prompt("gone/x"), prompt_id=PID, observer=notes)
    assert Path(result.outputs[0]).is_file()
    assert result.prompt_id == PID and not result.reused
    assert comfyui_mock.request_count("/free", "POST") == 1
    assert comfyui_mock.executions(PID) == 2  # the cached run, then the real one
    assert any("no longer exist; clearing ComfyUI's cache" in n for n in notes.notes)


def preview_prompt() -> dict[str, Any]:
    prompt = save_prompt()
    prompt["2"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    return prompt


async def test_a_temp_folder_setting_one_level_up_is_reported_without_a_rerun(
    comfyui_mock: MockHandle,
) -> None:
    """ComfyUI's `--temp-directory X` writes to X/temp: COMFYUI_TEMP_DIR=X hides every
    preview, which ComfyUI still serves. No rerun can help, and none may flush its cache."""
    parent = comfyui_mock.temp_dir.parent
    async with executor_for(comfyui_mock, temp_dir=parent) as executor:
        with pytest.raises(OutputMissingError) as info:
            await executor.run(preview_prompt(), prompt_id=PID)
    err = info.value
    assert comfyui_mock.executions(PID) == 1
    assert comfyui_mock.request_count("/free", "POST") == 0
    assert f"set COMFYUI_TEMP_DIR={comfyui_mock.temp_dir}" in str(err)
    assert "it serves them on /view" in str(err)
    details = err.details()
    assert (details["variable"], details["folder"]) == ("COMFYUI_TEMP_DIR", str(parent))
    assert business_name(err) is ExceptionName.OUTPUT_MISSING
    assert isinstance(err, ConfigurationError)


async def test_an_output_folder_that_is_not_comfyuis_is_reported_without_a_rerun(
    comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    # The worker looks in a folder ComfyUI does not write to (a volume not shared).
    elsewhere = tmp_path / "not-comfyuis-output"
    elsewhere.mkdir()
    async with executor_for(comfyui_mock, output_dir=elsewhere) as executor:
        with pytest.raises(OutputMissingError) as info:
            await executor.run(save_prompt("missing/x"), prompt_id=PID)
    err = info.value
    assert err.missing == [str(elsewhere / "missing" / "x_00001_.jpg")]
    assert "COMFYUI_OUTPUT_DIR is not ComfyUI's output folder" in str(err)
    assert comfyui_mock.executions(PID) == 1
    assert comfyui_mock.request_count("/free", "POST") == 0


# -- 3: an earlier attempt's finished entry is not this submission -------------------------


async def first_attempt_times_out(
    mock: MockHandle, workflow: dict[str, Any], *, node_delay: float, deadline: float
) -> None:
    """Attempt 1 of PID hits its deadline while a slow blur runs; ComfyUI interrupts it at
    the next node boundary."""
    mock.set_node_delay("ImageBlur", node_delay)
    async with executor_for(mock, job_deadline=deadline) as executor:
        with pytest.raises(JobTimeoutError):
            await executor.run(workflow, prompt_id=PID)


@pytest.mark.parametrize("mode", ["poll", "websocket"])
async def test_retry_after_a_deadline_runs_instead_of_reporting_the_old_failure(
    comfy: Comfy, comfyui_mock: MockHandle, mode: str
) -> None:
    workflow = chain_prompt("stale/x", blurs=2)
    await first_attempt_times_out(comfyui_mock, workflow, node_delay=0.4, deadline=0.2)
    old = await comfy.wait_history(PID)
    assert old["status"]["messages"][-1][0] == "execution_interrupted"
    comfyui_mock.set_node_delay("ImageBlur", 0.0)
    # The retry's first POST /prompt fails before ComfyUI enqueues it.
    comfyui_mock.fail_http(count=1, path="POST /prompt", status=503)
    async with executor_for(comfyui_mock, completion_mode=mode, reconcile_interval=0.2) as retry:
        result = await retry.run(workflow, prompt_id=PID)
    assert Path(result.outputs[0]).is_file() and not result.reused
    assert comfyui_mock.executions(PID) == 2
    assert comfyui_mock.request_count("/prompt", "POST") == 3


# -- 4: attached to a prompt the earlier attempt is interrupting ---------------------------


async def test_retry_attached_to_a_prompt_being_interrupted_runs_it_again(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    workflow = chain_prompt("attach-intr/x", blurs=2)
    await first_attempt_times_out(comfyui_mock, workflow, node_delay=0.8, deadline=0.3)
    # The interrupt lands only at the next node boundary: the prompt is still running.
    assert await _running(comfy, PID)
    notes = Notes()
    async with executor_for(comfyui_mock) as retry:
        result = await retry.run(workflow, prompt_id=PID, observer=notes)
    assert "already running in ComfyUI; attaching to it" in notes.notes
    assert "the prompt attached to was interrupted; submitting it again" in notes.notes
    assert Path(result.outputs[0]).is_file()
    assert comfyui_mock.executions(PID) == 2


class Between(httpx.AsyncBaseTransport):
    """Forwards to the mock; after the first of the deadline's two calls (POST /queue
    delete, POST /interrupt) waits for `gap` before letting the second through."""

    def __init__(self, gap: Callable[[], Awaitable[None]]) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._gap = gap
        self.abandon_calls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if request.method == "POST" and request.url.path in ("/queue", "/interrupt"):
            self.abandon_calls.append(request.url.path)
            if len(self.abandon_calls) == 1:
                await self._gap()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_deadline_deletes_before_interrupting(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    comfyui_mock.set_job_delay(0.6)
    blocker = await comfy.submit_ok(save_prompt("order/blocker", color=7))

    async def blocker_done_and_ours_not_pending() -> None:
        # The moment the race needs: ours would leave the pending list right after.
        await comfy.wait_history(blocker)
        await wait_until(lambda: _not_pending(comfy, PID))

    transport = Between(blocker_done_and_ours_not_pending)
    settings = settings_for(comfyui_mock, job_deadline=0.2)
    client = ComfyUIClient.from_settings(settings, transport=transport)
    async with executor_for(comfyui_mock, client=client, job_deadline=0.2) as executor:
        with pytest.raises(JobTimeoutError):
            await executor.run(save_prompt("order/ours", color=8), prompt_id=PID)
    await comfy.wait_idle()
    assert transport.abandon_calls == ["/queue", "/interrupt"]
    # Removed while pending, so it never ran with nobody waiting for it.
    assert comfyui_mock.executions(PID) == 0 and await comfy.history(PID) == {}


async def _not_pending(comfy: Comfy, prompt_id: str) -> bool:
    return prompt_id not in [item[1] for item in (await comfy.queue())["queue_pending"]]


# -- 5: node_errors of a prompt a retry reuses ---------------------------------------------


async def test_reused_partly_valid_prompt_still_reports_what_did_not_run(
    comfyui_mock: MockHandle, capture: Any
) -> None:
    async with executor_for(comfyui_mock) as executor:
        first = await executor.run(partly_valid(capture), prompt_id=PID)
        again = await executor.run(partly_valid(capture), prompt_id=PID)
    assert [n.node_id for n in first.node_errors] == ["3"]
    assert again.reused and [n.node_id for n in again.node_errors] == ["3"]
    (rebuilt,) = again.to_dict()["node_errors"]
    assert rebuilt["class_type"] == "SaveImage" and rebuilt["dependent_outputs"] == ["3"]
    assert rebuilt["errors"][0]["type"] == "output_not_executed"
    assert again.outputs == first.outputs
    assert comfyui_mock.executions(PID) == 1


async def test_attached_partly_valid_prompt_reports_what_did_not_run(
    comfy: Comfy, comfyui_mock: MockHandle, capture: Any
) -> None:
    comfyui_mock.set_job_delay(0.4)
    async with executor_for(comfyui_mock) as executor:
        first = asyncio.create_task(executor.run(partly_valid(capture), prompt_id=PID))
        await wait_until(lambda: _running(comfy, PID))
        first.cancel()  # the worker shut down; the prompt keeps running
        with pytest.raises(asyncio.CancelledError):
            await first
        result = await executor.run(partly_valid(capture), prompt_id=PID)
    assert result.reused and [n.node_id for n in result.node_errors] == ["3"]
    assert comfyui_mock.executions(PID) == 1


# -- 10: other places an attempt could take stale state ------------------------------------


async def test_prompt_finishing_during_the_resume_check_is_not_run_twice(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.set_job_delay(0.3)
    async with executor_for(comfyui_mock) as executor:
        first = asyncio.create_task(executor.run(save_prompt("race/x"), prompt_id=PID))
        await wait_until(lambda: _running(comfy, PID))
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # The history read is answered late: the prompt finishes between it and the next
        # read, so a check reading history before the queue sees it in neither.
        comfyui_mock.set_response_delay(0.6, path=f"/history/{PID}")
        result = await executor.run(save_prompt("race/x"), prompt_id=PID)
    assert result.reused and Path(result.outputs[0]).is_file()
    assert comfyui_mock.executions(PID) == 1
    assert comfyui_mock.request_count("/prompt", "POST") == 1


async def test_submit_whose_answer_was_lost_still_reports_node_errors(
    comfyui_mock: MockHandle, capture: Any
) -> None:
    # ComfyUI enqueues the prompt but its answer (with node_errors) never arrives in time.
    comfyui_mock.set_response_delay(1.5, path="POST /prompt")
    async with executor_for(comfyui_mock, request_timeout=0.5) as executor:
        result = await executor.run(partly_valid(capture), prompt_id=PID)
    assert [n.node_id for n in result.node_errors] == ["3"]
    assert comfyui_mock.executions(PID) == 1
    assert comfyui_mock.request_count("/prompt", "POST") == 1
    assert json.loads(json.dumps(result.to_dict()))["node_errors"][0]["node_id"] == "3"
