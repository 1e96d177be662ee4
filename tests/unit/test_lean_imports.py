"""What libraries import but serve does not use stays out of its memory: the LittleHorse SDK's
OAuth client until OAuth is used (and then it works), httpx's command-line client, obstore
until a job uses a store (tests/media show it working then)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

# OAuth's (authlib.jose, requests, urllib3, cryptography), httpx's CLI's (click, pygments) and
# obstore until a job uses a store.
UNUSED = ("authlib.jose", "requests", "urllib3", "cryptography", "click", "pygments", "obstore")


class TokenEndpoint(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"access_token": "t0k3n", "token_type": "Bearer", "expires_in": 300})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def token_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), TokenEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/token"
    server.shutdown()
    thread.join(5)


def python(code: str, **env: str) -> list[str]:
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


def test_serve_does_not_load_what_it_does_not_use() -> None:
    loaded = python(
        "import sys, comfyui_worker.cli, comfyui_worker.lh.worker, comfyui_worker.lh.task\n"
        f"print(*[m for m in {UNUSED!r} if m in sys.modules])"
    )
    assert loaded == []


def test_the_sdk_still_fetches_an_oauth_token(token_url: str) -> None:
    token, module = python(
        "import comfyui_worker.lh.worker\n"
        "from littlehorse.client_interceptors import OAuthCredentialsProvider, OAuth2Session\n"
        f"provider = OAuthCredentialsProvider('worker', 's3cret', {token_url!r})\n"
        "print(provider.access_token().token)\n"
        "print(type(OAuth2Session(client_id='a', client_secret='b')).__module__)",
        AUTHLIB_INSECURE_TRANSPORT="1",  # the test endpoint is plain http on loopback
    )
    assert token == "t0k3n"
    assert module == "authlib.integrations.requests_client.oauth2_session"


def test_httpx_still_works_without_its_cli() -> None:
    assert python(
        "import comfyui_worker, httpx\n"
        "print(httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(204)))"
        ".get('http://x/').status_code)"
    ) == ["204"]
