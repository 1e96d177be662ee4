"""`comfyui-worker` as a process: its exit code, stdout and stderr, in a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli_env(tmp_path: Path, **env: str) -> dict[str, str]:
    """`env` over an environment without our settings, mounted folders in `tmp_path`, and
    nothing listening where ComfyUI and LittleHorse are looked for."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LHC_", "LHW_", "COMFYUI_"))}
    for name in ("output", "temp"):
        (tmp_path / name).mkdir(exist_ok=True)
    return {
        **clean,
        "COMFYUI_OUTPUT_DIR": str(tmp_path / "output"),
        "COMFYUI_TEMP_DIR": str(tmp_path / "temp"),
        "COMFYUI_WORKER_HEALTH_PORT": "0",
        "COMFYUI_BASE_URL": "http://127.0.0.1:9",
        "LHC_API_HOST": "127.0.0.1",
        "LHC_API_PORT": "9",
        **env,
    }


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `comfyui-worker` in `tmp_path` (its `.env`, if any) with `cli_env`."""
    return subprocess.run(
        [sys.executable, "-m", "comfyui_worker.cli", *args],
        cwd=tmp_path,
        env=cli_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    """`run_cli`'s (exit code, stdout and stderr)."""
    done = run_cli(tmp_path, *args, **env)
    return done.returncode, done.stdout + done.stderr


def the_error(output: str) -> str:
    """The one error line; no traceback or multi-line dump beside it."""
    assert "Traceback" not in output and "_InactiveRpcError" not in output, output
    assert "debug_error_string" not in output, output
    (line,) = [line for line in output.splitlines() if "error:" in line]
    assert line.startswith("comfyui-worker: error: "), output
    return line
