"""Turn a history entry's `outputs` into files on disk and texts.

ComfyUI's keys vary by node (`images`, `gifs`, `audio`, `video`, `latents`, `3d`, custom ones),
so every key is read and any list of `{filename, subfolder, type}` items counts as files. Names
come from ComfyUI, i.e. from whatever a custom node wrote: each is checked to stay inside its
directory, symlinks included, before its path is handed to anyone.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Protocol

from .exceptions import UnsafeOutputPathError
from .streams import file_digest


@dataclass(frozen=True, slots=True)
class OutputFile:
    node_id: str
    key: str
    filename: str
    subfolder: str
    type: str
    path: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class OutputText:
    node_id: str
    key: str
    text: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputDirs:
    """Where ComfyUI's folders are mounted in this process, by item `type`."""

    output: Path
    temp: Path
    input: Path | None = None

    def for_type(self, item_type: str) -> Path | None:
        return {"output": self.output, "temp": self.temp, "input": self.input}.get(item_type)


def node_order(node_id: str) -> tuple[int, ...] | tuple[int, str]:
    """Numeric ids ("2" < "10") first in number order, then the rest by name."""
    if re.fullmatch(r"\d+", node_id):
        return (0, int(node_id))
    return (1, node_id)


def parse_outputs(
    outputs: dict[str, dict[str, Any]], dirs: OutputDirs
) -> tuple[list[OutputFile], list[OutputText]]:
    """Files and texts of every output node, in node order; raises UnsafeOutputPathError."""
    files: list[OutputFile] = []
    texts: list[OutputText] = []
    for node_id in sorted(outputs, key=node_order):
        for key, items in outputs[node_id].items():
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, str):
                    texts.append(OutputText(node_id=node_id, key=key, text=item))
                elif isinstance(item, dict) and isinstance(item.get("filename"), str):
                    files.append(_resolve(node_id, key, item, dirs))
                # Anything else (`animated: [true]`, numbers) is metadata, not an output.
    return files, texts


@dataclass(frozen=True, slots=True)
class FileDigest:
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class FoundOutputs:
    """A history entry's outputs, which of its files are not on disk and, when asked for,
    the others' size and sha256 by path. `kept`: paths of files not on disk that the
    caller holds elsewhere (`KeptFiles`), which are not `missing`."""

    files: list[OutputFile]
    texts: list[OutputText]
    missing: list[OutputFile]
    digests: dict[str, FileDigest]
    kept: frozenset[str] = frozenset()


class KeptFiles(Protocol):
    """Output files the caller delivered elsewhere and then removed from ComfyUI's folders,
    which ComfyUI's cache may still point at (store mode with COMFYUI_CLEANUP=outputs)."""

    def holds(self, file: OutputFile, prompt: dict[str, Any] | None) -> bool:
        """Whether the caller can deliver `file`, as `prompt` made it, without it on disk."""
        ...


async def find_outputs(
    outputs: dict[str, dict[str, Any]], dirs: OutputDirs, *, digest: bool = False
) -> FoundOutputs:
    """`parse_outputs`, then each file checked on disk (and read for its digest if `digest`),
    off the event loop (resolving symlinks and reading files touch a possibly remote volume)
    in one trip to a thread: each trip costs a job about 0.1-0.3 ms."""

    def find() -> FoundOutputs:
        files, texts = parse_outputs(outputs, dirs)
        missing: list[OutputFile] = []
        digests: dict[str, FileDigest] = {}
        for file in files:
            try:
                if not os.path.isfile(file.path):
                    raise FileNotFoundError(file.path)
                if digest:
                    digests[file.path] = FileDigest(*file_digest(Path(file.path)))
            except FileNotFoundError:  # also when removed between the check and the read
                missing.append(file)
        return FoundOutputs(files, texts, missing, digests)

    return await asyncio.to_thread(find)


def describe_files(files: list[OutputFile]) -> str:
    """ "3 output file(s) /a.png (node 9 'images'), ..." for messages: at most five named."""
    shown = ", ".join(f"{f.path} (node {f.node_id} {f.key!r})" for f in files[:5])
    more = f" and {len(files) - 5} more" if len(files) > 5 else ""
    return f"{len(files)} output file(s) {shown}{more}"


def folder_variable(item_type: str) -> str:
    """The setting that says where ComfyUI's folder of this type (output, temp, input) is
    mounted."""
    return f"COMFYUI_{item_type.upper()}_DIR"


def folder_variables(files: list[OutputFile]) -> str:
    """The settings that say where these files' folders are mounted."""
    return " / ".join(sorted({folder_variable(f.type) for f in files}))


def _resolve(node_id: str, key: str, item: dict[str, Any], dirs: OutputDirs) -> OutputFile:
    filename = item["filename"]
    subfolder = item.get("subfolder") or ""
    item_type = item.get("type") or "output"

    def reject(why: str) -> UnsafeOutputPathError:
        return UnsafeOutputPathError(
            f"node {node_id} output {key!r}: refusing file {filename!r} in subfolder "
            f"{subfolder!r}: {why}",
            node_id=node_id,
            filename=str(filename),
            subfolder=str(subfolder),
        )

    if not isinstance(subfolder, str) or not isinstance(item_type, str):
        raise reject("subfolder and type must be strings")
    base = dirs.for_type(item_type)
    if base is None:
        raise reject(f"unknown type {item_type!r} (no directory configured for it)")
    if not filename or filename in (".", ".."):
        raise reject("empty filename")
    for part_name, value in (("filename", filename), ("subfolder", subfolder)):
        if "\x00" in value:
            raise reject(f"{part_name} contains a NUL byte")
        if (
            PurePosixPath(value).is_absolute()
            or PureWindowsPath(value).is_absolute()
            or (PureWindowsPath(value).drive)
        ):
            raise reject(f"{part_name} is an absolute path")
        if ".." in re.split(r"[\\/]", value):
            raise reject(f"{part_name} contains '..'")
    # Safety is judged on the resolved path; the path handed out keeps the configured folder,
    # which is what other tasks mount (the folder itself is often a symlink to a volume).
    root = Path(os.path.realpath(base))
    resolved = Path(os.path.realpath(root / subfolder / filename))
    if not resolved.is_relative_to(root):
        raise reject(f"it resolves outside the {item_type} directory {root}")
    return OutputFile(
        node_id=node_id,
        key=key,
        filename=filename,
        subfolder=subfolder,
        type=item_type,
        path=os.path.join(os.path.abspath(base), subfolder, filename),
    )
