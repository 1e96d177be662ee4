"""After the job: its output files delivered as paths, inline base64 or objects in a store.

Store keys are `<prefix>/<prompt_id>/<node_id>/<filename>`: the same for every attempt of one
TaskRun, so a retry overwrites what an earlier attempt uploaded, and a retry that reuses a
finished prompt delivers its outputs again. A job succeeds only once every file is stored;
then COMFYUI_CLEANUP=outputs removes the files, remembering where each went (`kept`), so a
repeat that ComfyUI serves from its cache is delivered by copying the stored objects.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..constants import OutputMode
from ..exceptions import InvalidJobError, OutputError, OutputStoreError, OutputTooLargeError
from ..outputs import FileDigest, OutputFile
from ..results import JobResult
from ..settings import Settings
from ..streams import file_digest
from .kept import KeptObject, KeptOutputs
from .manifest import DeliveredFile, mime_of
from .store import Location, ObjectStores

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutputRequest:
    """How one job wants its outputs: the envelope's `output`, defaults applied."""

    mode: OutputMode
    presign_seconds: int | None = None

    @property
    def digests_in_run(self) -> bool:
        """Path mode describes files by size and sha256: `Executor.run` reads them in the
        pass that finds the files (`digest_files`), so delivery reads no file again."""
        return self.mode is OutputMode.PATH


class Delivery:
    """Delivers a JobResult's files the way a job asks; one per process."""

    def __init__(self, settings: Settings, stores: ObjectStores) -> None:
        self.settings = settings
        self.stores = stores
        self.store_root = Location.parse(settings.output_store) if settings.output_store else None
        self.kept = KeptOutputs()

    def kept_for(self, request: OutputRequest) -> KeptOutputs | None:
        """What `Executor.run` may take as delivered without the file on disk: only store
        mode can deliver a removed file again (path and base64 need its bytes here)."""
        return self.kept if request.mode is OutputMode.STORE else None

    def request(self, mode: OutputMode | None, presign_seconds: int | None) -> OutputRequest:
        """The job's choices with the deployment's defaults; refuses what cannot be done."""
        chosen = mode or self.settings.output_mode
        if chosen is OutputMode.STORE and self.store_root is None:
            raise InvalidJobError(
                "output mode 'store' needs an object store, and this worker has none "
                "(COMFYUI_OUTPUT_STORE is not set)"
            )
        if presign_seconds is not None and chosen is not OutputMode.STORE:
            raise InvalidJobError(
                f"output.presign_seconds only applies to output mode 'store', not {chosen.value!r}"
            )
        return OutputRequest(chosen, presign_seconds)

    async def deliver(self, result: JobResult, request: OutputRequest) -> dict[str, Any]:
        """The task result with `files` typed and `outputs` as the mode delivers them."""
        if request.mode is OutputMode.STORE:
            keys = self.keys_for(result.prompt_id, result.files)
            files = [
                await self.store_file(f, result.prompt_id, request, where=where)
                if f.path not in result.kept
                else await self.copy_kept(f, result, request, where)
                for f, where in zip(result.files, keys, strict=True)
            ]
            if self.settings.cleanup.outputs:
                await self.remove_stored(result, files)
        elif request.mode is OutputMode.BASE64:
            files = await self.inline(result.files)
        else:
            files = await describe(result.files, result.digests)
        out = result.to_dict()
        out["outputs"] = [f.delivered(request.mode) for f in files]
        out["files"] = [f.as_dict() for f in files]
        return out

    def keys_for(self, prompt_id: str, files: list[OutputFile]) -> list[Location]:
        """`<prefix>/<prompt_id>/<node_id>/<filename>` for each file. Files that would share
        one (a node's outputs of one name in two subfolders, or in output and temp) have
        `<type>/<subfolder>/` before the name instead: else the second upload would replace
        the first, whose entry would still name the key."""
        plain = [self.key_for(prompt_id, f) for f in files]
        counts = Counter(where.key for where in plain)
        return [
            self.key_for(prompt_id, f, qualified=True) if counts[where.key] > 1 else where
            for f, where in zip(files, plain, strict=True)
        ]

    def key_for(self, prompt_id: str, file: OutputFile, *, qualified: bool = False) -> Location:
        assert self.store_root is not None
        parts = [self.store_root.key, prompt_id, file.node_id]
        if qualified:
            parts += [file.type, file.subfolder]
        return Location(
            self.store_root.scheme,
            self.store_root.bucket,
            "/".join([*filter(None, parts), file.filename]),
        )

    async def store_file(
        self,
        file: OutputFile,
        prompt_id: str,
        request: OutputRequest,
        *,
        where: Location | None = None,
    ) -> DeliveredFile:
        path = await _existing(file)
        where = where or self.key_for(prompt_id, file)
        stored = await self.stores.upload(path, where, mime=mime_of(file.filename))
        url = (
            await self.stores.presign(where, request.presign_seconds)
            if request.presign_seconds
            else None
        )
        log.info("prompt %s: %s -> %s (%d bytes)", prompt_id, path, stored.uri, stored.size)
        return DeliveredFile.describe(
            file, size=stored.size, sha256=stored.sha256, uri=stored.uri, url=url
        )

    async def copy_kept(
        self, file: OutputFile, result: JobResult, request: OutputRequest, where: Location
    ) -> DeliveredFile:
        """A file this worker stored and removed, which ComfyUI's cache still points at: its
        stored object copied to this job's key (or found there, on a retry of its job)."""
        kept = self.kept.get(file, result.prompt)
        if kept is None or not await self.stores.exists(Location.parse(kept.uri)):
            self.kept.forget(file, result.prompt)
            raise OutputStoreError(
                f"node {file.node_id} output {file.filename!r} was removed from {file.path} "
                f"after it was stored, and its stored copy is gone too; a retry runs the "
                "prompt again",
                bucket=where.bucket,
            )
        if (source := Location.parse(kept.uri)) != where:
            await self.stores.copy(source, where)
        url = (
            await self.stores.presign(where, request.presign_seconds)
            if request.presign_seconds
            else None
        )
        log.info("prompt %s: %s (stored earlier) -> %s", result.prompt_id, kept.uri, where.uri())
        return DeliveredFile.describe(
            file, size=kept.size, sha256=kept.sha256, uri=where.uri(), url=url
        )

    async def remove_stored(self, result: JobResult, files: list[DeliveredFile]) -> None:
        """COMFYUI_CLEANUP=outputs, once every file is in the store (until then the local
        copy is the only one), remembering where each went for a repeat of the job."""
        stored = [
            (f.file, KeptObject(uri=f.uri, size=f.size, sha256=f.sha256))
            for f in files
            if f.uri is not None
        ]
        self.kept.remember(stored, result.prompt)
        await remove_files([Path(f.file.path) for f in files])

    async def inline(self, files: list[OutputFile]) -> list[DeliveredFile]:
        sizes = [await _size(f) for f in files]
        carried = sum(inline_chars(f, size) for f, size in zip(files, sizes, strict=True))
        if carried > self.settings.max_inline_bytes:
            raise OutputTooLargeError(
                f"the {len(files)} output file(s) ({sum(sizes)} bytes) would carry {carried} "
                f"characters of base64 in the result, over COMFYUI_MAX_INLINE_BYTES "
                f"({self.settings.max_inline_bytes}); use output mode 'store' for outputs "
                "this large",
                size=carried,
                limit=self.settings.max_inline_bytes,
            )
        return [await _inline_one(f) for f in files]


def inline_chars(file: OutputFile, size: int) -> int:
    """Characters base64 mode adds for one file: in `files` and as a data URL in `outputs`."""
    encoded = 4 * ((size + 2) // 3)
    return 2 * encoded + len(f"data:{mime_of(file.filename)};base64,")


async def describe(
    files: list[OutputFile], known: Mapping[str, FileDigest] | None = None
) -> list[DeliveredFile]:
    """Path mode: each file's size and sha256, as `Executor.run` read them when it found the
    files (`digest_files`), else read now, in one trip to a thread for them all."""

    def measure() -> list[DeliveredFile]:
        return [_described(f, known.get(f.path) if known else None) for f in files]

    if known is not None and all(f.path in known for f in files):
        return measure()
    return await asyncio.to_thread(measure)


def _described(file: OutputFile, digest: FileDigest | None) -> DeliveredFile:
    if digest is None:  # blocking: only ever called in a worker thread
        digest = FileDigest(*file_digest(_existing_now(file)))
    return DeliveredFile.describe(file, size=digest.size, sha256=digest.sha256)


async def _inline_one(file: OutputFile) -> DeliveredFile:
    data = await asyncio.to_thread(Path(file.path).read_bytes)
    size, sha256 = len(data), await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    encoded = base64.b64encode(data).decode("ascii")
    return DeliveredFile.describe(file, size=size, sha256=sha256, base64=encoded)


async def _existing(file: OutputFile) -> Path:
    return await asyncio.to_thread(_existing_now, file)


def _existing_now(file: OutputFile) -> Path:
    """The file, checked again (blocking): Executor.run found it, but the job's cleanup or
    someone else's may have removed it since."""
    path = Path(file.path)
    if not path.is_file():
        raise OutputError(
            f"node {file.node_id} output {file.filename!r} is no longer on disk at {path}"
        )
    return path


async def _size(file: OutputFile) -> int:
    path = await _existing(file)
    return (await asyncio.to_thread(path.stat)).st_size


async def remove_files(paths: list[Path], *, inside: Path | None = None) -> None:
    """COMFYUI_CLEANUP, best effort: a read-only mount must not fail a finished job.

    Relative paths are taken under `inside`, and nothing outside it is touched.
    """

    def remove() -> None:
        root = inside.resolve() if inside is not None else None
        for path in paths:
            target = (root / path).resolve() if root is not None else path
            if root is not None and not target.is_relative_to(root):
                log.warning("cleanup: %s is outside %s; left alone", path, root)
                continue
            try:
                target.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cleanup: cannot remove %s: %s", target, exc)

    await asyncio.to_thread(remove)
