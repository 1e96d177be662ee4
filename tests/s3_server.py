"""moto's S3 server on loopback for object-store tests.

`moto_s3` (one per test session) is a real S3 API over HTTP on 127.0.0.1:<free port>
(`s3_server()` outside pytest: the benchmark uses it).
`s3` gives a test its own fresh bucket and points the standard AWS_* variables at the server,
so the worker's store code configures itself exactly as in production.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import obstore
import pytest
from moto.server import ThreadedMotoServer
from obstore.store import ObjectStore, from_url

_buckets = itertools.count()
SECRET = "s3cr3t-never-in-messages"


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str

    def store(self) -> ObjectStore:
        """A plain obstore client of the bucket, configured by the AWS_* the fixture set."""
        return from_url(f"s3://{self.bucket}")

    def get(self, key: str) -> bytes:
        return bytes(obstore.get(self.store(), key).bytes())

    def content_type(self, key: str) -> str | None:
        return obstore.get(self.store(), key).attributes.get("Content-Type")

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(
            meta["path"] for batch in obstore.list(self.store(), prefix or None) for meta in batch
        )


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1:<free port> until the block exits; yields its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    with s3_server() as url:
        yield url


def aws_env(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """The standard AWS_* variables for an S3 endpoint on loopback, as production sets them."""
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


@pytest.fixture
def s3(moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    aws_env(monkeypatch, moto_s3)
    bucket = f"bucket-{next(_buckets)}"
    httpx.put(f"{moto_s3}/{bucket}", timeout=10).raise_for_status()
    return S3(moto_s3, bucket)
