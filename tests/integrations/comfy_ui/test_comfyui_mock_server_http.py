"""HTTP surface: validation errors, 500s, /view and /upload rules, injected faults, counters."""

from __future__ import annotations

import time

import pytest
from mock_server_helpers import Comfy, load_capture, save_prompt

from comfyui_mock.handle import MockHandle

INTERNAL_ERROR = "500 Internal Server Error\n\nServer got itself in trouble"
PNG = bytes.fromhex("89504e470d0a1a0a") + b"fake png body"


@pytest.mark.parametrize(
    "case",
    [
        "unknown_class_type",
        "missing_class_type",
        "missing_required_input",
        "value_bigger_than_max",
        "value_smaller_than_min_and_bad_type",
        "combo_value_not_in_list",
        "loadimage_missing_file",
        "return_type_mismatch",
        "bad_linked_input",
        "no_output_nodes",
        "empty_prompt_dict",
        "no_prompt_key",
    ],
)
async def test_validation_errors_match_the_real_bodies(comfy: Comfy, case: str) -> None:
    """Apart from ids these bodies are deterministic, so they must match byte for byte."""
    recorded = load_capture("06_validation_errors")[case]
    response = await comfy.http.post("/prompt", json=recorded["request_body"])
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json() == recorded["prompt_response"]["body"]


async def test_link_to_missing_node_is_an_exception_during_validation(comfy: Comfy) -> None:
    recorded = load_capture("06_validation_errors")["link_to_missing_node_exception"]
    response = await comfy.http.post("/prompt", json=recorded["request_body"])
    body = response.json()
    (reason,) = body["node_errors"]["2"]["errors"]
    assert response.status_code == 400
    assert body["error"] == recorded["prompt_response"]["body"]["error"]
    assert reason["type"] == "exception_during_validation" and reason["details"] == "'42'"
    assert reason["extra_info"]["exception_type"] == "KeyError"


async def test_partly_valid_prompt_runs_the_valid_output(comfy: Comfy) -> None:
    recorded = load_capture("06_validation_errors")["partial_valid_one_good_one_bad_output"]
    response = await comfy.http.post("/prompt", json=recorded["request_body"])
    assert response.status_code == 200
    body = response.json()
    assert body["node_errors"] == recorded["prompt_response"]["body"]["node_errors"]
    entry = await comfy.wait_history(body["prompt_id"])
    assert entry["prompt"][4] == ["2"] and list(entry["outputs"]) == ["2"]


@pytest.mark.parametrize(
    "content", [b"{not json", b'{"prompt": [1, 2, 3]}', b'{"prompt": {}, "extra_data": "x"}', b"7"]
)
async def test_malformed_bodies_answer_500_text_plain(comfy: Comfy, content: bytes) -> None:
    response = await comfy.http.post("/prompt", content=content)
    assert response.status_code == 500
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == INTERNAL_ERROR


async def test_prompt_numbers_count_every_post(comfy: Comfy) -> None:
    await comfy.http.post("/prompt", json={"client_id": "x"})  # 400, still takes a number
    response = await comfy.submit(save_prompt("num/x", 1))
    assert response.json()["number"] == 1
    front = await comfy.submit(save_prompt("num/y", 2), front=True)
    assert front.json()["number"] == -2


async def test_injected_validation_failure_then_normal(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.fail_next_validation()
    failed = await comfy.submit(save_prompt("inj/x", 3))
    assert failed.status_code == 400
    body = failed.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["2"]["errors"][0]["type"] == "custom_validation_failed"
    assert body["node_errors"]["2"]["class_type"] == "SaveImage"
    assert (await comfy.submit(save_prompt("inj/x", 3))).status_code == 200


async def test_injected_http_errors_per_path_and_count(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.fail_http(count=2, path="/prompt")
    comfyui_mock.fail_http(count=1, path="/queue", status=503)
    assert (await comfy.http.get("/history")).status_code == 200
    for _ in range(2):
        failed = await comfy.http.get("/api/prompt")
        assert failed.status_code == 500 and failed.text == INTERNAL_ERROR
    assert (await comfy.http.get("/prompt")).status_code == 200
    unavailable = await comfy.http.get("/queue")
    assert unavailable.status_code == 503 and unavailable.headers["content-type"].startswith(
        "text/plain"
    )
    assert (await comfy.http.get("/queue")).status_code == 200
    comfyui_mock.fail_http(count=1)
    assert (await comfy.http.get("/system_stats")).status_code == 500
    assert (await comfy.http.post("/prompt", json={"prompt": save_prompt()})).status_code == 200
    # One method only: the readiness check's GET /prompt is not a submission.
    comfyui_mock.fail_http(count=1, path="POST /prompt", status=503)
    assert (await comfy.http.get("/prompt")).status_code == 200
    assert (await comfy.http.post("/prompt", json={"prompt": save_prompt()})).status_code == 503
    assert (await comfy.http.post("/prompt", json={"prompt": save_prompt()})).status_code == 200


async def test_slow_responses(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    comfyui_mock.set_response_delay(0.3, path="/system_stats")
    started = time.monotonic()
    assert (await comfy.http.get("/prompt")).status_code == 200
    assert time.monotonic() - started < 0.25
    started = time.monotonic()
    assert (await comfy.http.get("/system_stats")).status_code == 200
    assert time.monotonic() - started >= 0.3


async def test_request_counters(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    await comfy.http.get("/prompt")
    await comfy.http.get("/api/prompt")
    await comfy.submit(save_prompt("count/x", 4))
    assert comfyui_mock.request_count("/prompt") == 3
    assert comfyui_mock.request_count("/prompt", method="GET") == 2
    assert comfyui_mock.request_counts()["POST /prompt"] == 1


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"filename": "../secret.txt"}, 400),
        ({"filename": "/etc/passwd"}, 400),
        ({"filename": ""}, 400),
        ({"filename": "x.png", "type": "models"}, 400),
        ({"filename": "passwd", "subfolder": "../../../../etc"}, 403),
        ({"filename": "nope.png"}, 404),
        ({"type": "output"}, 404),
    ],
)
async def test_view_rejections(comfy: Comfy, params: dict[str, str], status: int) -> None:
    response = await comfy.http.get("/view", params=params)
    assert response.status_code == status and response.content == b""


async def test_upload_dedupes_like_comfyui(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    async def upload(content: bytes, **fields: str) -> dict[str, str]:
        response = await comfy.http.post(
            "/upload/image", files={"image": ("peer.png", content, "image/png")}, data=fields
        )
        assert response.status_code == 200, response.text
        body: dict[str, str] = response.json()
        return body

    assert await upload(PNG) == {"name": "peer.png", "subfolder": "", "type": "input"}
    assert (await upload(PNG))["name"] == "peer.png"
    assert (await upload(PNG + b"changed"))["name"] == "peer (1).png"
    assert (await upload(PNG + b"other", overwrite="true"))["name"] == "peer.png"
    assert (comfyui_mock.input_dir / "peer.png").read_bytes() == PNG + b"other"
    sub = await upload(PNG, subfolder="nested", type="temp")
    assert sub == {"name": "peer.png", "subfolder": "nested", "type": "temp"}
    assert (comfyui_mock.temp_dir / "nested" / "peer.png").is_file()
    view = await comfy.http.get("/api/view", params={"filename": "peer (1).png", "type": "input"})
    assert view.status_code == 200 and view.headers["content-type"] == "image/png"
    listed = (await comfy.http.get("/object_info/LoadImage")).json()
    assert listed["LoadImage"]["input"]["required"]["image"][0] == ["peer (1).png", "peer.png"]


async def test_upload_rejections(comfy: Comfy) -> None:
    post = comfy.http.post
    escape = await post(
        "/upload/image", files={"image": ("e.png", PNG)}, data={"subfolder": "../../x"}
    )
    assert escape.status_code == 400
    dotted = await post("/upload/image", files={"image": ("../evil.png", PNG)})
    assert dotted.status_code == 400
    missing = await post("/upload/image", data={"overwrite": "true"})
    assert missing.status_code == 400
    bogus = await post("/upload/image", files={"image": ("x.png", PNG)}, data={"type": "models"})
    assert bogus.status_code == 500 and bogus.text == INTERNAL_ERROR


async def test_a_name_over_255_bytes_fails_like_a_file_system_makes_comfyui_fail(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    async def upload(name: str, **fields: str) -> int:
        files = {"image": (name, PNG, "image/png")}
        return (await comfy.http.post("/upload/image", files=files, data=fields)).status_code

    assert await upload("n" * 251 + ".png") == 200
    assert (comfyui_mock.input_dir / ("n" * 251 + ".png")).is_file()
    assert await upload("n" * 252 + ".png") == 500
    assert await upload("ü" * 128) == 500  # bytes count, not characters
    assert await upload("ok.png", subfolder="s" * 256) == 500


async def test_object_info_lists_the_catalogue(comfy: Comfy) -> None:
    everything = (await comfy.http.get("/object_info")).json()
    for name in ("EmptyImage", "LoadImage", "SaveImage", "PreviewAny", "VHS_VideoCombine"):
        assert name in everything
    recorded = load_capture("00_object_info_used_nodes")["nodes"]["SaveImage"]
    assert (await comfy.http.get("/api/object_info/SaveImage")).json() == {"SaveImage": recorded}
    assert (await comfy.http.get("/object_info/NoSuchNode")).json() == {}


async def test_plain_get_on_ws_is_400(comfy: Comfy) -> None:
    response = await comfy.http.get("/ws")
    assert response.status_code == 400
