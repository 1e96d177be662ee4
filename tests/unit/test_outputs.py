from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from comfyui_worker.exceptions import UnsafeOutputPathError
from comfyui_worker.outputs import FileDigest, OutputDirs, find_outputs, parse_outputs


@pytest.fixture
def dirs(tmp_path: Path) -> OutputDirs:
    for name in ("output", "temp", "input"):
        (tmp_path / name).mkdir()
    return OutputDirs(output=tmp_path / "output", temp=tmp_path / "temp", input=tmp_path / "input")


def test_every_recorded_output_type(dirs: OutputDirs, capture: Any) -> None:
    body = capture("11_output_types")["history_after"]["body"]
    (entry,) = body.values()
    files, texts = parse_outputs(entry["outputs"], dirs)
    by_key = {(f.node_id, f.key) for f in files}
    assert {
        ("21", "latents"),
        ("41", "audio"),
        ("42", "audio"),
        ("13", "images"),
        ("15", "images"),
        ("10", "images"),
    } <= by_key
    assert [t.as_dict() for t in texts] == [{"node_id": "31", "key": "text", "text": "64"}]
    # Node order is numeric, not the order ComfyUI happened to write them.
    ids = [int(f.node_id) for f in files]
    assert ids == sorted(ids)
    video = next(f for f in files if f.node_id == "15")
    assert video.path == str(dirs.output.resolve() / "peer" / "s11_video_00001_.mp4")
    preview = next(f for f in files if f.node_id == "10")
    assert preview.type == "temp"
    assert preview.path == str(dirs.temp.resolve() / "ComfyUI_temp_rbmve_00001_.png")
    assert len([f for f in files if f.node_id == "10"]) == 4


def test_custom_keys_with_file_items_are_outputs(dirs: OutputDirs) -> None:
    outputs = {
        "9": {
            "gifs": [
                {
                    "filename": "clip_00001.mp4",
                    "subfolder": "vhs",
                    "type": "output",
                    "format": "video/h264-mp4",
                }
            ]
        },
        "10": {"3d": [{"filename": "mesh.glb", "subfolder": "", "type": "output"}]},
        "2": {
            "images": [{"filename": "a.png", "subfolder": "", "type": "output"}],
            "animated": [False],
        },
    }
    files, texts = parse_outputs(outputs, dirs)
    assert [(f.node_id, f.key, f.filename) for f in files] == [
        ("2", "images", "a.png"),
        ("9", "gifs", "clip_00001.mp4"),
        ("10", "3d", "mesh.glb"),
    ]
    assert files[1].path.endswith(os.path.join("output", "vhs", "clip_00001.mp4"))
    assert texts == []


@pytest.mark.parametrize(
    ("filename", "subfolder", "why"),
    [
        ("../../etc/passwd", "", "filename contains '..'"),
        ("x.png", "../elsewhere", "subfolder contains '..'"),
        ("x.png", "a/../../b", "subfolder contains '..'"),
        ("/etc/passwd", "", "filename is an absolute path"),
        ("x.png", "/tmp", "subfolder is an absolute path"),
        ("x.png", "C:\\Windows", "subfolder is an absolute path"),
        ("..\\..\\secret", "", "filename contains '..'"),
        ("", "", "empty filename"),
        ("a\x00.png", "", "NUL byte"),
    ],
)
def test_traversal_is_rejected(dirs: OutputDirs, filename: str, subfolder: str, why: str) -> None:
    outputs = {"5": {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}}
    with pytest.raises(UnsafeOutputPathError, match=why) as info:
        parse_outputs(outputs, dirs)
    assert info.value.node_id == "5" and "node 5 output 'images'" in str(info.value)


def test_symlink_escaping_the_directory_is_rejected(dirs: OutputDirs, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (dirs.output / "link").symlink_to(secret)
    outputs = {"3": {"images": [{"filename": "k.pem", "subfolder": "link", "type": "output"}]}}
    with pytest.raises(UnsafeOutputPathError, match="resolves outside the output directory"):
        parse_outputs(outputs, dirs)


def test_symlink_inside_the_directory_is_fine(dirs: OutputDirs) -> None:
    (dirs.output / "real").mkdir()
    (dirs.output / "alias").symlink_to(dirs.output / "real")
    outputs = {"3": {"images": [{"filename": "k.png", "subfolder": "alias", "type": "output"}]}}
    (file,) = parse_outputs(outputs, dirs)[0]
    assert file.path == str(dirs.output / "alias" / "k.png")


def test_a_symlinked_folder_stays_in_the_returned_path(tmp_path: Path) -> None:
    # A volume mounted elsewhere and linked in: other tasks mount the configured path.
    (tmp_path / "volume").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "volume")
    dirs = OutputDirs(output=tmp_path / "link", temp=tmp_path / "link")
    outputs = {"3": {"images": [{"filename": "k.png", "subfolder": "a", "type": "output"}]}}
    (file,) = parse_outputs(outputs, dirs)[0]
    assert file.path == str(tmp_path / "link" / "a" / "k.png")
    escape = {"3": {"images": [{"filename": "k", "subfolder": "../volume", "type": "output"}]}}
    with pytest.raises(UnsafeOutputPathError):
        parse_outputs(escape, dirs)


def test_unknown_type_is_rejected(dirs: OutputDirs) -> None:
    outputs = {"3": {"images": [{"filename": "k.png", "subfolder": "", "type": "cloud"}]}}
    with pytest.raises(UnsafeOutputPathError, match="unknown type 'cloud'"):
        parse_outputs(outputs, dirs)


async def test_find_outputs_names_the_files_not_on_disk_and_reads_digests_when_asked(
    dirs: OutputDirs, capture: Any
) -> None:
    body = capture("03_load_invert_save")
    entry = next(iter(body["history_after"]["body"].values()))
    files, texts = parse_outputs(entry["outputs"], dirs)
    assert len(files) > 1
    found = await find_outputs(entry["outputs"], dirs)
    assert (found.files, found.texts, found.missing) == (files, texts, files)
    Path(files[0].path).parent.mkdir(parents=True, exist_ok=True)
    Path(files[0].path).write_bytes(b"png")
    found = await find_outputs(entry["outputs"], dirs)
    assert found.missing == files[1:] and found.digests == {}
    found = await find_outputs(entry["outputs"], dirs, digest=True)
    assert found.missing == files[1:]
    assert found.digests == {files[0].path: FileDigest(3, hashlib.sha256(b"png").hexdigest())}
