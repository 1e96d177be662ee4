"""`comfyui-worker run` on bad input: a readable message and a non-zero exit, never a hang."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NoReturn

import pytest

from comfyui_worker import cli_run
from comfyui_worker.cli import MEANINGS, ExitCode, main
from comfyui_worker.observability.logs import flush_logs
from comfyui_worker.settings import Settings


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"nodes": [], "links": [], "version": 0.4}', "UI format"),
        ("[]", "must be a JSON object of nodes, got array"),
        ("{}", "workflow is empty"),
        ('{"1": {"inputs": {}}}', "node '1' has no class_type"),
    ],
)
def test_run_rejects_bad_workflow_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "wf.json"
    path.write_text(content)
    assert main(["run", str(path)]) == 4
    err = capsys.readouterr().err
    assert "comfyui-worker: error: InvalidWorkflowError" in err and message in err
    assert str(path) in err


def test_run_reports_an_unreachable_comfyui(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFYUI_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("COMFYUI_RETRIES", "0")
    mounted_folders(monkeypatch, tmp_path)
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"1": {"class_type": "EmptyImage", "inputs": {}}}))
    assert main(["run", str(path)]) == 5
    err = capsys.readouterr().err
    assert "TransportError" in err and "unreachable" in err


def test_an_unreachable_comfyui_is_reported_without_the_password_in_its_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFYUI_BASE_URL", "http://user:pw-in-url@127.0.0.1:9")
    monkeypatch.setenv("COMFYUI_RETRIES", "0")
    mounted_folders(monkeypatch, tmp_path)
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"1": {"class_type": "EmptyImage", "inputs": {}}}))
    assert main(["run", str(path)]) == 5
    err = capsys.readouterr().err
    assert "ComfyUI at http://***@127.0.0.1:9 unreachable" in err and "pw-in-url" not in err


def test_invalid_configuration_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFYUI_BASE_URL", "")
    assert main(["run", str(tmp_path / "x.json")]) == 3
    assert "invalid configuration" in capsys.readouterr().err


def mounted_folders(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    for name in ("OUTPUT_DIR", "TEMP_DIR", "INPUT_DIR"):
        (root / name.lower()).mkdir()
        monkeypatch.setenv(f"COMFYUI_{name}", str(root / name.lower()))


@pytest.mark.parametrize("command", ["run", "serve"])
@pytest.mark.parametrize(
    ("name", "cleanup"), [("OUTPUT_DIR", "none"), ("TEMP_DIR", "none"), ("INPUT_DIR", "inputs")]
)
def test_a_folder_that_is_not_mounted_stops_run_and_serve(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    name: str,
    cleanup: str,
) -> None:
    mounted_folders(monkeypatch, tmp_path)
    monkeypatch.setenv(f"COMFYUI_{name}", str(tmp_path / "not-mounted"))
    # The input folder is read only to remove uploaded inputs.
    monkeypatch.setenv("COMFYUI_CLEANUP", cleanup)
    # Nothing listens here: the check must come before any connection.
    monkeypatch.setenv("COMFYUI_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LHC_API_HOST", "127.0.0.1")
    monkeypatch.setenv("LHC_API_PORT", "9")
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"1": {"class_type": "EmptyImage", "inputs": {}}}))
    assert main([command, str(path)] if command == "run" else [command]) == 3
    err = capsys.readouterr().err
    assert f"COMFYUI_{name}={tmp_path / 'not-mounted'} is not a directory" in err


def test_an_empty_output_folder_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFYUI_OUTPUT_DIR", "")
    assert main(["run", str(tmp_path / "x.json")]) == 3
    err = capsys.readouterr().err
    assert "invalid configuration" in err and "COMFYUI_OUTPUT_DIR is empty" in err


@pytest.mark.parametrize(
    ("value", "problem"),
    [("-1", "greater than or equal to 0"), ("soon", "valid number")],
)
def test_a_bad_shutdown_grace_is_a_configuration_error_naming_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("COMFYUI_SHUTDOWN_GRACE", value)
    assert main(["serve"]) == 3
    err = capsys.readouterr().err
    assert "invalid configuration: COMFYUI_SHUTDOWN_GRACE:" in err and problem in err


def test_schema_job_prints_the_envelope_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "job"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "ComfyUIJob" and "inputs" in schema["properties"]


def test_job_rejects_a_bad_envelope_naming_the_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"workflow": {}, "template": "x", "outputs": {}}))
    assert main(["job", str(path)]) == 4
    err = capsys.readouterr().err
    assert "InvalidJobError" in err and str(path) in err
    assert "outputs: unknown key" in err


def test_job_example_runs_on_the_mock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "jobs" / "invert_photo.json"
    monkeypatch.chdir(tmp_path)  # the mock keeps its folders under ./.comfyui-mock
    assert main(["job", str(example), "--mock"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "success"
    (entry,) = result["files"]
    assert Path(entry["path"]).is_file() and entry["kind"] == "image"
    uploaded = result["inputs"]["photo.png"]["uploaded"]
    assert (tmp_path / ".comfyui-mock" / "input" / uploaded).is_file()


def test_the_input_folder_is_not_required_when_nothing_reads_it(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, input_dir=tmp_path / "absent")  # type: ignore[call-arg]
    assert settings.mounted_dirs == ("output_dir", "temp_dir")


def test_job_given_a_workflow_file_says_so_and_suggests_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({str(n): {"class_type": "EmptyImage"} for n in range(1, 6)}))
    assert main(["job", str(path)]) == 4
    err = capsys.readouterr().err
    assert err == (
        f"comfyui-worker: error: WorkflowAsJobError: {path}: this looks like a ComfyUI workflow, "
        'not a job envelope; a job carries it under "workflow": {"workflow": {...}, "inputs": '
        f"{{...}}}}; to run a workflow file: comfyui-worker run {path}\n"
    )


def test_the_cli_doc_lists_every_exit_code_as_the_help_does() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    section = doc.partition("\n## Exit codes\n")[2].partition("\n#")[0]
    rows = re.findall(r"^\| `(\d+)` \| (.+) \|$", section, re.MULTILINE)
    assert rows == [(str(code.value), MEANINGS[code]) for code in ExitCode]


def test_an_unexpected_error_with_json_logs_is_a_json_record_with_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object) -> NoReturn:
        raise RuntimeError("a bug")

    monkeypatch.setenv("COMFYUI_LOG_FORMAT", "json")
    monkeypatch.setattr(cli_run, "run", broken)
    assert main(["run", str(tmp_path / "wf.json")]) == 1
    flush_logs()
    (record,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert record["log.level"] == "critical" and record["message"] == "unexpected error"
    assert "RuntimeError: a bug" in record["error.stack_trace"]
