"""Files read and written in chunks off the event loop, hashed in the same pass."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

CHUNK = 1024 * 1024


class FileSink:
    """Write chunks to `path`, counting bytes and computing sha256 as they pass."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._hash = hashlib.sha256()
        self._file: BinaryIO | None = None

    async def __aenter__(self) -> FileSink:
        self._file = await asyncio.to_thread(self.path.open, "wb")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            await asyncio.to_thread(self._file.close)

    async def write(self, chunk: bytes) -> None:
        assert self._file is not None, "use FileSink as an async context manager"
        self._hash.update(chunk)
        self.size += len(chunk)
        await asyncio.to_thread(self._file.write, chunk)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class HashingReader:
    """Chunks of `path` for an upload; `size` and `sha256` are final once they are consumed."""

    def __init__(self, path: Path, chunk_size: int = CHUNK) -> None:
        self.path = path
        self.chunk_size = chunk_size
        self.size = 0
        self._hash = hashlib.sha256()

    async def chunks(self) -> AsyncIterator[bytes]:
        file = await asyncio.to_thread(self.path.open, "rb")
        try:
            # Read and hash in one thread hop: hashlib releases the GIL on large buffers.
            while chunk := await asyncio.to_thread(self._read, file):
                yield chunk
        finally:
            await asyncio.to_thread(file.close)

    def _read(self, file: BinaryIO) -> bytes:
        chunk = file.read(self.chunk_size)
        self._hash.update(chunk)
        self.size += len(chunk)
        return chunk

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def file_digest(path: Path) -> tuple[int, str]:
    """(size, sha256) of a file; blocking, for a worker thread."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
