"""Ctrl-C and SIGTERM during `comfyui-worker run`, against the mock ComfyUI in its own thread:
the prompt keeps running there, one line says how to reattach, and reattaching gets the
result without running it again; a second Ctrl-C, or --interrupt-on-signal, interrupts it."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from asyncio.subprocess import PIPE, Process
from pathlib import Path

import httpx

from cli_processes import cli_env
from comfyui_mock.handle import MockHandle
from observability.workflows import blur_workflow, slow_blur

LONG_JOB = 8.0  # seconds node 2 runs; it checks for an interrupt at each of its steps


async def start_run(
    mock: MockHandle, tmp_path: Path, *args: str, **env: str
) -> tuple[Process, str]:
    """`run` of the slow workflow, once its prompt is in ComfyUI; and the prompt's id."""
    workflow = tmp_path / "wf.json"
    if not workflow.exists():
        slow_blur(mock, steps=40, seconds=LONG_JOB)
        workflow.write_text(json.dumps(blur_workflow("signals")))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "comfyui_worker.cli", "run", str(workflow), *args,
        cwd=tmp_path, stdout=PIPE, stderr=PIPE,
        env=cli_env(
            tmp_path,
            COMFYUI_BASE_URL=mock.url,
            COMFYUI_OUTPUT_DIR=str(mock.output_dir),
            COMFYUI_TEMP_DIR=str(mock.temp_dir),
            **env,
        ),
    )  # fmt: skip
    if "--prompt-id" in args:
        return proc, args[args.index("--prompt-id") + 1]
    return proc, await wait_for_line(proc, r"prompt (\S+): submitted")


async def wait_for_line(proc: Process, pattern: str) -> str:
    """The first group of the first stderr line matching `pattern`."""
    assert proc.stderr is not None
    async with asyncio.timeout(30):
        while line := (await proc.stderr.readline()).decode():
            if found := re.search(pattern, line):
                return found.group(1)
    raise AssertionError(f"the process ended without a line matching {pattern!r}")


async def finish(proc: Process) -> tuple[int, str, str]:
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def our_lines(err: str) -> list[str]:
    """The CLI's own lines, after checking nothing else is there but log lines."""
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "cancelled" not in err, err  # the job's own note would repeat the line
    return [line for line in err.splitlines() if line.startswith("comfyui-worker:")]


async def interrupted_in_comfyui(mock: MockHandle, pid: str) -> bool:
    async with httpx.AsyncClient(base_url=mock.url) as http, asyncio.timeout(LONG_JOB):
        while not (entry := (await http.get(f"/history/{pid}")).json()):
            await asyncio.sleep(0.1)
    return any(kind == "execution_interrupted" for kind, _ in entry[pid]["status"]["messages"])


async def test_ctrl_c_leaves_the_prompt_running_and_reattaching_gets_its_result(
    comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    proc, pid = await start_run(comfyui_mock, tmp_path)
    proc.send_signal(signal.SIGINT)
    code, out, err = await finish(proc)
    assert code == 130 and out == ""
    assert our_lines(err) == [
        f"comfyui-worker: interrupted: prompt {pid} still runs in ComfyUI; reattach with "
        f"--prompt-id {pid}, or press Ctrl-C again within 3 s to interrupt it there"
    ]
    assert comfyui_mock.request_count("/interrupt", "POST") == 0

    again, _ = await start_run(comfyui_mock, tmp_path, "--prompt-id", pid)
    code, out, err = await finish(again)
    assert code == 0, err
    result = json.loads(out)
    assert result["prompt_id"] == pid and result["status"] == "success"
    assert comfyui_mock.executions(pid) == 1
    assert comfyui_mock.request_count("/prompt", "POST") == 1


async def test_a_second_ctrl_c_interrupts_the_prompt_in_comfyui(
    comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    proc, pid = await start_run(comfyui_mock, tmp_path)
    proc.send_signal(signal.SIGINT)
    await wait_for_line(proc, r"(press Ctrl-C again)")
    proc.send_signal(signal.SIGINT)
    code, _, err = await finish(proc)
    assert code == 130
    assert our_lines(err) == [
        f"comfyui-worker: interrupted: asked ComfyUI to interrupt prompt {pid}"
    ]
    assert await interrupted_in_comfyui(comfyui_mock, pid)


async def test_with_interrupt_on_signal_sigterm_interrupts_it_at_once(
    comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    proc, pid = await start_run(
        comfyui_mock, tmp_path, "--interrupt-on-signal", COMFYUI_LOG_FORMAT="json"
    )
    proc.send_signal(signal.SIGTERM)
    code, _, err = await finish(proc)
    assert code == 143
    records = [json.loads(line) for line in err.splitlines()]
    (last,) = [r for r in records if r["log.logger"] == "comfyui_worker.cli"]
    assert last["log.level"] == "warning"
    assert last["message"] == f"terminated: asked ComfyUI to interrupt prompt {pid}"
    assert await interrupted_in_comfyui(comfyui_mock, pid)
