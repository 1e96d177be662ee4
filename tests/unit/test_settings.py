from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from comfyui_worker.constants import CompletionMode
from comfyui_worker.exceptions import ConfigurationError
from comfyui_worker.settings import (
    LH_SETTING_PREFIXES,
    STORE_SETTING_PREFIXES,
    Settings,
    env_file_variables,
)


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


def test_the_configuration_doc_lists_every_setting() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    names = set()
    for line in doc.splitlines():
        if line.startswith("| `"):
            # `COMFYUI_BACKOFF_BASE` / `_MAX`: a row may name a pair, the second by its end.
            first, *more = (part.strip("` ") for part in line.split("|")[1].split("/"))
            names |= {first, *(first.rsplit("_", 1)[0] + end for end in more)}
    for name in Settings.model_fields:
        assert f"COMFYUI_{name.upper()}" in names, name


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


def test_an_unrelated_base_url_variable_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASE_URL", "http://some-other-service:8080")
    assert Settings(_env_file=None).base_url_str == "http://127.0.0.1:8188"
    monkeypatch.setenv("COMFYUI_BASE_URL", "http://gpu-1:8188")
    assert Settings(_env_file=None).base_url_str == "http://gpu-1:8188"


def test_an_unrelated_base_url_in_dot_env_is_ignored(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BASE_URL=http://some-other-service:8080\n")
    assert Settings(_env_file=tmp_path / ".env").base_url_str == "http://127.0.0.1:8188"


def test_base_url_keywords_in_code() -> None:
    assert Settings(_env_file=None, base_url="http://a:1").base_url_str == "http://a:1"
    assert Settings(_env_file=None, comfyui_base_url="http://b:2").base_url_str == "http://b:2"


@pytest.mark.parametrize("name", ["OUTPUT_DIR", "TEMP_DIR", "INPUT_DIR"])
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_folder_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"COMFYUI_{name}", value)
    with pytest.raises(ValidationError, match=f"COMFYUI_{name} is empty"):
        Settings(_env_file=None)


def test_check_dirs_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    s = Settings(_env_file=None, output_dir=tmp_path / "out", temp_dir=tmp_path / "nope")  # type: ignore[call-arg]
    s.check_dirs("output_dir")
    with pytest.raises(ConfigurationError, match=r"COMFYUI_TEMP_DIR=.*nope is not a directory"):
        s.check_dirs("output_dir", "temp_dir")
    (tmp_path / "file").write_text("x")
    s = Settings(_env_file=None, output_dir=tmp_path / "file")  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match=r"COMFYUI_OUTPUT_DIR=.*file is not a directory"):
        s.check_dirs("output_dir")


def test_tasks_default_to_all_and_are_chosen_by_a_comma_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(_env_file=None).tasks == (
        "execute-comfyui-workflow",
        "run-comfyui-job",
        "run-comfyui-template",
    )
    monkeypatch.setenv("COMFYUI_TASKS", "run-comfyui-job, execute-comfyui-workflow")
    assert Settings(_env_file=None).tasks == ("run-comfyui-job", "execute-comfyui-workflow")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("run-comfyui-jobs", "COMFYUI_TASKS names unknown task.*'run-comfyui-jobs'.*choose among"),
        ("", "at least 1 item"),
    ],
)
def test_bad_tasks_are_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("COMFYUI_TASKS", value)
    with pytest.raises(ValidationError, match=message):
        Settings(_env_file=None)


def test_libraries_variables_come_from_dot_env_under_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "AWS_REGION=eu-west-1\nAWS_ACCESS_KEY_ID=from-file\nGOOGLE_SERVICE_ACCOUNT=/k.json\n"
        "AZURE_STORAGE_ACCOUNT_NAME=acct\nLHC_API_HOST=lh\nCOMFYUI_TASKS=x\nOTHER=1\n"
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-environment")
    assert env_file_variables(STORE_SETTING_PREFIXES, env_file) == {
        "AWS_REGION": "eu-west-1",
        "GOOGLE_SERVICE_ACCOUNT": "/k.json",
        "AZURE_STORAGE_ACCOUNT_NAME": "acct",
    }
    assert env_file_variables(LH_SETTING_PREFIXES, env_file) == {"LHC_API_HOST": "lh"}
    assert env_file_variables(STORE_SETTING_PREFIXES, tmp_path / "absent") == {}
