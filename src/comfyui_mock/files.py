"""Where files live and how they are named: ComfyUI's folder_paths rules for its directories."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Dirs:
    output: Path
    temp: Path
    input: Path

    @classmethod
    def create(cls, output: Path | str, temp: Path | str, input: Path | str) -> Dirs:
        made = []
        for d in (output, temp, input):
            path = Path(d).expanduser().resolve()
            path.mkdir(parents=True, exist_ok=True)
            made.append(path)
        return cls(*made)

    def by_type(self, type_: str | None) -> Path | None:
        return {"output": self.output, "temp": self.temp, "input": self.input}.get(type_ or "")


class UnsafePath(Exception):
    """A name or subfolder that would leave its base directory."""


NAME_MAX = 255
"""Bytes of the longest file or folder name the common file systems (ext4, xfs, btrfs, tmpfs,
APFS) accept."""


def check_name_lengths(relative: str) -> None:
    """Raise what `open()` raises on a real file system for a name over NAME_MAX bytes.

    ComfyUI checks no length before writing, so its handler fails and aiohttp answers 500;
    the mock refuses alike whatever file system its folders are on.
    """
    for part in Path(relative).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), part)


def _inside(base: Path, candidate: str) -> bool:
    return os.path.commonpath((str(base), os.path.abspath(candidate))) == str(base)


def split_annotation(name: str, dirs: Dirs) -> tuple[str, Path | None]:
    """'x.png [output]' -> ('x.png', output dir); names without annotation keep base None."""
    for suffix, base in (("[output]", dirs.output), ("[input]", dirs.input), ("[temp]", dirs.temp)):
        if name.endswith(suffix):
            return name[: -len(suffix) - 1], base
    return name, None


def resolve_annotated(name: Any, dirs: Dirs) -> Path | None:
    """The existing file a loader input names (input dir unless annotated), or None.

    Unlike ComfyUI this refuses names that climb out of their directory: the mock runs on
    developer machines and has no business reading outside its own folders.
    """
    plain, base = split_annotation(name, dirs)
    base = base or dirs.input
    candidate = os.path.join(base, plain)
    if not _inside(base, candidate) or not os.path.exists(candidate):
        return None
    return Path(candidate)


def view_path(query: dict[str, str], dirs: Dirs) -> tuple[int, Path | None]:
    """Resolve a /view query like ComfyUI: (status, file). 200 comes with the file."""
    if "filename" not in query:
        return 404, None
    filename, base = split_annotation(query["filename"], dirs)
    if not filename:
        return 400, None
    if filename[0] == "/" or ".." in filename:
        return 400, None
    if base is None:
        base = dirs.by_type(query.get("type", "output"))
    if base is None:
        return 400, None
    if "subfolder" in query:
        full = os.path.join(base, query["subfolder"])
        if not _inside(base, full):
            return 403, None
        base = Path(full)
    file = Path(base) / os.path.basename(filename)
    if not file.is_file():
        return 404, None
    return 200, file


def _compute_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    values = {
        "%width%": str(width),
        "%height%": str(height),
        "%year%": str(now.tm_year),
        "%month%": str(now.tm_mon).zfill(2),
        "%day%": str(now.tm_mday).zfill(2),
        "%hour%": str(now.tm_hour).zfill(2),
        "%minute%": str(now.tm_min).zfill(2),
        "%second%": str(now.tm_sec).zfill(2),
    }
    for key, value in values.items():
        prefix = prefix.replace(key, value)
    return prefix


@dataclass(frozen=True)
class SaveTarget:
    folder: Path
    filename: str
    counter: int
    subfolder: str


def save_target(filename_prefix: str, base: Path, width: int = 0, height: int = 0) -> SaveTarget:
    """folder_paths.get_save_image_path: subfolder from the prefix, counter past the highest."""
    if "%" in filename_prefix:
        filename_prefix = _compute_vars(filename_prefix, width, height)
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    folder = os.path.join(base, subfolder)
    if os.path.commonpath((str(base), os.path.abspath(folder))) != str(base):
        raise Exception(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {os.path.abspath(folder)}"
            f"\n         output_dir: {base}"
            f"\n         commonpath: {os.path.commonpath((str(base), os.path.abspath(folder)))}"
        )
    os.makedirs(folder, exist_ok=True)
    prefix_len = len(filename)
    counters = [0]
    for existing in os.listdir(folder):
        head = existing[: prefix_len + 1]
        if os.path.normcase(head[:-1]) != os.path.normcase(filename) or head[-1:] != "_":
            continue
        try:
            counters.append(int(existing[prefix_len + 1 :].split("_")[0]))
        except ValueError:
            continue
    return SaveTarget(Path(folder), filename, max(counters) + 1, subfolder)


def write_new(folder: Path, filename: str, counter: int, ext: str, data: bytes) -> tuple[str, int]:
    """Write `{filename}_{counter:05}_{ext}` without ever replacing a file; returns (name, counter).

    The counter moves past names that already exist, so concurrent saves cannot collide.
    """
    while True:
        name = f"{filename}_{counter:05}_{ext}"
        check_name_lengths(name)
        try:
            with open(folder / name, "xb") as fh:
                fh.write(data)
            return name, counter
        except FileExistsError:
            counter += 1


@dataclass(frozen=True)
class Upload:
    name: str
    subfolder: str
    type: str
    path: Path
    duplicate: bool


def store_upload(
    dirs: Dirs,
    filename: str,
    data: bytes,
    subfolder: str,
    type_: str | None,
    overwrite: str | None,
) -> Upload:
    """server.image_upload: same name and bytes -> same file; different bytes -> 'name (1).ext'."""
    upload_type = type_ or "input"
    base = dirs.by_type(upload_type)
    if base is None:
        # ComfyUI joins None into a path here and answers 500.
        raise TypeError(f"unknown upload type {upload_type!r}")
    folder = os.path.join(base, os.path.normpath(subfolder))
    filepath = os.path.abspath(os.path.join(folder, filename))
    if os.path.commonpath((str(base), filepath)) != str(base):
        raise UnsafePath(filename)
    check_name_lengths(os.path.relpath(filepath, base))
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(filename)
    duplicate = False
    if overwrite not in ("true", "1"):
        i = 1
        while os.path.exists(filepath):
            if Path(filepath).read_bytes() == data:
                duplicate = True
                break
            filename = f"{stem} ({i}){ext}"
            filepath = os.path.join(folder, filename)
            check_name_lengths(filename)
            i += 1
    if not duplicate:
        Path(filepath).write_bytes(data)
    return Upload(filename, subfolder, upload_type, Path(filepath), duplicate)
