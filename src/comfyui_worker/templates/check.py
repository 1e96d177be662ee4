"""`templates check`: every problem of every template at once, and with a ComfyUI to ask,
whether its nodes, inputs and enum values exist there."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..exceptions import TemplateProblem
from .manifest import Catalogue, Template
from .object_info import combo_choices, input_spec, node_info_of
from .params import ParamType


@dataclass(frozen=True, slots=True)
class Finding:
    template: str | None  # None: a file-level problem
    problem: TemplateProblem

    def __str__(self) -> str:
        where = f"template {self.template!r}: " if self.template else ""
        return where + self.problem.message


def local_findings(catalogue: Catalogue) -> list[Finding]:
    """What loading the directory found: file problems, then each broken template's."""
    findings = [Finding(None, p) for p in catalogue.file_problems]
    for name in sorted(catalogue.broken):
        findings += [Finding(name, p) for p in catalogue.broken[name]]
    return findings


def comfyui_findings(catalogue: Catalogue, object_info: dict[str, Any]) -> list[Finding]:
    """Checks of every template (what is readable of the broken ones too) against ComfyUI's
    whole `/object_info`."""
    findings: list[Finding] = []
    readable = {**catalogue.drafts, **catalogue.templates}
    for name in sorted(readable):
        findings += [Finding(name, p) for p in _check_template(readable[name], object_info)]
    return findings


def _check_template(template: Template, object_info: dict[str, Any]) -> list[TemplateProblem]:
    problems: list[TemplateProblem] = []
    file = template.workflow_file.name
    for node_id, node in template.workflow.items():
        if node_info_of(object_info, node["class_type"]) is None:
            problems.append(
                TemplateProblem(
                    None,
                    "class_type",
                    f"{file}: node {node_id}: ComfyUI has no node class {node['class_type']!r} "
                    "(custom node not installed?)",
                )
            )
    for name, spec in template.params.items():
        for target in template.targets[name]:
            where = f"parameter {name!r}: node {target.node_id} ({target.class_type})"
            info = node_info_of(object_info, target.class_type)
            if info is None:
                continue  # reported above, once per node
            if input_spec(info, target.input) is None:
                problems.append(
                    TemplateProblem(
                        name, "input", f"{where} has no input {target.input!r} in ComfyUI"
                    )
                )
                continue
            if spec.type is not ParamType.ENUM:
                continue
            allowed = combo_choices(info, target.input)
            if allowed is None:
                if spec.comfyui_choices:
                    problems.append(
                        TemplateProblem(
                            name,
                            "choices",
                            f"{where}: choices: comfyui, but ComfyUI has no list of choices "
                            f"for {target.input!r}",
                        )
                    )
                continue
            values = [spec.default] if spec.has_default else []
            values += [c for c in spec.choices or () if c not in values]
            for value in values:
                if value not in allowed:
                    kind = "default" if spec.has_default and value == spec.default else "choice"
                    problems.append(
                        TemplateProblem(
                            name,
                            "choices",
                            f"{where}: {kind} {json.dumps(value)} is not among ComfyUI's "
                            f"values for {target.input!r}",
                        )
                    )
    return problems
