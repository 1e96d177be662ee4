from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from comfyui_worker.constants import CompletionMode
from comfyui_worker.settings import Settings


@pytest.mark.parametrize("bad", [None, "", "   ", "not a url", "ftp://comfy:8188"])
def test_settings_reject_a_missing_or_invalid_base_url(bad: object) -> None:
    with pytest.raises(ValidationError, match="base_url"):
        Settings(comfyui_base_url=bad)


def test_defaults() -> None:
    s = Settings(_env_file=None)
    assert s.base_url_str == "http://127.0.0.1:8188"
    assert s.ws_url == "ws://127.0.0.1:8188"
    assert s.completion_mode is CompletionMode.WEBSOCKET
    assert s.max_in_flight == 2


def test_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COMFYUI_BASE_URL", "https://gpu-3.internal:8443/comfy/")
    monkeypatch.setenv("COMFYUI_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("COMFYUI_TEMP_DIR", str(tmp_path / "tmp"))
    monkeypatch.setenv("COMFYUI_COMPLETION_MODE", "poll")
    monkeypatch.setenv("COMFYUI_JOB_DEADLINE", "12.5")
    monkeypatch.setenv("COMFYUI_RETRIES", "5")
    s = Settings(_env_file=None)
    assert s.base_url_str == "https://gpu-3.internal:8443/comfy"
    assert s.ws_url == "wss://gpu-3.internal:8443/comfy"
    assert s.output_dir == tmp_path / "out" and s.temp_dir == tmp_path / "tmp"
    assert s.completion_mode is CompletionMode.POLL
    assert (s.job_deadline, s.retries) == (12.5, 5)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("job_deadline", 0),
        ("poll_interval", -1),
        ("retries", -1),
        ("max_in_flight", 0),
        ("completion_mode", "carrier-pigeon"),
    ],
)
def test_rejects_nonsense_values(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_env_example_documents_every_setting() -> None:
    example = (Path(__file__).parents[2] / ".env.example").read_text()
    for name in Settings.model_fields:
        assert f"COMFYUI_{name.upper()}=" in example, name


def test_retryable_execution_errors_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "out of memory" in Settings(_env_file=None).retryable_execution_errors
    monkeypatch.setenv("COMFYUI_RETRYABLE_EXECUTION_ERRORS", "out of memory, cuDNN error ,")
    assert Settings(_env_file=None).retryable_execution_errors == ("out of memory", "cuDNN error")
    monkeypatch.setenv("COMFYUI_RETRYABLE_EXECUTION_ERRORS", '["a, b", "c"]')
    assert Settings(_env_file=None).retryable_execution_errors == ("a, b", "c")
    monkeypatch.setenv("COMFYUI_RETRYABLE_EXECUTION_ERRORS", "")
    assert Settings(_env_file=None).retryable_execution_errors == ()
    monkeypatch.setenv("COMFYUI_RETRYABLE_EXECUTION_ERRORS", "[oops")
    with pytest.raises(ValidationError, match="COMFYUI_RETRYABLE_EXECUTION_ERRORS"):
        Settings(_env_file=None)
