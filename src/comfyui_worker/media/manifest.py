"""The typed manifest entry of one output file: what it is and where it was delivered."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from ..constants import OutputMode
from ..outputs import OutputFile


class FileKind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    LATENT = "latent"
    MODEL_3D = "3d"
    OTHER = "other"


# Fixed here rather than left to the host's mime database, so every worker answers alike.
MIME_BY_SUFFIX = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".exr": "image/x-exr",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".avi": "video/x-msvideo",
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".ogg": "audio/ogg",
    ".opus": "audio/opus",
    ".m4a": "audio/mp4",
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".obj": "model/obj",
    ".stl": "model/stl",
    ".ply": "model/ply",
    ".fbx": "application/octet-stream",
    ".latent": "application/octet-stream",
    ".safetensors": "application/octet-stream",
    ".json": "application/json",
    ".txt": "text/plain",
}
KIND_BY_MIME_TYPE = {
    "image": FileKind.IMAGE,
    "video": FileKind.VIDEO,
    "audio": FileKind.AUDIO,
    "model": FileKind.MODEL_3D,
}
KIND_BY_SUFFIX = {".latent": FileKind.LATENT, ".fbx": FileKind.MODEL_3D}
KIND_BY_KEY = {"latents": FileKind.LATENT, "3d": FileKind.MODEL_3D}


def mime_of(filename: str) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    return (
        MIME_BY_SUFFIX.get(suffix)
        or mimetypes.guess_type(filename, strict=False)[0]
        or "application/octet-stream"
    )


def kind_of(filename: str, key: str, mime: str) -> FileKind:
    suffix = PurePosixPath(filename).suffix.lower()
    return (
        KIND_BY_SUFFIX.get(suffix)
        or KIND_BY_MIME_TYPE.get(mime.partition("/")[0])
        or KIND_BY_KEY.get(key)
        or FileKind.OTHER
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveredFile:
    """One output file as the result lists it in `files`."""

    file: OutputFile
    kind: FileKind
    mime: str
    size: int
    sha256: str
    uri: str | None = None
    url: str | None = None
    base64: str | None = None

    @classmethod
    def describe(cls, file: OutputFile, *, size: int, sha256: str, **where: Any) -> DeliveredFile:
        mime = mime_of(file.filename)
        return cls(
            file=file,
            kind=kind_of(file.filename, file.key, mime),
            mime=mime,
            size=size,
            sha256=sha256,
            **where,
        )

    def delivered(self, mode: OutputMode) -> str:
        """What `outputs` lists for this file: its path, URI or data URL."""
        if mode is OutputMode.STORE and self.uri is not None:
            return self.uri
        if mode is OutputMode.BASE64 and self.base64 is not None:
            return f"data:{self.mime};base64,{self.base64}"
        return self.file.path

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = self.file.as_dict()
        entry.update(kind=self.kind.value, mime=self.mime, size=self.size, sha256=self.sha256)
        for name in ("uri", "url", "base64"):
            if (value := getattr(self, name)) is not None:
                entry[name] = value
        return entry
