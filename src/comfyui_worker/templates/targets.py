"""Where a parameter goes: a target node by id or by `_meta.title`, and an input on it that
holds a value (not a link), claimed by one parameter only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..exceptions import TemplateProblem
from .params import ParamSpec


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    node_id: str
    class_type: str
    input: str


def resolve_node(workflow: dict[str, Any], ref: str) -> tuple[str | None, str]:
    """A target's node by id or by `_meta.title`: (node_id, "") or (None, why not)."""
    titled = [
        node_id
        for node_id, node in workflow.items()
        if isinstance(node.get("_meta"), dict) and node["_meta"].get("title") == ref
    ]
    if ref in workflow:
        others = [n for n in titled if n != ref]
        if others:
            return None, f"{ref!r} is a node id and also the title of node(s) {', '.join(others)}"
        return ref, ""
    if len(titled) == 1:
        return titled[0], ""
    if not titled:
        return None, f"no node has the id or _meta.title {ref!r}"
    return None, (
        f"the title {ref!r} matches {len(titled)} nodes ({', '.join(titled)}); "
        "target a node id or make the titles unique"
    )


def resolve_targets(
    workflow: dict[str, Any],
    params: dict[str, ParamSpec],
    where: str,
    problems: list[TemplateProblem],
) -> dict[str, tuple[ResolvedTarget, ...]]:
    resolved: dict[str, tuple[ResolvedTarget, ...]] = {}
    claimed: dict[tuple[str, str], str] = {}
    for name, spec in params.items():
        found: list[ResolvedTarget] = []
        for target in spec.targets:
            prefix = f"{where}: parameter {name!r}: target node {target.node!r}"
            node_id, why = resolve_node(workflow, target.node)
            if node_id is None:
                problems.append(TemplateProblem(name, "node", f"{prefix}: {why}"))
                continue
            node = workflow[node_id]
            inputs = node.get("inputs", {})
            if target.input not in inputs:
                problems.append(
                    TemplateProblem(
                        name,
                        "input",
                        f"{prefix}: node {node_id} ({node['class_type']}) has no "
                        f"input {target.input!r} (it has: {', '.join(inputs) or 'none'})",
                    )
                )
                continue
            if isinstance(inputs[target.input], list):
                problems.append(
                    TemplateProblem(
                        name,
                        "input",
                        f"{prefix}: input {target.input!r} of node {node_id} is a "
                        "link to another node; a value there would cut the graph",
                    )
                )
                continue
            if (other := claimed.get((node_id, target.input))) is not None:
                problems.append(
                    TemplateProblem(
                        name,
                        "target-conflict",
                        f"{prefix}: input {target.input!r} of node "
                        f"{node_id} is already the target of parameter {other!r}",
                    )
                )
                continue
            claimed[(node_id, target.input)] = name
            found.append(ResolvedTarget(node_id, node["class_type"], target.input))
        resolved[name] = tuple(found)
    return resolved
