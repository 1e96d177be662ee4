"""Output files this worker stored and then removed (COMFYUI_CLEANUP=outputs), remembered so
that a repeat of their job is delivered from the store instead of run again.

ComfyUI's cache serves an identical node without running it, and the history entry then
points at the file the earlier run wrote, which cleanup has removed. Taken for lost, that
file would make the worker drop ComfyUI's whole cache (models with it, for every job) and
run the prompt again. Remembered, the stored object is copied to the new job's key.

A record is keyed by the file's path and by what its node computed (`node_signature`): once
cleanup has emptied a folder, ComfyUI's file counter starts over and other jobs write files
of the same name, so the name alone does not say whose file a cache entry points at. Records
live in memory, the newest MAX_KEPT of them; after a restart a repeat runs again.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..outputs import OutputFile

MAX_KEPT = 10_000
"""As many as ComfyUI keeps history entries."""


@dataclass(frozen=True, slots=True)
class KeptObject:
    """Where a removed output file was stored, and what it was."""

    uri: str
    size: int
    sha256: str


class KeptOutputs:
    """The records of one process (`outputs.KeptFiles` for `Executor.run`)."""

    def __init__(self, limit: int = MAX_KEPT) -> None:
        self.limit = limit
        self._records: OrderedDict[tuple[str, str], KeptObject] = OrderedDict()

    def holds(self, file: OutputFile, prompt: dict[str, Any] | None) -> bool:
        return self.get(file, prompt) is not None

    def get(self, file: OutputFile, prompt: dict[str, Any] | None) -> KeptObject | None:
        key = _key(file, prompt)
        return None if key is None else self._records.get(key)

    def remember(
        self, stored: list[tuple[OutputFile, KeptObject]], prompt: dict[str, Any] | None
    ) -> None:
        """Record files about to be removed. A path two of the job's outputs name (a cached
        node pointing at a name another node has just written again) is left out: which of
        the two the stored bytes belong to cannot be told."""
        named = Counter(file.path for file, _ in stored)
        for file, kept in stored:
            if named[file.path] == 1 and (key := _key(file, prompt)) is not None:
                self._records[key] = kept
                self._records.move_to_end(key)
        while len(self._records) > self.limit:
            self._records.popitem(last=False)

    def forget(self, file: OutputFile, prompt: dict[str, Any] | None) -> None:
        if (key := _key(file, prompt)) is not None:
            self._records.pop(key, None)


def _key(file: OutputFile, prompt: dict[str, Any] | None) -> tuple[str, str] | None:
    signature = node_signature(prompt, file.node_id) if prompt is not None else None
    return None if signature is None else (file.path, signature)


def node_signature(prompt: Mapping[str, Any], node_id: str) -> str | None:
    """A digest of what `node_id` computes: its class, its literal inputs and, through its
    links, what its inputs compute. Node ids do not count, as in ComfyUI's own cache key, so
    one computation in two workflows has one signature. None for a node that is not in
    `prompt` or links into a cycle (ComfyUI runs neither)."""
    memo: dict[str, str] = {}

    def sign(nid: str, path: frozenset[str]) -> str | None:
        if nid in memo:
            return memo[nid]
        node = prompt.get(nid)
        if not isinstance(node, dict) or nid in path:
            return None
        inputs = node.get("inputs")
        parts: list[Any] = [node.get("class_type")]
        for name, value in sorted((inputs if isinstance(inputs, dict) else {}).items()):
            if _is_link(value):
                if (upstream := sign(str(value[0]), path | {nid})) is None:
                    return None
                parts.append([name, "link", upstream, value[1]])
            else:
                parts.append([name, "value", value])
        encoded = json.dumps(parts, sort_keys=True, default=str).encode()
        memo[nid] = hashlib.sha256(encoded).hexdigest()
        return memo[nid]

    return sign(node_id, frozenset())


def _is_link(value: Any) -> bool:
    # ComfyUI reads any list input as a link: [node id, output index].
    return isinstance(value, list) and len(value) == 2
