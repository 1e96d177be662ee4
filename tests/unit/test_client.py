"""ComfyUIClient against recorded ComfyUI answers (pytest-httpx)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from comfyui_worker.comfyui.client import ComfyUIClient
from comfyui_worker.exceptions import (
    MissingNodeError,
    NotComfyUIError,
    PromptValidationError,
    ProtocolError,
    ServerError,
    TransportError,
)
from comfyui_worker.retrying import Backoff

BASE = "http://comfy.test:8188"
NO_WAIT = Backoff(first=0, maximum=0, attempts=2)  # one retry


@pytest.fixture
async def client() -> Any:
    async with ComfyUIClient(BASE, timeout=2, retry=NO_WAIT) as c:
        yield c


async def test_submit_sends_our_prompt_id_and_client_id(
    client: ComfyUIClient, httpx_mock: HTTPXMock, capture: Any
) -> None:
    recorded = capture("01_empty_image_save")
    pid = recorded["prompt_response"]["body"]["prompt_id"]
    httpx_mock.add_response(
        method="POST", url=f"{BASE}/prompt", json=recorded["prompt_response"]["body"]
    )
    result = await client.submit(
        recorded["request_body"]["prompt"], prompt_id=pid, client_id="cid-1"
    )
    assert result.prompt_id == pid and result.number == 1 and result.node_errors == ()
    sent = httpx_mock.get_request()
    assert sent is not None
    body = __import__("json").loads(sent.content)
    assert body["prompt_id"] == pid and body["client_id"] == "cid-1"
    assert body["prompt"] == recorded["request_body"]["prompt"]


async def test_submit_fails_clearly_without_prompt_id(
    client: ComfyUIClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(method="POST", url=f"{BASE}/prompt", json={"number": 3})
    with pytest.raises(ProtocolError, match="without a prompt_id"):
        await client.submit({"1": {"class_type": "X", "inputs": {}}}, prompt_id="p", client_id="c")


async def test_submit_400_becomes_validation_error_with_node_errors(
    client: ComfyUIClient, httpx_mock: HTTPXMock, capture: Any
) -> None:
    case = capture("06_validation_errors")["loadimage_missing_file"]
    httpx_mock.add_response(
        method="POST", url=f"{BASE}/prompt", status_code=400, json=case["prompt_response"]["body"]
    )
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
    assert len(httpx_mock.get_requests()) == 1  # a 4xx is never retried


async def test_unknown_class_type_is_a_missing_node_error(
    client: ComfyUIClient, httpx_mock: HTTPXMock, capture: Any
) -> None:
    case = capture("06_validation_errors")["unknown_class_type"]
    httpx_mock.add_response(
        method="POST", url=f"{BASE}/prompt", status_code=400, json=case["prompt_response"]["body"]
    )
    with pytest.raises(MissingNodeError) as info:
        await client.submit(case["request_body"]["prompt"], prompt_id="p", client_id="c")
    (node,) = info.value.node_errors
    assert (node.node_id, node.class_type) == ("3", "NoSuchNode")
    assert "NoSuchNode does not exist" in str(info.value)


@pytest.mark.parametrize(
    "case",
    [
        "missing_class_type",
        "no_output_nodes",
        "empty_prompt_dict",
        "no_prompt_key",
        "bad_linked_input",
        "return_type_mismatch",
        "combo_value_not_in_list",
    ],
)
async def test_every_recorded_400_is_a_named_validation_error(
    client: ComfyUIClient, httpx_mock: HTTPXMock, capture: Any, case: str
) -> None:
    recorded = capture("06_validation_errors")[case]
    body = recorded["prompt_response"]["body"]
    httpx_mock.add_response(method="POST", url=f"{BASE}/prompt", status_code=400, json=body)
    with pytest.raises(PromptValidationError) as info:
        await client.submit({"1": {"class_type": "X", "inputs": {}}}, prompt_id="p", client_id="c")
    assert info.value.error_type == body["error"]["type"]
    assert body["error"]["message"] in str(info.value)
    for node_id in body["node_errors"]:
        assert f"node {node_id} (" in str(info.value)


async def test_200_with_node_errors_is_reported(
    client: ComfyUIClient, httpx_mock: HTTPXMock, capture: Any
) -> None:
    case = capture("06_validation_errors")["partial_valid_one_good_one_bad_output"]
    body = case["prompt_response"]["body"]
    httpx_mock.add_response(method="POST", url=f"{BASE}/prompt", json=body)
    result = await client.submit(
        case["request_body"]["prompt"], prompt_id=body["prompt_id"], client_id="c"
    )
    (node,) = result.node_errors
    assert node.node_id == "3" and node.errors[0].type == "required_input_missing"


async def test_500_text_plain_is_not_parsed_as_json(httpx_mock: HTTPXMock, capture: Any) -> None:
    case = capture("06_validation_errors")["malformed_json_body"]
    text = case["prompt_response"]["body_text"]
    httpx_mock.add_response(
        method="POST",
        url=f"{BASE}/prompt",
        status_code=500,
        text=text,
        headers={"Content-Type": "text/plain; charset=utf-8"},
        is_reusable=True,
    )
    httpx_mock.add_response(
        method="GET", url=f"{BASE}/queue", json={"queue_running": [], "queue_pending": []}
    )
    httpx_mock.add_response(method="GET", url=f"{BASE}/history/p", json={})
    async with ComfyUIClient(BASE, retry=NO_WAIT) as client:
        with pytest.raises(ServerError) as info:
            await client.submit({"1": {"class_type": "X"}}, prompt_id="p", client_id="c")
    assert info.value.status_code == 500
    assert "Server got itself in trouble" in str(info.value)


async def test_retries_once_on_a_request_error(
    client: ComfyUIClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_exception(httpx.ConnectError("refused"), url=f"{BASE}/queue")
    httpx_mock.add_response(url=f"{BASE}/queue", json={"queue_running": [], "queue_pending": []})
    assert (await client.queue()).position("x") is None
    assert len(httpx_mock.get_requests()) == 2


async def test_retries_once_on_a_5xx(client: ComfyUIClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/history/p", status_code=503, text="busy")
    httpx_mock.add_response(url=f"{BASE}/history/p", json={})
    assert await client.history("p") is None
    assert len(httpx_mock.get_requests()) == 2


async def test_gives_up_after_the_retries_with_a_transport_error(
    client: ComfyUIClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), url=f"{BASE}/queue", is_reusable=True)
    with pytest.raises(TransportError, match="unreachable"):
        await client.queue()
    assert len(httpx_mock.get_requests()) == 2  # first try + 1 retry


async def test_never_retries_a_4xx(client: ComfyUIClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/object_info/Nope", status_code=404, text="nope")
    with pytest.raises(ServerError) as info:
        await client.object_info("Nope")
    assert info.value.status_code == 404
    assert len(httpx_mock.get_requests()) == 1


async def test_submit_retry_does_not_resubmit_an_enqueued_prompt(
    client: ComfyUIClient, httpx_mock: HTTPXMock
) -> None:
    # The first POST timed out after ComfyUI had enqueued it.
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), method="POST", url=f"{BASE}/prompt")
    httpx_mock.add_response(
        url=f"{BASE}/queue", json={"queue_running": [[7, "p", {}, {}, ["2"]]], "queue_pending": []}
    )
    result = await client.submit({"1": {"class_type": "X"}}, prompt_id="p", client_id="c")
    assert result.prompt_id == "p"
    posts = [r for r in httpx_mock.get_requests() if r.method == "POST"]
    assert len(posts) == 1


async def test_queue_detects_running_and_pending(
    client: ComfyUIClient, httpx_mock: HTTPXMock, capture: Any
) -> None:
    recorded = capture("08_interrupt_and_queue_delete")["queue_while_running"]["body"]
    running_id = recorded["queue_running"][0][1]
    pending_ids = [item[1] for item in recorded["queue_pending"]]
    httpx_mock.add_response(url=f"{BASE}/queue", json=recorded)
    queue = await client.queue()
    assert queue.position(running_id) == "running"
    assert pending_ids and all(queue.position(p) == "pending" for p in pending_ids)
    assert queue.position("someone-else") is None


@pytest.mark.parametrize("garbage", [b"[1, 2", b"\xff\xfe"])
async def test_garbage_from_comfyui_is_a_protocol_error(
    client: ComfyUIClient, httpx_mock: HTTPXMock, garbage: bytes
) -> None:
    httpx_mock.add_response(url=f"{BASE}/queue", content=garbage)
    with pytest.raises(ProtocolError, match="non-JSON"):
        await client.queue()


PAGE = (
    "<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head><body>"
    + "<p>If you see this page, the nginx web server is successfully installed.</p>" * 20
    + "</body></html>"
)


@pytest.mark.parametrize(
    ("status", "headers", "body", "excerpt"),
    [
        (200, {"content-type": "text/html"}, PAGE, "'Welcome to nginx!'"),
        (404, {"content-type": "text/html"}, PAGE, "'Welcome to nginx!'"),
        # Answered to the submission, where ComfyUI's 400 is its validation error.
        (400, {"content-type": "text/html"}, PAGE, "'Welcome to nginx!'"),
        (403, {}, "<html><body><h1>Forbidden</h1> " + "go away " * 40, "'Forbidden go away"),
    ],
)
async def test_an_html_page_says_this_is_not_comfyui_in_a_few_words(
    client: ComfyUIClient,
    httpx_mock: HTTPXMock,
    status: int,
    headers: dict[str, str],
    body: str,
    excerpt: str,
) -> None:
    httpx_mock.add_response(
        method="POST", url=f"{BASE}/prompt", status_code=status, headers=headers, text=body
    )
    with pytest.raises(NotComfyUIError) as raised:
        await client.submit({"1": {"class_type": "X"}}, prompt_id="p", client_id="c")
    message = str(raised.value)
    assert message.startswith(
        f"POST /prompt: this is not ComfyUI (is COMFYUI_BASE_URL right?): the server "
        f"answered HTTP {status} with an HTML page: {excerpt}"
    )
    assert len(message) < 200 and "<" not in message, message
    assert len(httpx_mock.get_requests()) == 1  # no second try: it would be the same page


async def test_a_proxy_error_page_is_a_server_error_retried_like_any_5xx(
    client: ComfyUIClient, httpx_mock: HTTPXMock
) -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    httpx_mock.add_response(url=f"{BASE}/queue", status_code=502, html=page, is_reusable=True)
    with pytest.raises(ServerError) as raised:
        await client.queue()
    assert raised.value.status_code == 502
    assert str(raised.value).endswith("answered HTTP 502 with an HTML page: '502 Bad Gateway'")
    assert len(httpx_mock.get_requests()) == 2


async def test_wrong_shapes_are_protocol_errors(
    client: ComfyUIClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=f"{BASE}/queue", json={"running": []})
    httpx_mock.add_response(url=f"{BASE}/history/p", json=["p"])
    with pytest.raises(ProtocolError, match="/queue"):
        await client.queue()
    with pytest.raises(ProtocolError, match="/history/p"):
        await client.history("p")


async def test_interrupt_is_targeted_and_delete_names_the_prompt(
    client: ComfyUIClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(method="POST", url=f"{BASE}/interrupt")
    httpx_mock.add_response(method="POST", url=f"{BASE}/queue")
    await client.interrupt("p1")
    await client.delete_from_queue(["p1"])
    interrupt, delete = httpx_mock.get_requests()
    assert interrupt.content == b'{"prompt_id":"p1"}'
    assert delete.content == b'{"delete":["p1"]}'


async def test_history_parses_a_recorded_entry(
    client: ComfyUIClient, httpx_mock: HTTPXMock, capture: Any
) -> None:
    body = capture("01_empty_image_save")["history_after"]["body"]
    (pid,) = body
    httpx_mock.add_response(url=f"{BASE}/history/{pid}", json=body)
    entry = await client.history(pid)
    assert entry is not None and entry.succeeded
    assert entry.outputs["2"]["images"][0]["filename"] == "s01_00001_.png"


async def test_system_stats_object_info_and_health(
    client: ComfyUIClient, httpx_mock: HTTPXMock, capture: Any
) -> None:
    stats = capture("00_server_info")["/system_stats"]["body"]
    assert stats["system"]["comfyui_version"]
    httpx_mock.add_response(url=f"{BASE}/system_stats", json=stats, is_reusable=True)
    httpx_mock.add_response(url=f"{BASE}/object_info/SaveImage", json={"SaveImage": {}})
    assert await client.system_stats() == stats
    assert "SaveImage" in await client.object_info("SaveImage")
    httpx_mock.add_response(url=f"{BASE}/prompt", json={"exec_info": {"queue_remaining": 3}})
    assert await client.check_health() is True


@pytest.mark.parametrize(
    ("answer", "remaining"),
    [
        ({"json": {"exec_info": {"queue_remaining": 4}}}, 4),
        ({"json": {"exec_info": {"queue_remaining": 0}}}, 0),
        # Not ComfyUI: a page, or some other JSON at its address.
        ({"text": "<html>nginx</html>", "headers": {"content-type": "text/html"}}, None),
        ({"json": {"status": "ok"}}, None),
        ({"status_code": 502}, None),
    ],
)
async def test_queue_remaining_reads_exec_info_or_says_none(
    client: ComfyUIClient, httpx_mock: HTTPXMock, answer: dict[str, Any], remaining: int | None
) -> None:
    httpx_mock.add_response(url=f"{BASE}/prompt", method="GET", **answer)
    assert await client.queue_remaining() == remaining


async def test_health_is_false_when_unreachable(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ConnectError("refused"), is_reusable=True)
    async with ComfyUIClient(BASE, retry=NO_WAIT) as client:
        assert await client.check_health() is False


def test_a_request_is_never_retried_without_bound() -> None:
    with pytest.raises(ValueError, match="bounded number of attempts"):
        ComfyUIClient(BASE, retry=Backoff(first=0.5, maximum=10.0))
