"""Ways of running the mock: the pytest fixture (local and COMFYUI_MOCK_URL), in-loop, the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from mock_server_helpers import Comfy, save_prompt

from comfyui_mock import MockComfyUI, pytest_plugin
from comfyui_mock.handle import MockHandle


def _run_and_save(url: str) -> str:
    with httpx.Client(base_url=url, timeout=10) as http:
        files = {"image": ("in.png", b"\x89PNG fake")}
        assert http.post("/upload/image", files=files).status_code == 200
        prompt = save_prompt("teardown/x", 1)
        prompt["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}
        prompt_id: str = http.post("/prompt", json={"prompt": prompt}).json()["prompt_id"]
        for _ in range(500):
            if prompt_id in http.get(f"/history/{prompt_id}").json():
                return prompt_id
            threading.Event().wait(0.01)
    raise AssertionError("prompt did not finish")


def test_local_fixture_teardown_removes_everything() -> None:
    fixture = pytest_plugin._local()
    handle = next(fixture)
    _run_and_save(handle.url)
    root = handle.output_dir.parent
    assert any(handle.output_dir.rglob("*.jpg")) and any(handle.temp_dir.iterdir())
    assert any(handle.input_dir.iterdir())
    fixture.close()
    assert not root.exists()
    assert not [t for t in threading.enumerate() if t.name == "comfyui-mock"]
    with pytest.raises(httpx.TransportError):
        httpx.get(handle.url + "/prompt", timeout=2)


def test_fixture_handle_has_dirs_and_port(comfyui_mock: MockHandle) -> None:
    assert comfyui_mock.url.startswith("http://127.0.0.1:")
    assert not comfyui_mock.url.endswith(":0")
    for path in (comfyui_mock.output_dir, comfyui_mock.temp_dir, comfyui_mock.input_dir):
        assert path.is_dir() and list(path.iterdir()) == []


async def test_in_loop_server_owns_its_default_dirs(tmp_path: Path) -> None:
    server = MockComfyUI(tmp_path / "out")
    await server.start()
    owned = (server.temp_dir, server.input_dir)
    comfy = Comfy(server.url)
    try:
        prompt_id = await comfy.submit_ok(save_prompt("loop/x", 2))
        entry = await comfy.wait_history(prompt_id)
        assert entry["status"]["status_str"] == "success"
        server.fail_http(path="/queue")
        assert (await comfy.http.get("/queue")).status_code == 500
        await server.restart()
        assert (await comfy.http.get("/history")).json() == {}
    finally:
        await comfy.aclose()
        await server.stop()
    assert all(not p.exists() for p in owned)
    assert (tmp_path / "out" / "loop").is_dir()


async def _start_cli(tmp_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "comfyui_mock.cli",
        "--port",
        "0",
        "--output-dir",
        str(tmp_path / "cli-out"),
        "--input-dir",
        str(tmp_path / "cli-in"),
        "--delay",
        "0.01",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
    assert line.startswith("comfyui-mock listening on http://127.0.0.1:"), line
    return process, line.split()[-1]


async def test_cli_and_remote_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    process, url = await _start_cli(tmp_path)
    try:
        monkeypatch.setenv(pytest_plugin.ENV_URL, url)
        fixture = pytest_plugin._remote(os.environ[pytest_plugin.ENV_URL])
        remote = await asyncio.to_thread(next, fixture)
        assert remote.output_dir == (tmp_path / "cli-out").resolve()
        assert remote.input_dir == (tmp_path / "cli-in").resolve()

        prompt_id = await asyncio.to_thread(_run_and_save, url)
        assert await asyncio.to_thread(remote.executions, prompt_id) == 1
        assert await asyncio.to_thread(remote.request_count, "/prompt", "POST") == 1
        await asyncio.to_thread(remote.fail_http, 1, "/queue", 502)
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/queue")).status_code == 502
            assert (await http.get("/queue")).status_code == 200
        saved = list(remote.output_dir.rglob("*.jpg"))
        assert saved

        await asyncio.to_thread(fixture.close)
        assert not any(p.exists() for p in saved)
        assert not any(remote.input_dir.iterdir())
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/history")).json() == {}
            state = (await http.get("/mock/state")).json()
            assert state["controls"]["http_failures"] == []
            bad = await http.post("/mock/control", json={"op": "shutdown_everything"})
            assert bad.status_code == 400
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0


def test_fixture_uses_the_running_mock_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    server = MockComfyUI(tmp_path / "env-out").start_in_thread()
    # Registered first so it runs last: the fixture's teardown still needs the server.
    request.addfinalizer(server.stop)
    monkeypatch.setenv(pytest_plugin.ENV_URL, server.url)
    handle: MockHandle = request.getfixturevalue("comfyui_mock")
    assert handle.url == server.url
    assert handle.output_dir == server.output_dir
    handle.set_progress_steps(2)
    assert server.server.controls.progress_steps("1", "EmptyImage") == 2
    assert handle.request_counts() == {}


def test_plugin_imports_without_aiohttp() -> None:
    code = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "import comfyui_mock, comfyui_mock.pytest_plugin\n"
        "try:\n    comfyui_mock.MockComfyUI\nexcept ImportError:\n    print('lazy')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "lazy"
