"""Path mode's manifest entries: size and sha256 read once per file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from comfyui_worker.exceptions import OutputError
from comfyui_worker.media.delivery import describe
from comfyui_worker.outputs import FileDigest, OutputFile


def output_file(path: Path) -> OutputFile:
    return OutputFile(
        node_id="9", key="images", filename=path.name, subfolder="", type="output", path=str(path)
    )


async def test_digests_the_run_read_are_taken_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"png")
    known = {str(path): FileDigest(3, "ab" * 32)}
    (entry,) = await describe([output_file(path)], known)
    # Not read again: the run read it moments ago, in the pass that found it on disk.
    assert (entry.size, entry.sha256) == (3, "ab" * 32)
    assert entry.as_dict()["mime"] == "image/png"


async def test_files_without_a_digest_are_read_now(tmp_path: Path) -> None:
    first, second = tmp_path / "a.png", tmp_path / "b.webm"
    first.write_bytes(b"png")
    second.write_bytes(b"video bytes")
    known = {str(first): FileDigest(3, "ab" * 32)}
    entries = await describe([output_file(first), output_file(second)], known)
    assert [(e.size, e.sha256) for e in entries] == [
        (3, "ab" * 32),
        (11, hashlib.sha256(b"video bytes").hexdigest()),
    ]


async def test_a_file_gone_since_the_run_is_named(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"'gone.png' is no longer on disk"):
        await describe([output_file(tmp_path / "gone.png")])
