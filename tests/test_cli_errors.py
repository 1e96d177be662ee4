"""The CLI's error paths through a real process: one line naming the problem and the
variable, a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cli_processes import cli, run_cli, the_error


def test_tls_with_a_missing_ca_file_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "certs" / "ca.crt"
    code, output = cli(tmp_path, "serve", LHC_API_PROTOCOL="TLS", LHC_CA_CERT=str(missing))
    assert code == 3
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
    assert code == 3 and says in the_error(output)


@pytest.mark.parametrize("command", [["serve"], ["register"], ["templates", "list"]])
def test_a_dot_env_that_is_not_utf8_is_named(tmp_path: Path, command: list[str]) -> None:
    latin1 = b"COMFYUI_LOG_FORMAT=text\nCAPTION=caf\xe9\n"
    (tmp_path / ".env").write_bytes(latin1)
    code, output = cli(tmp_path, *command)
    assert code == 3
    assert f"cannot read .env: not UTF-8 text (byte {latin1.index(0xE9)}" in the_error(output)


def test_register_against_an_unreachable_littlehorse_says_where_it_tried(tmp_path: Path) -> None:
    code, output = cli(tmp_path, "register")
    assert code == 5
    line = the_error(output)
    assert "cannot reach LittleHorse at 127.0.0.1:9 (LHC_API_HOST, LHC_API_PORT)" in line
    assert "UNAVAILABLE" in line


WORKFLOW = '{"1": {"class_type": "EmptyImage", "inputs": {}}}'


@pytest.mark.parametrize(
    ("args", "env", "code"),
    [
        (["run", "--no-such-option"], {}, 2),
        (["run"], {}, 2),  # neither a workflow file nor --template
        (["run", "wf.json"], {"COMFYUI_SHUTDOWN_GRACE": "-1"}, 3),
        (["run", "wf.json"], {"COMFYUI_OUTPUT_DIR": "/no/such/folder"}, 3),
        (["run", "missing.json"], {}, 4),
        (["job", "wf.json"], {}, 4),  # a workflow where a job envelope belongs
        (["run", "wf.json"], {"COMFYUI_RETRIES": "0"}, 5),  # nothing listens at the URL
        (["register"], {}, 5),
    ],
)
def test_each_kind_of_failure_has_its_exit_code(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int
) -> None:
    (tmp_path / "wf.json").write_text(WORKFLOW)
    done = run_cli(tmp_path, *args, **env)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["serve"], {"COMFYUI_SHUTDOWN_GRACE": "-1"}, "invalid configuration: COMFYUI_SHUTDOWN"),
        (["serve"], {"LHC_API_PORT": "http"}, "LHC_API_PORT='http': must be a whole number"),
        (["register"], {}, "cannot register the TaskDefs: cannot reach LittleHorse"),
        (["run", "wf.json"], {"COMFYUI_RETRIES": "0"}, "TransportError: POST /prompt: ComfyUI"),
    ],
)
def test_with_json_logs_the_last_words_are_a_json_record_too(
    tmp_path: Path, args: list[str], env: dict[str, str], says: str
) -> None:
    (tmp_path / "wf.json").write_text(WORKFLOW)
    done = run_cli(tmp_path, *args, COMFYUI_LOG_FORMAT="json", **env)
    assert done.returncode in (3, 5), done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]
    (last,) = [r for r in records if r["log.logger"] == "comfyui_worker.cli"]
    assert last["log.level"] == "error" and last["message"].startswith(says), last


def test_with_json_logs_an_unreadable_dot_env_is_a_json_record(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"COMFYUI_LOG_FORMAT=text\nCAPTION=caf\xe9\n")
    done = run_cli(tmp_path, "serve", COMFYUI_LOG_FORMAT="json")
    assert done.returncode == 3
    (record,) = [json.loads(line) for line in done.stderr.splitlines()]
    assert record["message"].startswith("cannot read .env: not UTF-8 text"), record


def test_json_logs_asked_for_in_dot_env_hold_when_another_setting_is_bad(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text("COMFYUI_LOG_FORMAT=json\nCOMFYUI_MAX_IN_FLIGHT=0\n")
    done = run_cli(tmp_path, "serve")
    assert done.returncode == 3
    (record,) = [json.loads(line) for line in done.stderr.splitlines()]
    assert "COMFYUI_MAX_IN_FLIGHT" in record["message"], record


class WebPage(BaseHTTPRequestHandler):
    """Some other web server: a long page for every request, with the status asked for."""

    status = 404
    page = (
        "<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n<style>\n"
        "body { width: 35em; margin: 0 auto; font-family: Tahoma, Verdana, sans-serif; }\n"
        "</style>\n</head>\n<body>\n<h1>Welcome to nginx!</h1>\n"
        + "<p>If you see this page, the nginx web server is successfully installed.</p>\n"
        * 20
    ).encode()

    def _answer(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=[404, 200])
def web_server(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Page", (WebPage,), {"status": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_web_server_that_is_not_comfyui_is_named_so_without_its_page(
    tmp_path: Path, web_server: str
) -> None:
    (tmp_path / "wf.json").write_text(WORKFLOW)
    code, output = cli(tmp_path, "run", "wf.json", COMFYUI_BASE_URL=web_server)
    assert code == 3
    line = the_error(output)
    assert "NotComfyUIError: POST /prompt: this is not ComfyUI (is COMFYUI_BASE_URL right?)" in line
    assert "answered HTTP " in line and "'Welcome to nginx!'" in line
    assert "<" not in line and len(line) < 250, line


def test_a_templates_folder_named_but_missing_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-templates"
    for args in (["templates", "list"], ["run", "--template", "solid", "--param", "caption=x"]):
        code, output = cli(tmp_path, *args, COMFYUI_TEMPLATES_DIR=str(missing))
        assert code == 3, output
        assert f"COMFYUI_TEMPLATES_DIR={missing} is not a directory" in the_error(output)
    # Unset, the default ./templates may be absent: no templates, no error.
    code, output = cli(tmp_path, "templates", "list")
    assert code == 0 and output == "no templates in templates\n"
