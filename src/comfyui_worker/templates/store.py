"""The template directory, reloaded when it changes, and binding by name.

Before each task one thread hop stats the manifests and the workflow files they name (a few
`stat` calls); only when a size, mtime or inode changed is the directory read again. A broken
file disables only the templates it touches: their tasks get its reason, the rest keep
working, and the reason is logged once per change.

A manifest that cannot be read as a whole (not YAML, not a mapping, emptied since it was last
read) is almost always one being rewritten: an editor or `cat >` truncates it, then writes.
Such a read changes nothing: the templates of the last complete read are served, and a task
for any other name fails retryably (never with a business exception LittleHorse would not
retry) until the file can be read again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..exceptions import (
    BrokenTemplateError,
    TemplateProblem,
    TemplatesUnreadableError,
    UnknownTemplateError,
)
from .binding import BoundTemplate, bind, seeded_rng
from .definitions import BASE_FILE
from .manifest import WORKFLOWS_FILE, Catalogue, Template, load_catalogue
from .object_info import combo_choices, node_info_of
from .yamlfile import stamps

log = logging.getLogger(__name__)

ObjectInfo = Callable[[str], Awaitable[dict[str, Any]]]
"""`/object_info/{class}` of the ComfyUI the job will run on."""


class TemplateStore:
    """Templates from one directory; `bind` is what the job runner calls."""

    def __init__(self, directory: Path, *, object_info: ObjectInfo | None = None) -> None:
        self.directory = directory
        self._object_info = object_info
        self._catalogue: Catalogue | None = None  # what lookups answer from
        self._complete: Catalogue | None = None  # the last read of whole manifests
        self._lock = asyncio.Lock()

    async def catalogue(self) -> Catalogue:
        """The current templates, reloaded first if any file changed."""
        if await asyncio.to_thread(self._changed):
            async with self._lock:
                # Another task may have reloaded while this one waited for the lock.
                if await asyncio.to_thread(self._changed):
                    previous = self._catalogue or Catalogue(directory=self.directory)
                    loaded = await asyncio.to_thread(
                        load_catalogue, self.directory, known=tuple(previous.names)
                    )
                    self._catalogue = self._serving(loaded)
                    _log_changes(previous, self._catalogue)
        assert self._catalogue is not None
        return self._catalogue

    def _serving(self, loaded: Catalogue) -> Catalogue:
        """`loaded`, or when a manifest could not be read as a whole, the last complete
        read's templates watching `loaded`'s files (so that the next change reads again)."""
        if self._complete is not None:
            loaded = _emptied(self._complete, loaded)
        if not loaded.unreadable:
            self._complete = loaded
            return loaded
        if self._complete is None:
            return loaded
        log.warning(
            "templates: %s cannot be read as a whole; serving the templates of its last "
            "complete read (%s) until it can",
            ", ".join(loaded.unreadable),
            ", ".join(sorted(self._complete.templates)) or "none",
        )
        return dataclasses.replace(
            self._complete,
            file_problems=loaded.file_problems,
            unreadable=loaded.unreadable,
            watched=loaded.watched,
            stamps=loaded.stamps,
        )

    def _changed(self) -> bool:
        # The stamps were taken before each file was read, so an edit made while it was being
        # read still counts as a change here.
        current = self._catalogue
        return current is None or stamps(current.watched) != current.stamps

    async def template(self, name: str) -> Template:
        catalogue = await self.catalogue()
        if (template := catalogue.templates.get(name)) is not None:
            return template
        if catalogue.unreadable:
            raise TemplatesUnreadableError.of(name, [_unreadable(catalogue, name)])
        if name in catalogue.broken:
            raise BrokenTemplateError.of(name, catalogue.broken[name])
        reasons = [p.message for p in catalogue.file_problems]
        available = ", ".join(sorted(catalogue.templates)) or "none"
        raise UnknownTemplateError.of(
            name,
            [
                TemplateProblem(
                    None,
                    "unknown-template",
                    f"no such template in {self.directory} (available: {available})"
                    + "".join(f"; {r}" for r in reasons),
                )
            ],
        )

    async def bind(
        self, name: str, params: dict[str, Any], *, key: str | None = None
    ) -> BoundTemplate:
        """The template `name` with `params` bound; `key` keeps drawn seeds stable across the
        attempts of one job."""
        template = await self.template(name)
        choices = await self.comfyui_choices(template, params)
        return bind(template, params, rng=seeded_rng(key), choices=choices)

    async def comfyui_choices(
        self, template: Template, params: object
    ) -> dict[str, tuple[Any, ...]]:
        """ComfyUI's lists for the `choices: comfyui` parameters this binding uses: a value
        must be allowed on every one of its targets."""
        wanted = [
            spec
            for spec in template.params.values()
            if spec.comfyui_choices
            and (spec.has_default or (isinstance(params, dict) and spec.name in params))
        ]
        if not wanted:
            return {}
        if self._object_info is None:
            raise BrokenTemplateError.of(
                template.name,
                [
                    TemplateProblem(
                        wanted[0].name, "choices", "choices: comfyui needs a ComfyUI to ask"
                    )
                ],
            )
        infos: dict[str, dict[str, Any]] = {}
        result: dict[str, tuple[Any, ...]] = {}
        problems: list[TemplateProblem] = []
        for spec in wanted:
            allowed: tuple[Any, ...] | None = None
            for target in template.targets[spec.name]:
                if target.class_type not in infos:
                    infos[target.class_type] = await self._object_info(target.class_type)
                info = node_info_of(infos[target.class_type], target.class_type)
                options = combo_choices(info, target.input) if info is not None else None
                if options is None:
                    problems.append(
                        TemplateProblem(
                            spec.name,
                            "choices",
                            f"parameter {spec.name!r} has choices: comfyui but ComfyUI's "
                            f"{target.class_type} has no list of choices for {target.input!r}"
                            + ("" if info is not None else " (ComfyUI does not have that node)"),
                        )
                    )
                    break
                allowed = options if allowed is None else tuple(v for v in allowed if v in options)
            if allowed is not None:
                result[spec.name] = allowed
        if problems:
            raise BrokenTemplateError.of(template.name, problems)
        return result


def _emptied(complete: Catalogue, loaded: Catalogue) -> Catalogue:
    """`loaded` with the manifests that had content in the last complete read and are empty
    now marked unreadable: the moment between the truncation and the write of a rewrite.
    (A manifest meant to say "none" can say `{}`.)"""
    before = dict(zip(complete.watched, complete.stamps, strict=True))
    now = dict(zip(loaded.watched, loaded.stamps, strict=True))
    emptied = [
        name
        for name in (BASE_FILE, WORKFLOWS_FILE)
        if name not in loaded.unreadable
        and (old := before.get(loaded.directory / name)) is not None
        and (new := now.get(loaded.directory / name)) is not None
        and old[2] > 0  # a stamp's size
        and new[2] == 0
    ]
    if not emptied:
        return loaded
    problems = [
        TemplateProblem(None, "yaml", f"{name} is empty, and had content when last read")
        for name in emptied
    ]
    return dataclasses.replace(
        loaded,
        file_problems=(*loaded.file_problems, *problems),
        unreadable=(*loaded.unreadable, *emptied),
    )


def _unreadable(catalogue: Catalogue, name: str) -> TemplateProblem:
    reasons = "; ".join(p.message for p in catalogue.file_problems if p.rule == "yaml")
    last = ", ".join(sorted(catalogue.templates)) or "none"
    return TemplateProblem(
        None,
        "unreadable",
        f"{catalogue.directory} cannot be read as a whole now ({reasons}; a file being "
        f"rewritten?) and the templates last read ({last}) have no working {name!r}; "
        "a later attempt reads it again",
    )


def _log_changes(previous: Catalogue, current: Catalogue) -> None:
    if previous.unreadable and not current.unreadable:
        log.info("templates: %s read as a whole again", ", ".join(previous.unreadable))
    for problem in current.file_problems:
        if problem not in previous.file_problems:
            log.warning("templates: %s", problem.message)
    for name, problems in current.broken.items():
        if previous.broken.get(name) != problems:
            log.warning("template %r disabled: %s", name, "; ".join(p.message for p in problems))
    loaded = sorted(set(current.templates) - set(previous.templates))
    if loaded:
        log.info("templates loaded from %s: %s", current.directory, ", ".join(loaded))
