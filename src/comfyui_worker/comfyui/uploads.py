"""The body and the answer of ComfyUI's `POST /upload/image`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ..streams import HashingReader


@dataclass(frozen=True, slots=True)
class UploadResult:
    name: str
    subfolder: str
    type: str

    @property
    def annotated(self) -> str:
        """How a loader node refers to the file: "subfolder/name" or just "name"."""
        return f"{self.subfolder}/{self.name}" if self.subfolder else self.name


async def multipart(
    boundary: str, path: Path, filename: str, fields: dict[str, str]
) -> AsyncIterator[bytes]:
    """multipart/form-data with the file as `image`, read in chunks off the event loop."""
    for name, value in fields.items():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{quoted}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    reader = HashingReader(path)
    try:
        async for chunk in reader:
            yield chunk
    finally:
        await reader.aclose()
    yield f"\r\n--{boundary}--\r\n".encode()
