"""Simulated execution: files, caching, interrupts, injected failures, output kinds."""

from __future__ import annotations

import asyncio
import json
import time

from mock_server_helpers import (
    Comfy,
    chain_prompt,
    new_client_id,
    open_ws,
    read_until_done,
    save_prompt,
    types,
    wait_for_executing,
)

from comfyui_mock.catalogue import FIXTURE_IMAGE
from comfyui_mock.handle import MockHandle


async def test_save_writes_the_fixture_picture_under_the_prefix(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    prompt_id = await comfy.submit_ok(save_prompt("peer/s01", color=1, batch=2))
    images = (await comfy.wait_history(prompt_id))["outputs"]["2"]["images"]
    assert images == [
        {"filename": "s01_00001_.jpg", "subfolder": "peer", "type": "output"},
        {"filename": "s01_00002_.jpg", "subfolder": "peer", "type": "output"},
    ]
    saved = comfyui_mock.output_dir / "peer" / "s01_00001_.jpg"
    assert saved.read_bytes() == FIXTURE_IMAGE.read_bytes()
    view = await comfy.http.get(
        "/view", params={"filename": "s01_00002_.jpg", "subfolder": "peer", "type": "output"}
    )
    assert view.status_code == 200 and view.headers["content-type"] == "image/jpeg"
    assert view.content[:3] == b"\xff\xd8\xff"
    assert {"etag", "last-modified", "accept-ranges"} <= set(view.headers)


async def test_concurrent_prompts_get_distinct_existing_files(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    ids = await asyncio.gather(
        *(comfy.submit_ok(save_prompt("burst/img", color=c)) for c in range(100, 108))
    )
    await comfy.wait_idle()
    names = set()
    for prompt_id in ids:
        (item,) = (await comfy.wait_history(prompt_id))["outputs"]["2"]["images"]
        assert (comfyui_mock.output_dir / item["subfolder"] / item["filename"]).is_file()
        names.add(item["filename"])
        assert comfyui_mock.executions(prompt_id) == 1
    assert len(names) == 8


async def test_identical_resubmit_is_served_from_cache(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    cid = new_client_id()
    ws, _ = await open_ws(comfyui_mock.url, cid)
    first = await comfy.submit_ok(save_prompt("cache/s10", color=5), cid)
    await read_until_done(ws, first)
    files_before = sorted(p.name for p in (comfyui_mock.output_dir / "cache").iterdir())
    again = await comfy.submit_ok(save_prompt("cache/s10", color=5), cid)
    messages = await read_until_done(ws, again)
    assert types(messages) == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "executed",
        "progress_state",
        "execution_success",
        "status",
        "executing",
    ]
    assert messages[3]["data"]["nodes"] == ["1", "2"]
    assert sorted(p.name for p in (comfyui_mock.output_dir / "cache").iterdir()) == files_before
    first_out = (await comfy.wait_history(first))["outputs"]
    assert (await comfy.wait_history(again))["outputs"] == first_out

    changed = await comfy.submit_ok(save_prompt("cache/other", color=5), cid)
    messages = await read_until_done(ws, changed)
    assert messages[3]["data"]["nodes"] == ["1"]
    assert [m["data"]["node"] for m in messages if m["type"] == "executing"] == ["2", None]

    assert (await comfy.http.post("/free", json={"free_memory": True})).status_code == 200
    after_free = await comfy.submit_ok(save_prompt("cache/s10", color=5), cid)
    await read_until_done(ws, after_free)
    await ws.close()
    (item,) = (await comfy.wait_history(after_free))["outputs"]["2"]["images"]
    assert item["filename"] == "s10_00002_.jpg"


async def test_cache_can_be_disabled(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    comfyui_mock.set_cache_enabled(False)
    first = await comfy.submit_ok(save_prompt("nocache/x", color=6))
    second = await comfy.submit_ok(save_prompt("nocache/x", color=6))
    out1 = (await comfy.wait_history(first))["outputs"]["2"]["images"][0]["filename"]
    out2 = (await comfy.wait_history(second))["outputs"]["2"]["images"][0]["filename"]
    assert out1 != out2


async def test_interrupt_takes_effect_at_the_next_node_boundary(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.set_node_delay("ImageBlur", 0.3)
    cid = new_client_id()
    ws, _ = await open_ws(comfyui_mock.url, cid)
    victim = await comfy.submit_ok(chain_prompt("intr/a", blurs=3), cid)
    follower = await comfy.submit_ok(save_prompt("intr/b", color=9), cid)
    await wait_for_executing(ws, "10")
    await comfy.http.post("/interrupt", json={"prompt_id": follower})  # not running: ignored
    await comfy.http.post("/interrupt", json={"prompt_id": victim})
    sent = time.monotonic()
    messages = await read_until_done(ws, victim)
    waited = time.monotonic() - sent
    follow_messages = await read_until_done(ws, follower)
    await ws.close()

    interrupted = [m["data"] for m in messages if m["type"] == "execution_interrupted"]
    assert interrupted == [
        {
            "prompt_id": victim,
            "node_id": "11",
            "node_type": "ImageBlur",
            "executed": ["1", "10"],
            "timestamp": interrupted[0]["timestamp"],
        }
    ]
    assert waited > 0.15, "the running node must finish first"
    entry = await comfy.wait_history(victim)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert entry["outputs"] == {} and entry["meta"] == {}
    assert "execution_success" in types(follow_messages)


async def test_idle_interrupt_does_not_touch_the_next_prompt(comfy: Comfy) -> None:
    assert (await comfy.http.post("/interrupt")).status_code == 200
    assert (await comfy.http.post("/interrupt", content=b"not json")).status_code == 200
    prompt_id = await comfy.submit_ok(save_prompt("intr/idle", color=10))
    assert (await comfy.wait_history(prompt_id))["status"]["status_str"] == "success"


async def test_injected_execution_error_keeps_partial_outputs(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.fail_node(
        "ImageInvert",
        message="cannot identify image file",
        exception_type="PIL.UnidentifiedImageError",
    )
    prompt = save_prompt("err/ok", color=11)
    prompt["3"] = {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}
    prompt["4"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["3", 0], "filename_prefix": "err/bad"},
    }
    cid = new_client_id()
    ws, _ = await open_ws(comfyui_mock.url, cid)
    prompt_id = await comfy.submit_ok(prompt, cid)
    messages = await read_until_done(ws, prompt_id)
    await ws.close()
    (error,) = [m["data"] for m in messages if m["type"] == "execution_error"]
    assert error["node_id"] == "3" and error["node_type"] == "ImageInvert"
    assert error["executed"] == ["1", "2"]
    assert error["exception_type"] == "PIL.UnidentifiedImageError"
    assert error["exception_message"] == "cannot identify image file\n"
    assert isinstance(error["traceback"], list) and error["traceback"]
    assert error["current_inputs"] == {"image": ["IMAGE(shape=[1, 64, 64, 3])"]}
    assert error["current_outputs"] == ["1", "2", "3", "4"]
    entry = await comfy.wait_history(prompt_id)
    assert entry["status"]["status_str"] == "error"
    assert list(entry["outputs"]) == ["2"] and list(entry["meta"]) == ["2"]

    # The failure was for one run only: the same prompt now completes (node 1 and 2 cached).
    retry = await comfy.submit_ok(prompt)
    assert (await comfy.wait_history(retry))["status"]["status_str"] == "success"


async def test_real_failures_surface_as_execution_errors(comfy: Comfy) -> None:
    prompt = save_prompt("../escape", color=12)
    prompt_id = await comfy.submit_ok(prompt)
    entry = await comfy.wait_history(prompt_id)
    (event, data) = entry["status"]["messages"][-1]
    assert event == "execution_error" and data["exception_type"] == "Exception"
    assert "outside the output folder" in data["exception_message"]


async def test_every_output_kind(comfy: Comfy, comfyui_mock: MockHandle) -> None:
    wav = b"RIFF....WAVEfmt fake audio"
    upload = await comfy.http.post(
        "/upload/image", files={"image": ("tone.wav", wav, "audio/wav")}, data={"overwrite": "true"}
    )
    assert upload.json() == {"name": "tone.wav", "subfolder": "", "type": "input"}
    image = ["1", 0]
    prompt = {
        "1": save_prompt()["1"],
        "10": {"class_type": "PreviewImage", "inputs": {"images": image}},
        "11": {
            "class_type": "SaveAnimatedWEBP",
            "inputs": {
                "images": image,
                "filename_prefix": "kinds/anim",
                "fps": 6.0,
                "lossless": True,
                "quality": 80,
                "method": "default",
            },
        },
        "14": {"class_type": "CreateVideo", "inputs": {"images": image, "fps": 6.0}},
        "15": {
            "class_type": "SaveVideo",
            "inputs": {
                "video": ["14", 0],
                "filename_prefix": "kinds/video",
                "format": "auto",
                "codec": "auto",
            },
        },
        "20": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1},
        },
        "21": {
            "class_type": "SaveLatent",
            "inputs": {"samples": ["20", 0], "filename_prefix": "kinds/lat"},
        },
        "30": {"class_type": "GetImageSize", "inputs": {"image": image}},
        "31": {"class_type": "PreviewAny", "inputs": {"source": ["30", 0]}},
        "40": {"class_type": "LoadAudio", "inputs": {"audio": "tone.wav"}},
        "41": {
            "class_type": "SaveAudio",
            "inputs": {"audio": ["40", 0], "filename_prefix": "kinds/aud"},
        },
        "42": {"class_type": "PreviewAudio", "inputs": {"audio": ["40", 0]}},
        "50": {
            "class_type": "VHS_VideoCombine",
            "inputs": {
                "images": image,
                "frame_rate": 8,
                "loop_count": 0,
                "filename_prefix": "kinds/vhs",
                "format": "video/h264-mp4",
                "pingpong": False,
                "save_output": True,
            },
        },
    }
    prompt_id = await comfy.submit_ok(prompt)
    outputs = (await comfy.wait_history(prompt_id))["outputs"]
    assert outputs["10"]["images"][0]["type"] == "temp"
    assert outputs["11"]["animated"] == [True] and outputs["15"]["animated"] == [True]
    assert outputs["21"]["latents"][0]["filename"] == "lat_00001_.latent"
    assert outputs["31"] == {"text": ["64"]}
    assert outputs["41"]["audio"] == [
        {"filename": "aud_00001_.wav", "subfolder": "kinds", "type": "output"}
    ]
    assert outputs["42"]["audio"][0]["type"] == "temp"
    (gif,) = outputs["50"]["gifs"]
    assert gif["format"] == "video/h264-mp4" and gif["type"] == "output"
    assert (comfyui_mock.output_dir / "kinds" / gif["filename"]).is_file()
    audio = await comfy.http.get(
        "/view", params={"filename": "aud_00001_.wav", "subfolder": "kinds"}
    )
    assert audio.content == wav
    latent = await comfy.http.get(
        "/view", params={"filename": "lat_00001_.latent", "subfolder": "kinds"}
    )
    assert latent.headers["content-type"] == "application/octet-stream"
    header_len = int.from_bytes(latent.content[:8], "little")
    assert json.loads(latent.content[8 : 8 + header_len])["latent_tensor"]["dtype"] == "F32"


async def test_partial_execution_targets_run_only_those_outputs(comfy: Comfy) -> None:
    prompt = save_prompt("partial/target", color=13)
    prompt["3"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["1", 0], "filename_prefix": "partial/other"},
    }
    prompt_id = await comfy.submit_ok(prompt, partial_execution_targets=["2"])
    entry = await comfy.wait_history(prompt_id)
    assert entry["prompt"][4] == ["2"] and list(entry["outputs"]) == ["2"]
    rejected = await comfy.submit(prompt, partial_execution_targets=["1"])
    assert rejected.status_code == 400
    assert rejected.json()["error"]["type"] == "prompt_no_outputs"


async def test_sensitive_extra_data_is_in_queue_but_not_history(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.set_job_delay(0.3)
    extra = {"extra_pnginfo": {"workflow": {"id": "wf"}}, "api_key_comfy_org": "SECRET"}
    cid = new_client_id()
    prompt_id = await comfy.submit_ok(save_prompt("extra/x", color=14), cid, extra_data=extra)
    running = (await comfy.queue())["queue_running"]
    assert running[0][3] == {**extra, "client_id": cid}
    entry = await comfy.wait_history(prompt_id)
    assert entry["prompt"][3] == {"extra_pnginfo": {"workflow": {"id": "wf"}}, "client_id": cid}


async def test_job_delay_spreads_over_executed_nodes(
    comfy: Comfy, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.set_job_delay(0.3)
    started = time.monotonic()
    prompt_id = await comfy.submit_ok(save_prompt("delay/x", color=15))
    await comfy.wait_history(prompt_id)
    assert time.monotonic() - started >= 0.3


async def test_string_concatenate_chains_into_a_long_preview_text(comfy: Comfy) -> None:
    prompt = {
        "1": {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": "ab", "string_b": "cd", "delimiter": "-"},
        },
        "2": {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": ["1", 0], "string_b": ["1", 0], "delimiter": ""},
        },
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    prompt_id = await comfy.submit_ok(prompt)
    outputs = (await comfy.wait_history(prompt_id))["outputs"]
    assert outputs == {"3": {"text": ["ab-cdab-cd"]}}
    # As in ComfyUI, the delimiter is a required input even though it has a default.
    del prompt["2"]["inputs"]["delimiter"]
    refused = await comfy.http.post("/prompt", json={"prompt": prompt})
    assert refused.status_code == 400
    assert refused.json()["node_errors"]["2"]["errors"][0]["type"] == "required_input_missing"
