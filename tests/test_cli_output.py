"""What `comfyui-worker` writes for scripts and people: nothing more once its reader has gone,
its version, and the variables `serve` and `register` read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli_processes import cli_env, run_cli
from comfyui_worker import __version__
from template_dirs import EXAMPLES


@pytest.mark.parametrize(
    "args", [["schema", "job"], ["templates", "show", "solid", "--json"], ["templates", "list"]]
)
def test_a_reader_that_stops_reading_ends_the_output_quietly(
    tmp_path: Path, args: list[str]
) -> None:
    # `| head` closes its end after the lines it wanted; here before the first one.
    proc = subprocess.Popen(
        [sys.executable, "-m", "comfyui_worker.cli", *args],
        cwd=tmp_path,
        env=cli_env(tmp_path, COMFYUI_TEMPLATES_DIR=str(EXAMPLES)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert err == ""


def test_version(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--version")
    assert done.returncode == 0 and done.stdout == f"comfyui-worker {__version__}\n"


@pytest.mark.parametrize(
    ("command", "variables"),
    [
        ("serve", ["COMFYUI_BASE_URL", "COMFYUI_OUTPUT_DIR", "COMFYUI_TASKS", "LHC_API_HOST"]),
        ("register", ["COMFYUI_TASKS", "LHC_API_HOST", "LHC_API_PORT", "LHC_TENANT_ID"]),
    ],
)
def test_serve_and_register_help_lists_the_variables_they_read(
    tmp_path: Path, command: str, variables: list[str]
) -> None:
    done = run_cli(tmp_path, command, "--help")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    for variable in variables:
        assert any(line.startswith(f"  {variable} ") for line in lines), (variable, done.stdout)
    assert "every setting: docs/configuration.md" in done.stdout
    assert max(len(line) for line in lines) <= 79, done.stdout


def test_help_lists_the_exit_codes(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--help")
    assert done.returncode == 0
    codes = done.stdout.partition("exit codes:\n")[2]
    assert [line.split()[0] for line in codes.splitlines() if not line.startswith("     ")] == [
        "0", "1", "2", "3", "4", "5", "6", "130", "141", "143",
    ]  # fmt: skip
