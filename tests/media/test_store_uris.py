"""`uri` inputs: only object-store schemes, only in the stores the deployment allows, and
nothing a URI names is ever connected to or read before the guard has passed it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from comfyui_worker.exceptions import InvalidInputError
from comfyui_worker.media.fetch import InputGuard
from comfyui_worker.media.location import Location
from comfyui_worker.media.store import ObjectStores
from comfyui_worker.settings import Settings
from s3_server import S3


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[int]]]:
    """A loopback TCP port that counts the connections made to it."""
    accepted: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        await server.wait_closed()


def stores(*allowed: str) -> ObjectStores:
    guard = InputGuard(stores=[Location.parse(uri) for uri in allowed])
    return ObjectStores(timeout=5, retries=0, part_bytes=5 * 1024 * 1024, guard=guard)


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [
        ("file://localhost{secret}", "file"),
        ("file://{secret}", "file"),
        ("https://127.0.0.1:{port}/bucket/x.png", "https"),
        ("http://127.0.0.1:{port}/x.png", "http"),
        ("memory:///x.png", "memory"),
        ("ftp://127.0.0.1:{port}/x.png", "ftp"),
        ("{secret}", "(none)"),
    ],
)
async def test_only_object_store_schemes_are_read(
    s3: S3, listener: tuple[int, list[int]], tmp_path: Path, uri: str, scheme: str
) -> None:
    secret = tmp_path / "service-account-token"
    secret.write_text("do not copy me")
    port, accepted = listener
    uri = uri.format(secret=secret, port=port)
    with pytest.raises(InvalidInputError) as err:
        await stores(f"s3://{s3.bucket}").download("photo.png", uri, tmp_path / "got", max_bytes=99)
    assert err.value.rule == "uri-scheme" and err.value.input_name == "photo.png"
    assert f"input 'photo.png': URI scheme {scheme!r} is not an object store's" in str(err.value)
    assert not (tmp_path / "got").exists() and accepted == []


@pytest.mark.parametrize(
    ("uri", "rule", "says"),
    [
        ("s3://{bucket}/elsewhere/x.png", "uri-store", "is not in a store this worker reads"),
        ("s3://other-bucket/in/x.png", "uri-store", "(s3://{bucket}/in; COMFYUI_INPUT_STORES"),
        ("gs://{bucket}/in/x.png", "uri-store", "is not in a store"),
        ("s3://{bucket}/in/../secret.png", "uri", "'.' or '..' in it"),
        ("s3://{bucket}/", "uri", "names no object"),
        ("s3://", "uri", "is not scheme://bucket/key"),
    ],
)
async def test_only_the_allowed_stores_are_read(
    s3: S3, tmp_path: Path, uri: str, rule: str, says: str
) -> None:
    with pytest.raises(InvalidInputError) as err:
        await stores(f"s3://{s3.bucket}/in").download(
            "photo.png", uri.format(bucket=s3.bucket), tmp_path / "got", max_bytes=99
        )
    assert err.value.rule == rule and says.format(bucket=s3.bucket) in str(err.value)
    assert not (tmp_path / "got").exists()


async def test_the_allowed_stores_are_read(s3: S3, tmp_path: Path) -> None:
    import obstore

    await obstore.put_async(s3.store(), "in/a/photo.png", b"photo")
    size, _ = await stores(f"s3://{s3.bucket}/in").download(
        "photo.png", f"s3://{s3.bucket}/in/a/photo.png", tmp_path / "got", max_bytes=99
    )
    assert size == 5 and (tmp_path / "got").read_bytes() == b"photo"


def test_the_allowed_stores_come_from_the_settings() -> None:
    def allowed(**values: str) -> list[str]:
        settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
        return [store.uri() for store in InputGuard.from_settings(settings).stores]

    assert allowed() == []
    # By default the output store's bucket, all of it (outputs of one job feed the next).
    assert allowed(output_store="s3://renders/jobs") == ["s3://renders/"]
    assert allowed(output_store="s3://renders/jobs", input_stores="s3://in/x, gs://b") == [
        "s3://in/x",
        "gs://b/",
    ]
