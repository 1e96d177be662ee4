"""The template directory: `base.yaml` (shared parameter definitions), `workflows.yaml` (one
entry per template) and the API-format workflow files beside them.

Loading never stops at the first problem: each problem is charged to the templates it touches,
those are marked broken with every reason, and all the others load. A broken base definition
breaks only the templates that use it; a workflow file that is missing breaks only its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..exceptions import InvalidWorkflowError, TemplateProblem
from ..workflow import load_workflow_file
from .definitions import BASE_FILE, SharedDefinitions
from .params import ParamSpec, describe
from .parsing import parse_param
from .targets import ResolvedTarget, resolve_targets
from .yamlfile import Duplicate, ManifestFileError, Stamp, read_yaml, stamp

WORKFLOWS_FILE = "workflows.yaml"
TEMPLATE_FIELDS = ("workflow_file", "description", "parameters", "overrides")


@dataclass(frozen=True, slots=True, kw_only=True)
class Template:
    name: str
    description: str
    workflow_file: Path
    workflow: dict[str, Any]  # as on disk; binding works on a copy
    params: dict[str, ParamSpec]  # in the order the manifest lists them
    targets: dict[str, tuple[ResolvedTarget, ...]]

    def workflow_value(self, name: str) -> Any:
        """What the workflow file itself has at the parameter's first target."""
        target = self.targets[name][0]
        return self.workflow[target.node_id]["inputs"][target.input]


@dataclass(frozen=True, slots=True, kw_only=True)
class Catalogue:
    directory: Path
    templates: dict[str, Template] = field(default_factory=dict)
    broken: dict[str, tuple[TemplateProblem, ...]] = field(default_factory=dict)
    # The readable parts of broken templates, for `templates check`; never run.
    drafts: dict[str, Template] = field(default_factory=dict)
    file_problems: tuple[TemplateProblem, ...] = ()
    # The manifests (file names) that could not be read as a whole; their reasons are among
    # file_problems.
    unreadable: tuple[str, ...] = ()
    # The files whose change means a reload, and their stamps taken before they were read.
    watched: tuple[Path, ...] = ()
    stamps: tuple[Stamp, ...] = ()

    @property
    def names(self) -> list[str]:
        return sorted({*self.templates, *self.broken})


def _problem(rule: str, message: str, parameter: str | None = None) -> TemplateProblem:
    return TemplateProblem(parameter, rule, message)


def _dup_message(file: str, dup: Duplicate, what: str) -> str:
    inside = f" inside {what} {dup.path[0]!r}" if dup.path else ""
    return (
        f"{file}: {dup.key!r} is defined twice{inside} (lines {dup.first_line} and {dup.line}); "
        "YAML would silently keep only the last"
    )


def _charge(dups: list[Duplicate], file: str, what: str) -> dict[str, list[TemplateProblem]]:
    """Repeated keys, charged to the top-level entry (parameter or template) they are in."""
    charged: dict[str, list[TemplateProblem]] = {}
    for dup in dups:
        owner = dup.path[0] if dup.path else dup.key
        param = owner if what == "parameter" else None
        charged.setdefault(owner, []).append(
            _problem("defined-twice", _dup_message(file, dup, what), param)
        )
    return charged


def _read_mapping(
    path: Path, what: str, stamps: dict[Path, Stamp]
) -> tuple[dict[Any, Any] | None, list[Duplicate], str]:
    """(content, duplicates, "") or (None, [], reason). A missing file reads as empty."""
    stamps[path] = stamp(path)
    if stamps[path] is None:
        return {}, [], ""
    try:
        data, dups = read_yaml(path)
    except ManifestFileError as exc:
        return None, [], f"{path.name} {exc}"
    if data is None:
        return {}, dups, ""
    if not isinstance(data, dict):
        return None, [], f"{path.name} must be a mapping of {what} names, got {describe(data)}"
    return data, dups, ""


def load_catalogue(directory: Path, *, known: tuple[str, ...] = ()) -> Catalogue:
    """Read the whole directory (blocking: call it in a thread). `known`: template names of
    the previous load, still reported (as broken) if workflows.yaml itself becomes unreadable."""
    base_path, workflows_path = directory / BASE_FILE, directory / WORKFLOWS_FILE
    file_problems: list[TemplateProblem] = []
    # The directory's own stamp: creating it or adding a file is a change too.
    file_stamps: dict[Path, Stamp] = {directory: stamp(directory)}
    if directory.is_dir() and not workflows_path.exists():
        file_problems.append(_problem("file", f"{directory}: no {WORKFLOWS_FILE}: no templates"))
    unreadable: list[str] = []
    base, base_dups, base_error = _read_mapping(base_path, "parameter", file_stamps)
    if base_error:
        file_problems.append(_problem("yaml", base_error))
        unreadable.append(BASE_FILE)
    entries, entry_dups, entries_error = _read_mapping(workflows_path, "template", file_stamps)
    if entries_error:
        file_problems.append(_problem("yaml", entries_error))
        return Catalogue(
            directory=directory,
            broken={name: (_problem("yaml", entries_error),) for name in known},
            file_problems=tuple(file_problems),
            unreadable=(*unreadable, WORKFLOWS_FILE),
            watched=tuple(file_stamps),
            stamps=tuple(file_stamps.values()),
        )
    assert entries is not None
    loader = _TemplateLoader(
        directory,
        SharedDefinitions(base, base_error, _charge(base_dups, BASE_FILE, "parameter")),
        file_stamps,
    )
    template_dups = _charge(entry_dups, WORKFLOWS_FILE, "template")
    templates: dict[str, Template] = {}
    broken: dict[str, tuple[TemplateProblem, ...]] = {}
    drafts: dict[str, Template] = {}
    for key, raw in entries.items():
        name = str(key)
        template, problems = loader.load(name, raw)
        problems = template_dups.get(name, []) + problems
        if template is not None and not problems:
            templates[name] = template
        else:
            broken[name] = tuple(problems)
            if template is not None:
                drafts[name] = template
    return Catalogue(
        directory=directory,
        templates=templates,
        broken=broken,
        drafts=drafts,
        file_problems=tuple(file_problems),
        unreadable=tuple(unreadable),
        watched=tuple(file_stamps),
        stamps=tuple(file_stamps.values()),
    )


class _TemplateLoader:
    """Turns workflows.yaml entries into Templates, sharing base.yaml and workflow reads."""

    def __init__(
        self,
        directory: Path,
        shared: SharedDefinitions,
        stamps: dict[Path, Stamp],
    ) -> None:
        self.directory = directory
        self.shared = shared
        self.stamps = stamps
        self._workflows: dict[Path, dict[str, Any] | str] = {}

    def load(self, name: str, raw: object) -> tuple[Template | None, list[TemplateProblem]]:
        """The template and its problems; with problems, the template (if its workflow could
        be read) holds the parts that are sound and must not be run."""
        where = f"{WORKFLOWS_FILE}: template {name!r}"
        if not isinstance(raw, dict):
            return None, [_problem("template", f"{where} must be a mapping, got {describe(raw)}")]
        problems: list[TemplateProblem] = []
        unknown = sorted(str(k) for k in raw if k not in TEMPLATE_FIELDS)
        if unknown:
            problems.append(
                _problem(
                    "field",
                    f"{where}: unknown field(s) {', '.join(unknown)} "
                    f"(allowed: {', '.join(TEMPLATE_FIELDS)})",
                )
            )
        description = raw.get("description", "")
        if not isinstance(description, str):
            problems.append(
                _problem(
                    "description",
                    f"{where}: description must be a string, got {describe(description)}",
                )
            )
        workflow = self._workflow(raw.get("workflow_file"), where, problems)
        definitions = self.shared.for_template(raw, where, problems)
        params: dict[str, ParamSpec] = {}
        for param_name, (definition, origin) in definitions.items():
            spec, param_problems = parse_param(param_name, definition, f"{where} ({origin})")
            problems += param_problems
            if spec is not None:
                params[param_name] = spec
        if workflow is None:
            return None, problems
        # Broken or not, what could be read is returned: `templates check` goes on to check
        # it against ComfyUI, so that every problem shows at once.
        targets = resolve_targets(workflow, params, where, problems)
        template = Template(
            name=name,
            description=description if isinstance(description, str) else "",
            workflow_file=self.directory / str(raw["workflow_file"]),
            workflow=workflow,
            params=params,
            targets=targets,
        )
        return template, problems

    def _workflow(
        self, raw: object, where: str, problems: list[TemplateProblem]
    ) -> dict[str, Any] | None:
        if not isinstance(raw, str) or not raw:
            problems.append(
                _problem("workflow_file", f"{where}: needs workflow_file: an API-format JSON file")
            )
            return None
        path = self.directory / raw
        root = self.directory.resolve()
        if Path(raw).is_absolute() or not path.resolve().is_relative_to(root):
            problems.append(
                _problem(
                    "workflow_file",
                    f"{where}: workflow_file {raw!r} must be a path inside {self.directory}",
                )
            )
            return None
        if path not in self._workflows:
            self.stamps[path] = stamp(path)
            try:
                self._workflows[path] = load_workflow_file(path)
            except InvalidWorkflowError as exc:
                self._workflows[path] = str(exc)
        loaded = self._workflows[path]
        if isinstance(loaded, str):
            problems.append(_problem("workflow_file", f"{where}: {loaded}"))
            return None
        return loaded
