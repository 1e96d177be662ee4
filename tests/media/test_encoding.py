"""Input bodies with a Content-Encoding, from a loopback server: decoded, and capped while they
decode."""

from __future__ import annotations

import functools
import gzip
import hashlib
import tracemalloc
import zlib
from pathlib import Path

import pytest

from comfyui_worker.exceptions import InvalidInputError
from comfyui_worker.media.addresses import any_address
from comfyui_worker.media.encoding import STEP
from comfyui_worker.media.fetch import InputGuard, UrlFetcher
from http_files import FileServer

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
MiB = 1024 * 1024


def fetcher(max_bytes: int = 100_000) -> UrlFetcher:
    return UrlFetcher(max_bytes=max_bytes, timeout=10, guard=InputGuard(allowed=any_address))


@functools.cache
def stacked_gzip_bomb(decoded_bytes: int) -> bytes:
    """Zeros gzipped twice: a body of a couple of kilobytes that decodes to `decoded_bytes`."""
    inner = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(MiB)
    once = b"".join(inner.compress(zeros) for _ in range(decoded_bytes // MiB)) + inner.flush()
    return gzip.compress(once, 9)


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("gzip", gzip.compress(PNG)),
        ("deflate", zlib.compress(PNG)),
        ("deflate, gzip", gzip.compress(zlib.compress(PNG))),  # deflate applied first
        ("identity", PNG),
    ],
    ids=["gzip", "deflate", "deflate-then-gzip", "identity"],
)
async def test_coded_bodies_are_saved_decoded(
    file_server: FileServer, tmp_path: Path, coding: str, body: bytes
) -> None:
    file_server.encoded["a.png"] = (body, coding)
    f = fetcher()
    size, sha = await f.fetch("a.png", f"{file_server.url}/encoded/a.png", tmp_path / "x")
    await f.aclose()
    assert (tmp_path / "x").read_bytes() == PNG
    assert (size, sha) == (len(PNG), hashlib.sha256(PNG).hexdigest())


async def test_a_stacked_gzip_bomb_is_refused_before_it_fills_memory(
    file_server: FileServer, tmp_path: Path
) -> None:
    bomb = stacked_gzip_bomb(256 * MiB)
    assert len(bomb) < 10_000
    file_server.encoded["bomb.png"] = (bomb, "gzip, gzip")
    f = fetcher(max_bytes=MiB)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInputError) as err:
            await f.fetch("bomb.png", f"{file_server.url}/encoded/bomb.png", tmp_path / "x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await f.aclose()
    assert err.value.rule == "max-bytes" and "input 'bomb.png'" in str(err.value)
    # Refused at the first step past the cap.
    assert f"COMFYUI_MAX_INPUT_BYTES ({MiB + STEP} > {MiB} bytes)" in str(err.value)
    # Decoded a step at a time: memory stays near the cap, not at the 256 MiB it decodes to.
    assert peak < 8 * MiB, f"peak {peak / MiB:.0f} MiB"
    assert (tmp_path / "x").stat().st_size <= MiB


@pytest.mark.parametrize(
    ("coding", "body", "says"),
    [
        ("br", b"\x0b\x02\x80PNG\x03", "Content-Encoding br, which inputs do not accept"),
        ("gzip", b"not gzip at all", "is not valid gzip"),
        ("gzip", gzip.compress(PNG)[:-20], "ends before its gzip stream does"),
    ],
    ids=["unknown-coding", "not-gzip", "gzip-cut-short"],
)
async def test_unknown_or_broken_codings_are_refused(
    file_server: FileServer, tmp_path: Path, coding: str, body: bytes, says: str
) -> None:
    file_server.encoded["a.png"] = (body, coding)
    f = fetcher()
    with pytest.raises(InvalidInputError) as err:
        await f.fetch("a.png", f"{file_server.url}/encoded/a.png", tmp_path / "x")
    await f.aclose()
    assert err.value.rule == "content-encoding" and says in str(err.value)
    assert f"input 'a.png': {file_server.url}/encoded/a.png " in str(err.value)
