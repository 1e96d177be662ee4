"""The CLI's error paths through a real process: one line naming the problem and the
variable, a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def cli(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    """Run `comfyui-worker` in `tmp_path` (its `.env`, if any) with `env` over a clean
    environment; (exit code, stdout and stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LHC_", "LHW_", "COMFYUI_"))}
    for name in ("output", "temp"):
        (tmp_path / name).mkdir(exist_ok=True)
    clean.update(
        {
            "COMFYUI_OUTPUT_DIR": str(tmp_path / "output"),
            "COMFYUI_TEMP_DIR": str(tmp_path / "temp"),
            "COMFYUI_WORKER_HEALTH_PORT": "0",
            # Nothing listens here: no check may need an answer.
            "COMFYUI_BASE_URL": "http://127.0.0.1:9",
            "LHC_API_HOST": "127.0.0.1",
            "LHC_API_PORT": "9",
            **env,
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "comfyui_worker.cli", *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def the_error(output: str) -> str:
    """The one error line; no traceback or multi-line dump beside it."""
    assert "Traceback" not in output and "_InactiveRpcError" not in output, output
    assert "debug_error_string" not in output, output
    (line,) = [line for line in output.splitlines() if "error:" in line]
    assert line.startswith("comfyui-worker: error: "), output
    return line


def test_tls_with_a_missing_ca_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "certs" / "ca.crt"
    code, output = cli(tmp_path, "serve", LHC_API_PROTOCOL="TLS", LHC_CA_CERT=str(missing))
    assert code == 1
    line = the_error(output)
    assert f"LHC_CA_CERT={missing}: cannot read it (No such file or directory)" in line


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("LHW_NUM_WORKER_THREADS", "four", "LHW_NUM_WORKER_THREADS='four': must be a whole number"),
        ("LHW_NUM_WORKER_THREADS", "0", "LHW_NUM_WORKER_THREADS='0': must be a whole number, 1"),
        ("LHC_API_PORT", "http", "LHC_API_PORT='http': must be a whole number, 1 to 65535"),
        ("LHC_API_PROTOCOL", "SSL", "LHC_API_PROTOCOL='SSL': must be TLS or PLAINTEXT"),
    ],
)
def test_a_bad_littlehorse_setting_names_the_variable(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    code, output = cli(tmp_path, "serve", **{name: value})
    assert code == 1 and says in the_error(output)


@pytest.mark.parametrize("command", [["serve"], ["register"], ["templates", "list"]])
def test_a_dot_env_that_is_not_utf8_is_named(tmp_path: Path, command: list[str]) -> None:
    latin1 = b"COMFYUI_LOG_FORMAT=text\nCAPTION=caf\xe9\n"
    (tmp_path / ".env").write_bytes(latin1)
    code, output = cli(tmp_path, *command)
    assert code == 1
    assert f"cannot read .env: not UTF-8 text (byte {latin1.index(0xE9)}" in the_error(output)


def test_register_against_an_unreachable_littlehorse_says_where_it_tried(tmp_path: Path) -> None:
    code, output = cli(tmp_path, "register")
    assert code == 1
    line = the_error(output)
    assert "cannot reach LittleHorse at 127.0.0.1:9 (LHC_API_HOST, LHC_API_PORT)" in line
    assert "UNAVAILABLE" in line
