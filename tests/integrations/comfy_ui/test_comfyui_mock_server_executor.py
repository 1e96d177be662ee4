"""Executor against the mock ComfyUI server: the integration side of tests/unit/test_execution.py.

The unit tests script each answer; here the real Executor drives a server that queues, runs,
interrupts, restarts and drops sockets, so what is checked is what happens in ComfyUI: which
prompts ran and how often, what the queue and history say afterwards, and that the returned
paths are files on disk.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from mock_server_helpers import Comfy, chain_prompt, open_ws, read_until_done, save_prompt

from comfyui_mock.catalogue import FIXTURE_IMAGE
from comfyui_mock.handle import MockHandle
from comfyui_worker.comfyui.events import Event
from comfyui_worker.exceptions import (
    ExecutionError,
    ExecutionInterrupted,
    InvalidWorkflowError,
    JobTimeoutError,
    PromptLostError,
)
from comfyui_worker.execution import JobObserver
from mock_settings import executor_for

PID = "11111111-2222-3333-4444-555555555555"


class Recorder(JobObserver):
    """Keeps the job's notes and the websocket events it was shown."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.events: list[Event] = []
        self.at_node: dict[str, asyncio.Event] = {}

    def note(self, prompt_id: str, message: str) -> None:
        super().note(prompt_id, message)
        self.notes.append(message)

    def event(self, prompt_id: str, event: Event) -> None:
        self.events.append(event)
        if event.type == "executing" and (node := event.data.get("node")) is not None:
            self.reached(str(node)).set()

    def reached(self, node: str) -> asyncio.Event:
        return self.at_node.setdefault(node, asyncio.Event())

    def saw_done_signal(self, prompt_id: str) -> bool:
        return any(e.is_done_signal(prompt_id) for e in self.events)


async def wait_until_running(comfy: Comfy, prompt_id: str) -> list[Any]:
    """The queue item of `prompt_id` once ComfyUI is running it."""
    async with asyncio.timeout(10):
        while True:
            running = (await comfy.queue())["queue_running"]
            if running and running[0][1] == prompt_id:
                item: list[Any] = running[0]
                return item
            await asyncio.sleep(0.005)


async def max_queue_while(comfy: Comfy, jobs: asyncio.Future[Any]) -> int:
    """The most prompts ComfyUI held (running + pending) at any sample while `jobs` ran."""
    seen = 0
    while not jobs.done():
        remaining = (await comfy.http.get("/prompt")).json()["exec_info"]["queue_remaining"]
        seen = max(seen, remaining)
        await asyncio.sleep(0.005)
    return seen


def preview_workflow() -> dict[str, Any]:
    """One saved image, one temp preview and one text, to check every kind of result."""
    workflow = save_prompt("peer/s01", color=1)
    workflow["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
    workflow["4"] = {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}}
    workflow["5"] = {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}
    return workflow


# -- results -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["poll", "websocket"])
async def test_returns_resolved_paths_of_files_that_exist(
    comfyui_mock: MockHandle, mode: str
) -> None:
    recorder = Recorder()
    async with executor_for(comfyui_mock, completion_mode=mode) as executor:
        result = await executor.run(preview_workflow(), observer=recorder)
    saved = comfyui_mock.output_dir / "peer" / "s01_00001_.jpg"
    (preview,) = comfyui_mock.temp_dir.iterdir()
    assert result.outputs == [str(saved), str(preview)]
    for path in result.outputs:
        assert Path(path).read_bytes() == FIXTURE_IMAGE.read_bytes()
    body = result.to_dict()
    assert json.loads(json.dumps(body)) == body
    assert body["status"] == "success" and body["reused"] is False
    assert body["node_errors"] == []
    assert body["files"] == [
        {
            "node_id": "2",
            "key": "images",
            "filename": "s01_00001_.jpg",
            "subfolder": "peer",
            "type": "output",
            "path": str(saved),
        },
        {
            "node_id": "3",
            "key": "images",
            "filename": preview.name,
            "subfolder": "",
            "type": "temp",
            "path": str(preview),
        },
    ]
    assert body["texts"] == [{"node_id": "5", "key": "text", "text": "64"}]
    assert comfyui_mock.executions(result.prompt_id) == 1
    if mode == "poll":
        assert comfyui_mock.request_count("/ws") == 0
    else:
        # The done signal ended the wait: no resume check (no prompt_id given), no polling.
        assert comfyui_mock.request_count("/ws") == 1
        assert recorder.saw_done_signal(result.prompt_id)
        assert comfyui_mock.request_count("/queue", "GET") == 0


async def test_a_symlinked_output_folder_stays_in_the_returned_paths(
    comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    # The volume is mounted elsewhere and linked to where every task expects it.
    link = tmp_path / "comfyui-output"
    link.symlink_to(comfyui_mock.output_dir)
    async with executor_for(comfyui_mock, output_dir=link) as executor:
        result = await executor.run(save_prompt("linked/x"))
    assert result.outputs == [str(link / "linked" / "x_00001_.jpg")]
    assert Path(result.outputs[0]).is_file()


async def test_200_with_node_errors_runs_the_valid_outputs(
    comfyui_mock: MockHandle, capture: Any
) -> None:
    case = capture("06_validation_errors")["partial_valid_one_good_one_bad_output"]
    async with executor_for(comfyui_mock) as executor:
        result = await executor.run(case["request_body"]["prompt"])
    (node_error,) = result.node_errors
    assert node_error.node_id == "3" and node_error.errors[0].type == "required_input_missing"
    assert result.to_dict()["node_errors"][0]["class_type"] == "SaveImage"
    assert [f.node_id for f in result.files] == ["2"]
    assert Path(result.outputs[0]).is_file()


# -- failures ----------------------------------------------------------------------------


async def test_deadline_interrupts_the_running_prompt(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.set_node_delay("ImageBlur", 0.4)
    started = time.monotonic()
    async with executor_for(comfyui_mock, job_deadline=0.3) as executor:
        with pytest.raises(TimeoutError) as info:
            await executor.run(chain_prompt("deadline/run", blurs=3), prompt_id=PID)
    # The whole chain takes 1.2 s: the job gave up at its deadline, not at the end.
    assert time.monotonic() - started < 1.0
    assert isinstance(info.value, JobTimeoutError) and "0.3 s deadline" in str(info.value)
    entry = await comfy.wait_history(PID)
    assert entry["status"]["status_str"] == "error"
    event, data = entry["status"]["messages"][-1]
    assert event == "execution_interrupted" and data["node_type"] == "ImageBlur"
    assert "99" not in data["executed"] and entry["outputs"] == {}
    await comfy.wait_idle()
    assert comfyui_mock.executions(PID) == 1
    assert comfyui_mock.request_count("/interrupt", "POST") == 1
    assert not (comfyui_mock.output_dir / "deadline").exists()


async def test_deadline_drops_a_pending_prompt_from_the_queue(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.set_job_delay(0.6)
    blocker = await comfy.submit_ok(save_prompt("deadline/blocker", color=2))
    async with executor_for(comfyui_mock, job_deadline=0.2) as executor:
        with pytest.raises(JobTimeoutError):
            await executor.run(save_prompt("deadline/pending", color=3), prompt_id=PID)
    queue = await comfy.queue()
    assert [item[1] for item in queue["queue_running"]] == [blocker]
    assert queue["queue_pending"] == []
    # The prompt ahead is left alone; ours never runs and leaves no trace.
    assert (await comfy.wait_history(blocker))["status"]["status_str"] == "success"
    assert comfyui_mock.executions(PID) == 0 and await comfy.history(PID) == {}


@pytest.mark.parametrize("mode", ["poll", "websocket"])
async def test_prompt_lost_in_a_comfyui_restart_mid_job(
    comfy: Comfy, comfyui_mock: MockHandle, mode: str
) -> None:
    comfyui_mock.set_job_delay(1.0)
    recorder = Recorder()
    async with executor_for(comfyui_mock, completion_mode=mode) as executor:
        job = asyncio.create_task(
            executor.run(save_prompt("lost/x"), prompt_id=PID, observer=recorder)
        )
        await wait_until_running(comfy, PID)
        await asyncio.to_thread(comfyui_mock.restart)
        with pytest.raises(PromptLostError, match="restarted") as info:
            await job
    assert info.value.prompt_id == PID
    assert comfyui_mock.executions(PID) == 1
    if mode == "websocket":
        # The restart closed the socket; the reconnect's reconciliation found nothing.
        assert "websocket dropped; reconnected" in recorder.notes


async def test_execution_error_carries_comfyuis_fields(comfyui_mock: MockHandle) -> None:
    comfyui_mock.fail_node(
        "ImageInvert",
        message="cannot identify image file",
        exception_type="PIL.UnidentifiedImageError",
    )
    workflow = save_prompt("err/ok", color=4)
    workflow["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
    workflow["4"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["3", 0], "filename_prefix": "err/bad"},
    }
    async with executor_for(comfyui_mock) as executor:
        with pytest.raises(ExecutionError) as info:
            await executor.run(workflow, prompt_id=PID)
    err = info.value
    assert (err.prompt_id, err.node_id, err.node_type) == (PID, "3", "ImageInvert")
    assert err.exception_type == "PIL.UnidentifiedImageError"
    assert err.exception_message.strip() == "cannot identify image file"
    assert err.traceback and all(isinstance(line, str) for line in err.traceback)
    assert "node 3 (ImageInvert) failed" in str(err)
    assert err.details()["traceback"] == err.traceback[-5:]


async def test_interrupted_prompt(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    comfyui_mock.set_node_delay("ImageBlur", 0.2)
    recorder = Recorder()
    async with executor_for(comfyui_mock) as executor:
        job = asyncio.create_task(
            executor.run(chain_prompt("intr/x", blurs=3), prompt_id=PID, observer=recorder)
        )
        async with asyncio.timeout(10):
            await recorder.reached("10").wait()
        # Someone else (a user in ComfyUI's UI) interrupts it: it stops at the next node.
        await comfy.http.post("/interrupt", json={"prompt_id": PID})
        with pytest.raises(ExecutionInterrupted, match="interrupted at node 11 ") as info:
            await job
    assert (info.value.node_id, info.value.node_type) == ("11", "ImageBlur")


async def test_invalid_workflow_never_reaches_comfyui(comfyui_mock: MockHandle) -> None:
    async with executor_for(comfyui_mock) as executor:
        with pytest.raises(InvalidWorkflowError, match="has no class_type"):
            await executor.run({"1": {"inputs": {}}})
    assert comfyui_mock.request_count("/prompt", "POST") == 0
    assert comfyui_mock.request_counts() == {}


# -- attaching to an earlier attempt ---------------------------------------------------


async def test_earlier_success_is_reused_without_submitting(comfyui_mock: MockHandle) -> None:
    async with executor_for(comfyui_mock) as executor:
        first = await executor.run(save_prompt("reuse/x"), prompt_id=PID)
        again = await executor.run(save_prompt("reuse/x"), prompt_id=PID)
    assert not first.reused and again.reused
    assert again.prompt_id == PID and again.outputs == first.outputs
    assert Path(again.outputs[0]).is_file()
    assert comfyui_mock.executions(PID) == 1
    assert comfyui_mock.request_count("/prompt", "POST") == 1
    # The second job opened its socket while it looked for the earlier prompt, and closed
    # it unused once it found the prompt finished.
    assert comfyui_mock.request_count("/ws") == 2


async def test_running_prompt_is_attached_to(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    comfyui_mock.set_job_delay(0.5)
    async with executor_for(comfyui_mock) as executor:
        # The first attempt's worker is shut down mid-job; its prompt keeps running.
        first = asyncio.create_task(executor.run(save_prompt("attach/x"), prompt_id=PID))
        await wait_until_running(comfy, PID)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        recorder = Recorder()
        result = await executor.run(save_prompt("attach/x"), prompt_id=PID, observer=recorder)
    assert result.reused and Path(result.outputs[0]).is_file()
    assert "already running in ComfyUI; attaching to it" in recorder.notes
    assert comfyui_mock.executions(PID) == 1
    assert comfyui_mock.request_count("/prompt", "POST") == 1


async def test_earlier_failure_is_resubmitted(comfyui_mock: MockHandle) -> None:
    comfyui_mock.fail_node("SaveImage", times=1)
    async with executor_for(comfyui_mock) as executor:
        with pytest.raises(ExecutionError):
            await executor.run(save_prompt("again/x"), prompt_id=PID)
        result = await executor.run(save_prompt("again/x"), prompt_id=PID)
    assert not result.reused and Path(result.outputs[0]).is_file()
    assert comfyui_mock.executions(PID) == 2
    assert comfyui_mock.request_count("/prompt", "POST") == 2


# -- websocket ---------------------------------------------------------------------------


async def test_websocket_done_signal_filters_other_prompts(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    # A prompt queued ahead without a client_id broadcasts its progress and text previews
    # (binary frames) to every socket, ours included.
    comfyui_mock.set_progress_steps(2)
    comfyui_mock.set_job_delay(0.2)
    other = preview_workflow()
    other["2"]["inputs"]["filename_prefix"] = "other/x"
    foreign = await comfy.submit_ok(other)
    recorder = Recorder()
    async with executor_for(comfyui_mock) as executor:
        result = await executor.run(save_prompt("mine/x"), observer=recorder)
    pid = result.prompt_id
    assert (await comfy.history(foreign))[foreign]["status"]["status_str"] == "success"
    assert recorder.events and all(e.prompt_id == pid for e in recorder.events)
    assert [e.data["value"] for e in recorder.events if e.type == "progress"] == [1, 2, 1, 2]
    assert recorder.saw_done_signal(pid)
    assert comfyui_mock.request_count("/queue", "GET") == 0
    assert comfyui_mock.request_count(f"/history/{pid}", "GET") == 1


async def test_websocket_drop_reconnects_and_the_job_still_succeeds(
    comfyui_mock: MockHandle,
) -> None:
    comfyui_mock.set_job_delay(0.6)
    comfyui_mock.drop_websockets(after_event="executing")
    recorder = Recorder()
    async with executor_for(comfyui_mock) as executor:
        result = await executor.run(save_prompt("drop/x"), prompt_id=PID, observer=recorder)
    assert Path(result.outputs[0]).is_file() and not result.reused
    assert "websocket dropped; reconnected" in recorder.notes
    assert comfyui_mock.request_count("/ws") == 2
    # The reconnected socket (same client id) delivered the rest, done signal included.
    assert recorder.saw_done_signal(PID)
    assert comfyui_mock.executions(PID) == 1


async def test_deaf_websocket_is_caught_by_reconciliation(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.set_job_delay(0.6)
    recorder = Recorder()
    async with executor_for(comfyui_mock, reconcile_interval=0.2) as executor:
        job = asyncio.create_task(
            executor.run(save_prompt("deaf/x"), prompt_id=PID, observer=recorder)
        )
        client_id = (await wait_until_running(comfy, PID))[3]["client_id"]
        # A second socket on the worker's client id takes its events (captures/19).
        thief, _ = await open_ws(comfyui_mock.url, client_id)
        try:
            result = await job
            stolen = await read_until_done(thief, PID)
        finally:
            await thief.close()
    assert Path(result.outputs[0]).is_file()
    assert not recorder.saw_done_signal(PID)
    assert any(m["type"] == "execution_success" for m in stolen)
    assert comfyui_mock.request_count("/queue", "GET") >= 2  # resume check + reconciliation


async def test_unusable_websocket_falls_back_to_polling(comfyui_mock: MockHandle) -> None:
    comfyui_mock.fail_http(count=1, path="/ws")
    recorder = Recorder()
    async with executor_for(comfyui_mock) as executor:
        result = await executor.run(save_prompt("poll/x"), observer=recorder)
    assert Path(result.outputs[0]).is_file()
    assert any(n.endswith("falling back to polling") for n in recorder.notes)
    assert recorder.events == []
    assert comfyui_mock.request_count("/ws") == 1
    assert comfyui_mock.request_count("/queue", "GET") >= 1


# -- several jobs --------------------------------------------------------------------------


async def test_concurrent_runs_get_distinct_existing_files(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    # Identical workflows: without the cache every run writes its own file.
    comfyui_mock.set_cache_enabled(False)
    comfyui_mock.set_job_delay(0.05)
    async with executor_for(comfyui_mock, max_in_flight=4) as executor:
        jobs = asyncio.gather(*(executor.run(save_prompt("many/x")) for _ in range(6)))
        most = await max_queue_while(comfy, jobs)
        results = await jobs
    paths = [r.outputs[0] for r in results]
    assert len(set(paths)) == 6 and all(Path(p).is_file() for p in paths)
    assert len({r.prompt_id for r in results}) == 6
    assert all(comfyui_mock.executions(r.prompt_id) == 1 for r in results)
    assert 2 <= most <= 4


async def test_in_flight_limit_is_process_wide(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    comfyui_mock.set_job_delay(0.15)
    async with executor_for(comfyui_mock, max_in_flight=1) as executor:
        jobs = asyncio.gather(*(executor.run(save_prompt("limit/x", color=c)) for c in range(3)))
        most = await max_queue_while(comfy, jobs)
        results = await jobs
    # The other jobs waited in the worker, not in ComfyUI's queue.
    assert most == 1
    assert all(Path(r.outputs[0]).is_file() for r in results)
    assert comfyui_mock.request_count("/prompt", "POST") == 3
