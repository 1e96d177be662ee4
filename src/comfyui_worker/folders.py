"""Whether this process sees ComfyUI's folders where the settings say: checked at start, and
asked again whenever a file ComfyUI reported is not there.

A file ComfyUI reported that is not on disk here is one of three:

- kept: the caller delivered it elsewhere and removed it (store mode with
  COMFYUI_CLEANUP=outputs) while ComfyUI's cache still points at it; the caller delivers it
  again from there (`KeptFiles`), with no GPU work;
- not visible here: ComfyUI still serves it on `/view`, so COMFYUI_OUTPUT_DIR (or
  COMFYUI_TEMP_DIR) names another folder. Running the prompt again cannot fix that, so it is
  reported at once (FolderMappingError);
- gone: ComfyUI no longer has it either. The Executor drops ComfyUI's cache and runs the
  prompt again, which makes it anew.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

from .comfyui.client import ComfyUIClient
from .comfyui.models import HistoryEntry
from .exceptions import ConfigurationError, FolderMappingError, OutputMissingError
from .outputs import (
    FoundOutputs,
    KeptFiles,
    OutputDirs,
    OutputFile,
    describe_files,
    find_outputs,
    folder_variable,
    folder_variables,
)

log = logging.getLogger(__name__)

# The start check's file, in each folder: one name, overwritten at every start.
PROBE_SUBFOLDER = ".comfyui-worker"
PROBE_NAME = "folder-check.txt"
# Another worker starting against the same ComfyUI (the fault soak runs two per ComfyUI) may
# write its own token between our write and our read: a few tries, apart by a random pause.
PROBE_TRIES = 5
PROBE_PAUSE = 0.2
CHECKED_FOLDERS = ("output", "temp")


async def locate(
    entry: HistoryEntry,
    dirs: OutputDirs,
    client: ComfyUIClient,
    *,
    digest: bool,
    kept: KeptFiles | None,
) -> FoundOutputs:
    """`find_outputs` for a finished entry, with the files that are not on disk sorted:
    those `kept` holds leave `missing` for `kept`, and a file ComfyUI still serves raises
    FolderMappingError. What stays in `missing` is gone from ComfyUI too."""
    found = await find_outputs(entry.outputs, dirs, digest=digest)
    if not found.missing:
        return found
    held = {f.path for f in found.missing if kept is not None and kept.holds(f, entry.prompt)}
    gone = [f for f in found.missing if f.path not in held]
    await _raise_if_served(client, dirs, entry.prompt_id, gone)
    return replace(found, missing=gone, kept=frozenset(held))


def still_missing(prompt_id: str, files: list[OutputFile]) -> OutputMissingError:
    """Files ComfyUI neither has nor made again when it ran the prompt once more."""
    return OutputMissingError(
        f"ComfyUI reported {describe_files(files)}, which do not exist even after it ran the "
        f"prompt again with its cache cleared, and ComfyUI does not have them either; is "
        f"{folder_variables(files)} the folder ComfyUI writes to, and does something remove "
        "its files?",
        prompt_id=prompt_id,
        missing=[f.path for f in files],
    )


async def _raise_if_served(
    client: ComfyUIClient, dirs: OutputDirs, prompt_id: str, files: list[OutputFile]
) -> None:
    # One file per folder tells: a wrong setting hides every file of its folder alike.
    for first in {f.type: f for f in reversed(files)}.values():
        if not await client.serves(first.filename, first.subfolder, first.type):
            continue
        if await asyncio.to_thread(os.path.isfile, first.path):
            continue  # written again meanwhile (a new file of that name): not a setting
        folder = dirs.for_type(first.type)
        assert folder is not None  # parse_outputs resolved the file inside it
        variable = folder_variable(first.type)
        hidden = [f for f in files if f.type == first.type]
        hint = await asyncio.to_thread(
            _parent_hint, variable, folder, first.type, Path(first.subfolder, first.filename)
        )
        raise FolderMappingError(
            f"ComfyUI still has {describe_files(hidden)} (it serves them on /view), but "
            f"they are not in {folder} here: {variable} is not ComfyUI's {first.type} folder "
            f"as mounted in this process{hint}. A configuration error; running the prompt "
            "again would not help",
            prompt_id=prompt_id,
            missing=[f.path for f in hidden],
            variable=variable,
            folder=str(folder),
        )


def _parent_hint(variable: str, folder: Path, kind: str, relative: Path) -> str:
    """Blocking. ComfyUI's `--temp-directory X` keeps its files in X/temp: a setting of X
    (or of ComfyUI's base folder for output) is the common mistake, so name the fix."""
    below = folder / kind
    if (below / relative).is_file():
        return f" (the file is in {below}: set {variable}={below})"
    return ""


async def check_folders(client: ComfyUIClient, dirs: OutputDirs) -> None:
    """At start: write a small file into ComfyUI's output and temp folders through its API
    and look for it in the folders as mounted here.

    Raises ConfigurationError naming the variable when the file is not there, and
    ComfyUIError when ComfyUI will not take the file (then nothing could be checked).
    """
    for kind in CHECKED_FOLDERS:
        folder = dirs.for_type(kind)
        assert folder is not None
        await _probe(client, kind, folder)


async def _probe(client: ComfyUIClient, kind: str, folder: Path) -> None:
    for _ in range(PROBE_TRIES):
        token = f"comfyui-worker folder check {uuid.uuid4().hex}\n".encode()
        source = Path(await asyncio.to_thread(_write_temp, token))
        try:
            written = await client.upload_image(
                source, PROBE_NAME, folder=kind, subfolder=PROBE_SUBFOLDER, overwrite=True
            )
        finally:
            await asyncio.to_thread(source.unlink, missing_ok=True)
        relative = Path(written.subfolder, written.name)
        seen = await asyncio.to_thread(_read, folder / relative)
        if seen == token:
            log.info("%s=%s is ComfyUI's %s folder (checked)", folder_variable(kind), folder, kind)
            return
        if seen is None:
            break
        await asyncio.sleep(random.uniform(0, PROBE_PAUSE))
    variable = folder_variable(kind)
    hint = await asyncio.to_thread(_parent_hint, variable, folder, kind, relative)
    raise ConfigurationError(
        f"{variable}={folder} is not ComfyUI's {kind} folder as mounted here: ComfyUI wrote "
        f"{relative} into its {kind} folder, and {folder / relative} "
        f"{'does not exist' if seen is None else 'holds other bytes'}{hint}"
    )


def _write_temp(data: bytes) -> str:
    handle, name = tempfile.mkstemp(prefix="comfyui-worker-check-")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    return name


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
