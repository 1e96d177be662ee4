"""The object store against moto's real S3 server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import moto.settings
import pytest
from aiohttp import web

from comfyui_worker.exceptions import (
    InputFetchError,
    InvalidInputError,
    OutputStoreDeniedError,
    OutputStoreError,
)
from comfyui_worker.media.fetch import InputGuard
from comfyui_worker.media.store import Location, ObjectStores
from s3_server import S3, SECRET, aws_env

MiB = 1024 * 1024


def stores() -> ObjectStores:
    return ObjectStores(timeout=10, retries=1, part_bytes=5 * MiB)


async def test_upload_streams_bytes_and_sha256(s3: S3, tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"\x89PNG" + os.urandom(1000))
    where = Location("s3", s3.bucket, "runs/p1/9/out.png")
    stored = await stores().upload(path, where, mime="image/png")
    assert stored.uri == f"s3://{s3.bucket}/runs/p1/9/out.png"
    assert stored.size == path.stat().st_size
    assert stored.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert s3.get("runs/p1/9/out.png") == path.read_bytes()
    assert s3.content_type("runs/p1/9/out.png") == "image/png"


async def test_large_files_go_up_in_parts(s3: S3, tmp_path: Path) -> None:
    path = tmp_path / "video.mp4"
    data = os.urandom(11 * MiB)  # three parts of 5 MiB at most
    path.write_bytes(data)
    stored = await stores().upload(path, Location("s3", s3.bucket, "v.mp4"), mime="video/mp4")
    assert stored.e_tag is not None and stored.e_tag.strip('"').endswith("-3")
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert s3.get("v.mp4") == data


async def multipart_uploads(s3: S3) -> list[str]:
    """The keys of the bucket's multipart uploads still open (S3's ListMultipartUploads)."""
    async with httpx.AsyncClient() as http:
        listing = (await http.get(f"{s3.endpoint}/{s3.bucket}?uploads")).text
    return re.findall(r"<Key>([^<]*)</Key>", listing)


def open_by_this_process(path: Path) -> bool:
    fds = Path("/proc/self/fd")
    return any(os.path.realpath(fd) == str(path.resolve()) for fd in fds.iterdir())


# The file left to a generator obstore stopped iterating was an "ignored GeneratorExit".
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
async def test_a_cancelled_upload_aborts_its_multipart_upload_and_closes_its_file(
    s3: S3, tmp_path: Path
) -> None:
    path = tmp_path / "video.mp4"
    path.write_bytes(os.urandom(40 * MiB))  # eight parts
    upload = asyncio.create_task(
        stores().upload(path, Location("s3", s3.bucket, "v.mp4"), mime="video/mp4")
    )
    async with asyncio.timeout(20):
        while not await multipart_uploads(s3):  # parts are going up
            await asyncio.sleep(0.01)
    upload.cancel()  # as the shutdown does to a task still running after the grace
    with pytest.raises(asyncio.CancelledError):
        await upload
    assert s3.keys() == []  # cancelled before it completed
    assert await multipart_uploads(s3) == []  # and no part of it left in the bucket
    assert not open_by_this_process(path)


async def test_presigned_url_downloads_the_object(s3: S3, tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"presigned bytes")
    store = stores()
    where = Location("s3", s3.bucket, "k/a.png")
    await store.upload(path, where, mime="image/png")
    url = await store.presign(where, 600)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=600" in url
    assert SECRET not in url
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).content == b"presigned bytes"


async def test_missing_bucket_is_denied_naming_the_bucket(s3: S3, tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"x")
    with pytest.raises(OutputStoreDeniedError) as err:
        await stores().upload(path, Location("s3", "no-such-bucket", "k/a.png"), mime="image/png")
    assert err.value.bucket == "no-such-bucket"
    assert "the bucket does not exist (NoSuchBucket)" in str(err.value)
    assert "'no-such-bucket'" in str(err.value) and SECRET not in str(err.value)


async def test_refused_credentials_are_denied_without_the_secret(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto checks signatures and keys only when told to; then "testing" is an unknown key.
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    path = tmp_path / "a.png"
    path.write_bytes(b"x")
    with pytest.raises(OutputStoreDeniedError) as err:
        await stores().upload(path, Location("s3", s3.bucket, "a.png"), mime="image/png")
    assert "access was refused (InvalidAccessKeyId)" in str(err.value)
    assert s3.bucket in str(err.value)
    assert SECRET not in str(err.value) and SECRET not in repr(err.value.details())


@pytest.fixture
async def failing_s3(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """An S3 endpoint that answers 503 to everything."""

    async def unavailable(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=503, text="<Error><Code>SlowDown</Code></Error>")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", unavailable)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}"
    aws_env(monkeypatch, endpoint)
    try:
        yield endpoint
    finally:
        await runner.cleanup()


async def test_5xx_and_unreachable_are_retryable(
    failing_s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"x")
    store = ObjectStores(timeout=5, retries=0, part_bytes=5 * MiB)
    with pytest.raises(OutputStoreError) as err:
        await store.upload(path, Location("s3", "b", "a.png"), mime="image/png")
    assert type(err.value) is OutputStoreError and "retryable" in str(err.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    store = ObjectStores(timeout=5, retries=0, part_bytes=5 * MiB)
    with pytest.raises(OutputStoreError) as unreachable:
        await store.upload(path, Location("s3", "b", "a.png"), mime="image/png")
    assert type(unreachable.value) is OutputStoreError


async def test_download_for_inputs(s3: S3, tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    src.write_bytes(b"input bytes")
    store = ObjectStores(
        timeout=10,
        retries=1,
        part_bytes=5 * MiB,
        guard=InputGuard(stores=[Location.parse(f"s3://{s3.bucket}")]),
    )
    await store.upload(src, Location("s3", s3.bucket, "in/photo.png"), mime="image/png")
    uri = f"s3://{s3.bucket}/in/photo.png"
    size, sha = await store.download("photo.png", uri, tmp_path / "got", max_bytes=100)
    assert (tmp_path / "got").read_bytes() == b"input bytes"
    assert (size, sha) == (11, hashlib.sha256(b"input bytes").hexdigest())
    with pytest.raises(InvalidInputError) as big:
        await store.download("photo.png", uri, tmp_path / "got", max_bytes=5)
    assert big.value.rule == "max-bytes"
    with pytest.raises(InvalidInputError) as missing:
        await store.download("photo.png", f"s3://{s3.bucket}/nope", tmp_path / "x", max_bytes=9)
    assert "input 'photo.png'" in str(missing.value) and "not found" in str(missing.value)
    with pytest.raises(InvalidInputError) as bad:
        await store.download("photo.png", "s3://", tmp_path / "x", max_bytes=9)
    assert bad.value.rule == "uri"


async def test_input_download_from_a_failing_store_is_retryable(
    failing_s3: str, tmp_path: Path
) -> None:
    guard = InputGuard(stores=[Location("s3", "b", "")])
    store = ObjectStores(timeout=5, retries=0, part_bytes=5 * MiB, guard=guard)
    with pytest.raises(InputFetchError):
        await store.download("p.png", "s3://b/p.png", tmp_path / "x", max_bytes=9)
