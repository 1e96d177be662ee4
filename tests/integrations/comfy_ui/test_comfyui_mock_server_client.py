"""ComfyUIClient against the mock ComfyUI server: the integration side of tests/unit/test_client.py.

The unit tests replay recorded answers with pytest-httpx; here the same client talks HTTP to a
server that validates, queues and runs prompts, so the request bodies, retries and lookups are
checked against what a ComfyUI actually does with them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from mock_server_helpers import Comfy, chain_prompt, load_capture, save_prompt

from comfyui_mock.handle import MockHandle
from comfyui_worker.comfyui.client import ComfyUIClient
from comfyui_worker.exceptions import (
    MissingNodeError,
    PromptValidationError,
    ServerError,
    TransportError,
)
from mock_settings import settings_for

# Recorded 400s whose request our client can send (it always sends a `prompt`).
VALIDATION_CASES = [
    name
    for name, case in load_capture("06_validation_errors").items()
    if isinstance(case, dict)
    and case.get("prompt_response", {}).get("status") == 400
    and "prompt" in (case.get("request_body") or {})
]


@pytest.fixture
async def client(comfyui_mock: MockHandle) -> AsyncIterator[ComfyUIClient]:
    async with ComfyUIClient.from_settings(settings_for(comfyui_mock)) as c:
        yield c


async def wait_until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.005)


def new_prompt_id() -> str:
    return str(uuid.uuid4())


async def test_submit_sends_our_prompt_id_and_client_id(
    client: ComfyUIClient, comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    pid = new_prompt_id()
    prompt = save_prompt("client/submit", color=1)
    result = await client.submit(prompt, prompt_id=pid, client_id="cid-1")
    assert result.prompt_id == pid and isinstance(result.number, int)
    assert result.node_errors == ()
    # ComfyUI keeps what it was sent in the history entry's `prompt` tuple.
    entry = await comfy.wait_history(pid)
    number, stored_id, stored_prompt, extra_data, outputs = entry["prompt"]
    assert (number, stored_id, stored_prompt) == (result.number, pid, prompt)
    assert extra_data == {"client_id": "cid-1"} and outputs == ["2"]
    assert comfyui_mock.executions(pid) == 1


async def test_submit_400_becomes_validation_error_with_node_errors(
    client: ComfyUIClient, comfyui_mock: MockHandle, capture: Any
) -> None:
    case = capture("06_validation_errors")["loadimage_missing_file"]
    with pytest.raises(PromptValidationError) as info:
        await client.submit(case["request_body"]["prompt"], prompt_id="p", client_id="c")
    err = info.value
    assert err.error_type == "prompt_outputs_failed_validation"
    (node,) = err.node_errors
    assert (node.node_id, node.class_type) == ("1", "LoadImage")
    assert node.errors[0].type == "custom_validation_failed"
    assert node.errors[0].input_name == "image"
    assert "does_not_exist.png" in str(err) and "node 1 (LoadImage)" in str(err)
    assert err.details()["node_errors"][0]["errors"][0]["details"].endswith("does_not_exist.png")
    assert comfyui_mock.request_count("/prompt", "POST") == 1  # a 4xx is never retried
    assert comfyui_mock.request_count("/queue") == 0  # nor looked up as a maybe-enqueued prompt


async def test_unknown_class_type_is_a_missing_node_error(
    client: ComfyUIClient, comfyui_mock: MockHandle, capture: Any
) -> None:
    case = capture("06_validation_errors")["unknown_class_type"]
    with pytest.raises(MissingNodeError) as info:
        await client.submit(case["request_body"]["prompt"], prompt_id="p", client_id="c")
    (node,) = info.value.node_errors
    assert (node.node_id, node.class_type) == ("3", "NoSuchNode")
    assert "NoSuchNode does not exist" in str(info.value)
    assert comfyui_mock.executions("p") == 0


@pytest.mark.parametrize("case", VALIDATION_CASES)
async def test_every_recorded_400_is_a_named_validation_error(
    client: ComfyUIClient, comfyui_mock: MockHandle, capture: Any, case: str
) -> None:
    recorded = capture("06_validation_errors")[case]
    body = recorded["prompt_response"]["body"]
    with pytest.raises(PromptValidationError) as info:
        await client.submit(recorded["request_body"]["prompt"], prompt_id="p", client_id="c")
    assert info.value.error_type == body["error"]["type"]
    assert body["error"]["message"] in str(info.value)
    expected = set(body["node_errors"])
    if isinstance(info.value, MissingNodeError):
        # ComfyUI names the missing node only in `details` ("Node ID '#3'").
        expected = {body["error"]["details"].split("#")[1].rstrip("'")}
    assert {n.node_id for n in info.value.node_errors} == expected
    for node_id in body["node_errors"]:
        assert f"node {node_id} (" in str(info.value)
    assert comfyui_mock.request_count("/prompt", "POST") == 1


async def test_injected_validation_failure_is_a_validation_error(
    client: ComfyUIClient, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.fail_next_validation()
    with pytest.raises(PromptValidationError) as info:
        await client.submit(save_prompt("client/inj"), prompt_id="p", client_id="c")
    assert info.value.error_type == "prompt_outputs_failed_validation"
    (node,) = info.value.node_errors
    assert (node.node_id, node.class_type) == ("2", "SaveImage")
    # The failure was armed for one submit only: the same prompt is accepted next.
    pid = new_prompt_id()
    accepted = await client.submit(save_prompt("client/inj"), prompt_id=pid, client_id="c")
    assert accepted.prompt_id == pid and accepted.node_errors == ()
    assert comfyui_mock.request_count("/prompt", "POST") == 2


async def test_200_with_node_errors_is_reported(
    client: ComfyUIClient, comfy: Comfy, capture: Any
) -> None:
    case = capture("06_validation_errors")["partial_valid_one_good_one_bad_output"]
    pid = new_prompt_id()
    result = await client.submit(case["request_body"]["prompt"], prompt_id=pid, client_id="c")
    (node,) = result.node_errors
    assert node.node_id == "3" and node.errors[0].type == "required_input_missing"
    assert node.errors[0].input_name == "images" and node.dependent_outputs == ("3",)
    # Only the valid output runs.
    entry = await comfy.wait_history(pid)
    assert entry["status"]["status_str"] == "success" and list(entry["outputs"]) == ["2"]


async def test_500_text_plain_is_a_server_error_after_one_retry(
    client: ComfyUIClient, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.fail_http(count=2, path="POST /prompt")
    with pytest.raises(ServerError) as info:
        await client.submit(save_prompt("client/500"), prompt_id="p", client_id="c")
    assert info.value.status_code == 500
    assert "Server got itself in trouble" in str(info.value)
    assert comfyui_mock.request_count("/prompt", "POST") == 2
    # Before the retry the client looked for an earlier enqueue and found none.
    assert comfyui_mock.request_count("/queue", "GET") == 1
    assert comfyui_mock.request_count("/history/p", "GET") == 1
    assert comfyui_mock.executions("p") == 0


async def test_submit_retries_once_on_a_5xx(
    client: ComfyUIClient, comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.fail_http(count=1, path="POST /prompt", status=503)
    pid = new_prompt_id()
    result = await client.submit(save_prompt("client/503"), prompt_id=pid, client_id="c")
    assert result.prompt_id == pid
    assert comfyui_mock.request_count("/prompt", "POST") == 2
    await comfy.wait_history(pid)
    assert comfyui_mock.executions(pid) == 1


async def test_reads_retry_once_on_a_5xx(client: ComfyUIClient, comfyui_mock: MockHandle) -> None:
    comfyui_mock.fail_http(count=1, path="/history/p", status=503)
    assert await client.history("p") is None
    assert comfyui_mock.request_count("/history/p") == 2


async def test_retries_once_on_a_timed_out_request(
    comfyui_mock: MockHandle,
) -> None:
    comfyui_mock.set_response_delay(1.0, path="/queue")
    async with ComfyUIClient.from_settings(settings_for(comfyui_mock, request_timeout=0.2)) as c:
        job = asyncio.create_task(c.queue())
        # The delay is fixed when a request arrives: lifting it now only spares the retry.
        await wait_until(lambda: comfyui_mock.request_count("/queue") == 1)
        comfyui_mock.set_response_delay(0, path="/queue")
        queue = await job
    assert queue.running == () and queue.pending == ()
    assert comfyui_mock.request_count("/queue") == 2


async def test_gives_up_after_the_retries_with_a_transport_error(
    comfyui_mock: MockHandle,
) -> None:
    comfyui_mock.set_response_delay(0.5, path="/queue")
    async with ComfyUIClient.from_settings(settings_for(comfyui_mock, request_timeout=0.1)) as c:
        with pytest.raises(TransportError, match="unreachable"):
            await c.queue()
    assert comfyui_mock.request_count("/queue") == 2  # first try + 1 retry


async def test_never_retries_a_4xx(client: ComfyUIClient, comfyui_mock: MockHandle) -> None:
    comfyui_mock.fail_http(count=2, path="/object_info/SaveImage", status=404)
    with pytest.raises(ServerError) as info:
        await client.object_info("SaveImage")
    assert info.value.status_code == 404
    assert comfyui_mock.request_count("/object_info/SaveImage") == 1


@pytest.mark.parametrize("job_delay", [0.0, 1.0], ids=["finished", "running"])
async def test_submit_retry_does_not_resubmit_an_enqueued_prompt(
    comfy: Comfy, comfyui_mock: MockHandle, job_delay: float
) -> None:
    # The answer to the first POST comes after the client's timeout, the prompt already
    # enqueued: the retry must find it (in history, or still in the queue) instead of posting.
    comfyui_mock.set_job_delay(job_delay)
    comfyui_mock.set_response_delay(0.6, path="POST /prompt")
    pid = new_prompt_id()
    async with ComfyUIClient.from_settings(settings_for(comfyui_mock, request_timeout=0.2)) as c:
        result = await c.submit(save_prompt("client/slow"), prompt_id=pid, client_id="c")
    assert result.prompt_id == pid and result.number is None
    assert comfyui_mock.request_count("/prompt", "POST") == 1
    assert (await comfy.wait_history(pid))["status"]["status_str"] == "success"
    assert comfyui_mock.executions(pid) == 1


async def test_queue_detects_running_and_pending(
    client: ComfyUIClient, comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.set_job_delay(0.4)
    running, pending = new_prompt_id(), new_prompt_id()
    await client.submit(save_prompt("client/q1", color=1), prompt_id=running, client_id="c")
    await client.submit(save_prompt("client/q2", color=2), prompt_id=pending, client_id="c")
    await wait_until(lambda: comfyui_mock.executions(running) == 1)
    queue = await client.queue()
    assert queue.position(running) == "running"
    assert queue.position(pending) == "pending"
    assert queue.position("someone-else") is None
    await comfy.wait_history(pending)
    assert (await client.queue()).position(pending) is None


async def test_interrupt_is_targeted_and_delete_names_the_prompt(
    client: ComfyUIClient, comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.set_node_delay("ImageBlur", 0.2)
    victim, dropped, follower = new_prompt_id(), new_prompt_id(), new_prompt_id()
    await client.submit(chain_prompt("client/victim", blurs=3), prompt_id=victim, client_id="c")
    await client.submit(save_prompt("client/drop", 3), prompt_id=dropped, client_id="c")
    await client.submit(save_prompt("client/follow", 4), prompt_id=follower, client_id="c")
    await wait_until(lambda: comfyui_mock.executions(victim) == 1)

    await client.interrupt(dropped)  # not the running prompt: ComfyUI ignores it
    await client.delete_from_queue([dropped])
    await client.delete_from_queue([victim])  # running: a delete does not touch it
    assert (await client.queue()).position(victim) == "running"
    await client.interrupt(victim)

    entry = await comfy.wait_history(victim)
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert (await comfy.wait_history(follower))["status"]["status_str"] == "success"
    assert comfyui_mock.executions(dropped) == 0 and await client.history(dropped) is None


async def test_history_parses_an_entry(client: ComfyUIClient, comfy: Comfy) -> None:
    pid = new_prompt_id()
    assert await client.history(pid) is None  # `{}` until ComfyUI writes it
    await client.submit(save_prompt("peer/s01", color=5), prompt_id=pid, client_id="c")
    await comfy.wait_history(pid)
    entry = await client.history(pid)
    assert entry is not None and entry.succeeded and entry.prompt_id == pid
    assert entry.outputs["2"]["images"] == [
        {"filename": "s01_00001_.jpg", "subfolder": "peer", "type": "output"}
    ]
    assert [name for name, _ in entry.messages] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]


async def test_system_stats_object_info_and_health(client: ComfyUIClient) -> None:
    stats = await client.system_stats()
    assert stats["system"]["comfyui_version"] == "0.3.64" and stats["devices"]
    save_image = (await client.object_info("SaveImage"))["SaveImage"]
    assert save_image["output_node"] is True and "images" in save_image["input"]["required"]
    everything = await client.object_info()
    assert {"EmptyImage", "SaveImage", "LoadImage"} <= everything.keys()
    assert await client.check_health() is True


async def test_health_is_false_on_a_5xx_without_retrying(
    client: ComfyUIClient, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.fail_http(count=1, path="GET /prompt", status=502)
    assert await client.check_health() is False
    assert comfyui_mock.request_count("/prompt", "GET") == 1
    assert await client.check_health() is True


async def test_health_is_false_while_comfyui_is_down(
    client: ComfyUIClient, comfyui_mock: MockHandle
) -> None:
    restart = asyncio.create_task(asyncio.to_thread(comfyui_mock.restart, 1.0))
    try:
        async with asyncio.timeout(5):
            while await client.check_health():
                await asyncio.sleep(0.01)
    finally:
        await restart
    assert await client.check_health() is True
