"""Files read and written in chunks off the event loop, hashed in the same pass."""

from __future__ import annotations

import asyncio
import hashlib
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
    """Chunks of `path` for an upload, as an async iterator; `size` and `sha256` are final
    once they are consumed.

    The file is opened at the first chunk and closed at the end, on an error, once `stop` has
    been called, or by `aclose`: never left to the garbage collector. No generator either: a
    consumer that stops asking (an upload cancelled inside obstore) leaves nothing to finalize.
    """

    def __init__(self, path: Path, chunk_size: int = CHUNK) -> None:
        self.path = path
        self.chunk_size = chunk_size
        self.size = 0
        self._hash = hashlib.sha256()
        self._file: BinaryIO | None = None
        self._closed = False
        self._stop: BaseException | None = None

    def __aiter__(self) -> HashingReader:
        return self

    async def __anext__(self) -> bytes:
        if self._stop is not None:
            await self.aclose()
            raise self._stop
        if self._closed:
            raise StopAsyncIteration
        try:
            if self._file is None:
                self._file = await asyncio.to_thread(self.path.open, "rb")
            # Read and hash in one thread hop: hashlib releases the GIL on large buffers.
            chunk = await asyncio.to_thread(self._read, self._file)
        except BaseException:
            await self.aclose()
            raise
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    def stop(self, reason: BaseException) -> None:
        """Make the next chunk asked for raise `reason` (and close the file)."""
        self._stop = reason

    async def aclose(self) -> None:
        self._closed = True
        if self._file is not None:
            file, self._file = self._file, None
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
