"""The record of stored-and-removed outputs: keyed by path and by what the node computed."""

from __future__ import annotations

import copy
from typing import Any

from job_stack import generated

from comfyui_worker.media.kept import KeptObject, KeptOutputs, node_signature
from comfyui_worker.outputs import OutputFile

FILE = OutputFile("2", "images", "gen_00001_.jpg", "", "output", "/out/gen_00001_.jpg")
STORED = KeptObject(uri="s3://b/p/2/gen_00001_.jpg", size=10, sha256="ab")


def renumbered(prompt: dict[str, Any]) -> dict[str, Any]:
    """The same graph under other node ids, as another workflow file may have it."""
    ids = {"1": "10", "2": "20"}
    out = {}
    for nid, node in copy.deepcopy(prompt).items():
        for key, value in node["inputs"].items():
            if isinstance(value, list):
                node["inputs"][key] = [ids[value[0]], value[1]]
        out[ids[nid]] = node
    return out


def test_one_computation_has_one_signature_whatever_the_node_ids() -> None:
    prompt = generated()
    assert node_signature(prompt, "2") == node_signature(renumbered(prompt), "20")
    assert node_signature(prompt, "2") != node_signature(generated(color=4), "2")
    assert node_signature(prompt, "2") != node_signature(generated("other"), "2")
    assert node_signature(prompt, "9") is None
    loop = {"1": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}}
    assert node_signature(loop, "1") is None


def test_a_file_of_the_same_name_from_another_computation_is_not_taken_for_it() -> None:
    kept = KeptOutputs()
    kept.remember([(FILE, STORED)], generated())
    assert kept.get(FILE, generated()) == STORED
    # Cleanup emptied the folder, so another job's node wrote a file of this very name.
    assert not kept.holds(FILE, generated(color=9))
    assert not kept.holds(FILE, None)


def test_a_path_two_outputs_name_is_not_recorded() -> None:
    prompt = generated()
    prompt["3"] = copy.deepcopy(prompt["2"]) | {
        "inputs": {"images": ["1", 0], "filename_prefix": "x"}
    }
    twin = OutputFile("3", "images", FILE.filename, "", "output", FILE.path)
    kept = KeptOutputs()
    kept.remember([(FILE, STORED), (twin, STORED)], prompt)
    assert not kept.holds(FILE, prompt) and not kept.holds(twin, prompt)


def test_the_record_keeps_the_newest() -> None:
    kept = KeptOutputs(limit=2)
    files = [OutputFile("2", "images", f"{i}.jpg", "", "output", f"/o/{i}.jpg") for i in range(3)]
    for file in files:
        kept.remember([(file, STORED)], generated())
    assert [kept.holds(f, generated()) for f in files] == [False, True, True]
    kept.forget(files[2], generated())
    assert not kept.holds(files[2], generated())
