"""ComfyUI's classic output cache: results keyed by each node's input signature.

A node whose class, widget values and upstream signatures match an entry is not executed
again. Like ComfyUI's default cache, only entries used by the current prompt survive it, so an
identical resubmit is fully cached (no new file, history points at the earlier files) while a
prompt in between with other nodes evicts them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from comfyui_mock import catalogue
from comfyui_mock.files import Dirs, resolve_annotated
from comfyui_mock.nodes import NodeResult, Value

# Loaders re-run when the file they read changes (their IS_CHANGED hashes it).
_FILE_INPUTS = {"LoadImage": "image", "LoadAudio": "audio"}


@dataclass(frozen=True)
class CacheEntry:
    outputs: tuple[Value, ...]
    ui: dict[str, Any] | None


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _inputs(node: Any) -> dict[str, Any]:
    inputs = node.get("inputs") if isinstance(node, dict) else None
    return inputs if isinstance(inputs, dict) else {}


class NodeCache:
    def __init__(self, dirs: Dirs) -> None:
        self.dirs = dirs
        self._entries: dict[str, CacheEntry] = {}

    def clear(self) -> None:
        self._entries.clear()

    def has(self, sig: str) -> bool:
        return sig in self._entries

    def get(self, sig: str) -> CacheEntry | None:
        return self._entries.get(sig)

    def store(self, sig: str, result: NodeResult) -> None:
        self._entries[sig] = CacheEntry(result.outputs, result.ui)

    def set_prompt(self, prompt: dict[str, Any]) -> dict[str, str]:
        """Signatures of every node, dropping cache entries the prompt does not use."""
        memo: dict[str, str] = {}
        for nid in prompt:
            self._signature(prompt, nid, memo, set())
        keep = set(memo.values())
        self._entries = {k: v for k, v in self._entries.items() if k in keep}
        return memo

    def _is_changed(self, class_type: str, inputs: dict[str, Any]) -> str:
        name = _FILE_INPUTS.get(class_type)
        if name is None:
            return ""
        try:
            path = resolve_annotated(inputs.get(name), self.dirs)
        except Exception:
            path = None
        if path is None or not path.is_file():
            return "missing"
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def _signature(
        self, prompt: dict[str, Any], nid: str, memo: dict[str, str], stack: set[str]
    ) -> str:
        if nid in memo:
            return memo[nid]
        node = prompt[nid]
        class_type = node.get("class_type") if isinstance(node, dict) else None
        inputs = _inputs(node)
        parts: list[Any] = [class_type, self._is_changed(str(class_type), inputs)]
        if isinstance(class_type, str) and catalogue.has_class(class_type):
            hidden = catalogue.hidden_inputs(class_type)
        else:
            hidden = {}
        # Nodes taking their own id as a hidden input are never shared between node ids.
        if "UNIQUE_ID" in str(hidden):
            parts.append(nid)
        stack.add(nid)
        for name in sorted(inputs, key=str):
            value = inputs[name]
            if is_link(value) and value[0] in prompt and value[0] not in stack:
                parts.append(
                    [name, "link", self._signature(prompt, value[0], memo, stack), value[1]]
                )
            else:
                parts.append([name, "value", value])
        stack.discard(nid)
        memo[nid] = json.dumps(parts, sort_keys=True, default=str)
        return memo[nid]

    def plan(self, prompt: dict[str, Any], outputs: list[str], sigs: dict[str, str]) -> list[str]:
        """Nodes to visit, dependencies first; cached inputs are not walked into."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(nid: str) -> None:
            if nid in seen:
                return
            seen.add(nid)
            for value in _inputs(prompt[nid]).values():
                if is_link(value) and value[0] in prompt and not self.has(sigs[value[0]]):
                    visit(value[0])
            order.append(nid)

        for output in outputs:
            visit(output)
        return order

    def resolve_inputs(
        self, prompt: dict[str, Any], nid: str, sigs: dict[str, str]
    ) -> dict[str, Any]:
        node = prompt[nid]
        declared = {
            spec.name for spec in catalogue.declared_inputs(node["class_type"], self.dirs.input)
        }
        resolved: dict[str, Any] = {}
        for name, value in _inputs(node).items():
            if name not in declared:
                continue
            if is_link(value):
                resolved[name] = self._entries[sigs[value[0]]].outputs[value[1]]
            else:
                resolved[name] = value
        return resolved

    def history_outputs(
        self, prompt: dict[str, Any], sigs: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        for nid in prompt:
            entry = self._entries.get(sigs[nid])
            if entry is None or entry.ui is None:
                continue
            outputs[nid] = entry.ui
            meta[nid] = {
                "node_id": nid,
                "display_node": nid,
                "parent_node": None,
                "real_node_id": nid,
            }
        return outputs, meta
