"""How a job's input files are named in ComfyUI, and which node inputs refer to them.

A node input refers to an input file when its value equals the file's name and ComfyUI
declares it a list (combo) input, as every loader's file choice is (LoadImage's `image`,
LoadAudio's `audio`, video and custom loaders): a free-text input (STRING) holding the same
text, such as a caption or a filename prefix, is not a reference and is left as it is.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from collections.abc import Mapping
from typing import Any

from ..comfyui.client import ComfyUIClient
from ..exceptions import InvalidInputError
from ..templates.object_info import combo_choices, node_info_of

MAX_UPLOAD_NAME = 200
"""Characters (ASCII, so bytes) of the longest upload name: file systems refuse names over
255 bytes, which ComfyUI answers with a 500 on every attempt, and ComfyUI may append " (1)"."""
MAX_EXTENSION = 16
HASH_CHARS = 12

Reference = tuple[str, str]
"""(node id, input name) of a node input that names an input file."""


def upload_name(prompt_id: str, name: str) -> str:
    """`<prompt_id>-<name>`, reduced to characters every filesystem and node accepts, and
    to MAX_UPLOAD_NAME characters.

    A name that had to be reduced or shortened also carries a hash of itself: `a/photo.png`
    and `b/photo.png` (or `photo 1.png` and `photo_1.png`, or two long names alike at the
    start) must not land on one file. A shortened name keeps its extension, which loaders
    read the format from.
    """
    base = re.split(r"[\\/]", name)[-1]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".") or "input"
    if safe == name and len(plain := f"{prompt_id}-{safe}") <= MAX_UPLOAD_NAME:
        return plain
    stem, ext = os.path.splitext(safe)
    if not stem or len(ext) > MAX_EXTENSION:
        stem, ext = safe, ""
    head = f"{prompt_id}-{_hash(name)}-"
    if len(head) + len(ext) + HASH_CHARS > MAX_UPLOAD_NAME:  # a prompt id of its own length
        head = f"{_hash(prompt_id)}-{_hash(name)}-"
    return head + stem[: MAX_UPLOAD_NAME - len(head) - len(ext)] + ext


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


def rewrite(workflow: dict[str, Any], renames: Mapping[Reference, str]) -> dict[str, Any]:
    """A copy of `workflow` with each referring node input set to its new name."""
    out = copy.deepcopy(workflow)
    for (node_id, key), new in renames.items():
        out[node_id]["inputs"][key] = new
    return out


class FileInputs:
    """Which node inputs are list (combo) inputs, from ComfyUI's `/object_info`, asked once
    per class: a class's inputs are fixed while ComfyUI runs (custom nodes load at start)."""

    def __init__(self, client: ComfyUIClient) -> None:
        self.client = client
        self._combos: dict[str, frozenset[str]] = {}

    async def references(
        self, workflow: Mapping[str, Any], names: list[str]
    ) -> dict[str, list[Reference]]:
        """Each input's references; refuses an input nothing refers to (the caller misnamed
        it, and it would be ignored). Only classes with a string input equal to an input's
        name are looked up, so a job without inputs asks nothing."""
        found: dict[str, list[Reference]] = {name: [] for name in names}
        for node_id, node in workflow.items():
            inputs = node.get("inputs") if isinstance(node, dict) else None
            if not isinstance(inputs, dict):
                continue
            equal = [(k, v) for k, v in inputs.items() if isinstance(v, str) and v in found]
            if not equal:
                continue
            combos = await self._combos_of(str(node.get("class_type")))
            for key, value in equal:
                # A class ComfyUI lacks fails the prompt as a missing node, which says more
                # than "no node refers to the input" would.
                if combos is None or key in combos:
                    found[value].append((node_id, key))
        for name, refs in found.items():
            if not refs:
                raise InvalidInputError(
                    f"no node of the workflow has a file input (a list input such as "
                    f"LoadImage's image) equal to {name!r}; name the input exactly as the "
                    "loader node's value",
                    input_name=name,
                    rule="unreferenced",
                )
        return found

    async def _combos_of(self, class_type: str) -> frozenset[str] | None:
        if (known := self._combos.get(class_type)) is not None:
            return known
        info = node_info_of(await self.client.object_info(class_type), class_type)
        if info is None:
            return None  # not installed, and it may be installed later: not remembered
        declared = info.get("input")
        groups = (
            [declared.get(g) for g in ("required", "optional")]
            if isinstance(declared, dict)
            else []
        )
        names = {name for group in groups if isinstance(group, dict) for name in group}
        combos = frozenset(n for n in names if combo_choices(info, n) is not None)
        self._combos[class_type] = combos
        return combos
