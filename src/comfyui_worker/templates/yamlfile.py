"""Reading a manifest file: safe YAML that does not hide a key given twice.

`yaml.safe_load` keeps the last of two equal keys without a word, so a parameter or template
defined twice would silently lose one definition. Here the document is composed first, every
mapping is searched for repeated keys, and each repeat is reported with its path and lines.

Composing shares an anchored node among its aliases, but anything that walks the document
(the search for repeats, an error message showing a value, the JSON sent to ComfyUI) meets
it once per alias: nine lines of nested aliases ("billion laughs") stand for a billion
nodes. The size the aliases expand to is counted on the shared nodes first, in time linear
in the file, and a document that aliases would grow by more than MAX_ALIAS_NODES is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Stamp = tuple[int, int, int, int] | None
"""(mtime_ns, ctime_ns, size, inode) of a file, None if it is missing: an edit, a replacement
or a `touch` shows in one of them."""


def stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def stamps(paths: tuple[Path, ...]) -> tuple[Stamp, ...]:
    return tuple(stamp(p) for p in paths)


MAX_ALIAS_NODES = 100_000
"""How many nodes aliases may add to a manifest: far above any real one's reuse of a target
list or a `<<:` merge, far below what would take noticeable time or memory."""


class ManifestFileError(Exception):
    """The file cannot be read or is not YAML; the message says where."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    path: tuple[str, ...]  # the mappings above the repeated key; () = top level
    key: str
    first_line: int
    line: int


def read_yaml(path: Path) -> tuple[Any, list[Duplicate]]:
    """The document (None for an empty file) and every key repeated within one mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestFileError(f"cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ManifestFileError("is not UTF-8 text") from exc
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        _check_expansion(node)
        duplicates = list(_duplicates(node, ()))
        return loader.construct_document(node), duplicates
    except yaml.YAMLError as exc:
        raise ManifestFileError(f"is not valid YAML: {_one_line(exc)}") from exc
    except RecursionError as exc:
        # PyYAML composes and constructs recursively.
        raise ManifestFileError("nests too deeply to be read") from exc
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it by more than MAX_ALIAS_NODES nodes, or that
    contains itself. Each distinct node is visited once (iteratively: no recursion limit)."""
    expanded: dict[int, int] = {}  # id(node) -> nodes under it with aliases expanded
    open_nodes: set[int] = set()  # started, children not all counted: the current path
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_counted = stack.pop()
        key = id(node)
        if children_counted:
            open_nodes.discard(key)
            expanded[key] = 1 + sum(expanded[id(child)] for child in _children(node))
            continue
        if key in expanded:
            continue
        if key in open_nodes:
            # Only a node's own descendants are pushed while it is open.
            mark = node.start_mark
            raise ManifestFileError(
                f"has a recursive alias (line {mark.line + 1}): an anchor used inside itself"
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in expanded)
    added = expanded[id(root)] - len(expanded)
    if added > MAX_ALIAS_NODES:
        raise ManifestFileError(
            f"has aliases that would add {added:,} nodes to its {len(expanded):,} (at most "
            f"{MAX_ALIAS_NODES:,} may come from aliases); refused: a few lines of nested "
            "aliases can stand for gigabytes"
        )


def _duplicates(node: yaml.Node, path: tuple[str, ...]) -> Iterator[Duplicate]:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None:
                line = key_node.start_mark.line + 1
                if key in seen:
                    yield Duplicate(path, key, seen[key], line)
                else:
                    seen[key] = line
            yield from _duplicates(value_node, (*path, key or "?"))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _duplicates(item, path)


def _one_line(exc: yaml.YAMLError) -> str:
    return " ".join(str(exc).split())
