"""Reading a manifest file: safe YAML that does not hide a key given twice.

`yaml.safe_load` keeps the last of two equal keys without a word, so a parameter or template
defined twice would silently lose one definition. Here the document is composed first, every
mapping is searched for repeated keys, and each repeat is reported with its path and lines.
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
        duplicates = list(_duplicates(node, ()))
        return loader.construct_document(node), duplicates
    except yaml.YAMLError as exc:
        raise ManifestFileError(f"is not valid YAML: {_one_line(exc)}") from exc
    finally:
        loader.dispose()


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
