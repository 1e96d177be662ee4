"""`comfyui-worker run` shows a job move: a progress bar on a terminal, log lines otherwise."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import sys
from asyncio.subprocess import Process
from pathlib import Path
from typing import Any

from comfyui_mock.handle import MockHandle
from observability.workflows import blur_workflow, slow_blur


def run_env(mock: MockHandle) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LHC_", "LHW_", "COMFYUI_"))}
    env.update(
        COMFYUI_BASE_URL=mock.url,
        COMFYUI_OUTPUT_DIR=str(mock.output_dir),
        COMFYUI_TEMP_DIR=str(mock.temp_dir),
        COMFYUI_INPUT_DIR=str(mock.input_dir),
    )
    return env


async def start_run(mock: MockHandle, tmp_path: Path, **kwargs: Any) -> Process:
    slow_blur(mock, steps=20, seconds=0.6)
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(blur_workflow("bar")))
    env = {**run_env(mock), **kwargs.pop("env", {})}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "comfyui_worker.cli",
        "run",
        str(workflow),
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        **kwargs,
    )


async def test_run_without_a_terminal_logs_progress_lines(
    comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    proc = await start_run(
        comfyui_mock,
        tmp_path,
        env={"COMFYUI_LOG_FORMAT": "json"},
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["status"] == "success"
    records = [json.loads(line) for line in err.decode().splitlines()]
    progress = [r["message"] for r in records if "node 2 (ImageBlur) step" in r["message"]]
    assert 2 <= len(progress) <= 11, progress
    pid = json.loads(out)["prompt_id"]
    assert all(r["comfyui.prompt_id"] == pid for r in records if "%" in r["message"])
    assert "\r" not in err.decode()  # no bar drawn into a file


async def test_run_on_a_terminal_draws_a_progress_bar(
    comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    leader, follower = pty.openpty()
    try:
        proc = await start_run(comfyui_mock, tmp_path, stderr=follower)
        os.close(follower)
        async with asyncio.timeout(30):
            out, _ = await proc.communicate()
        screen = b""
        while True:  # the child is gone: everything it drew is buffered in the pty
            try:
                chunk = await asyncio.to_thread(os.read, leader, 65536)
            except OSError:  # EIO once the buffer is drained
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(leader)
    assert proc.returncode == 0, screen.decode(errors="replace")
    assert json.loads(out)["status"] == "success"
    text = screen.decode(errors="replace")
    assert "\r" in text and "|" in text  # tqdm redraws one line
    assert "node 2 (ImageBlur) step" in text
    assert "done 100%|" in text
