"""A template's parameter definitions: names shared from `base.yaml`, inline ones, and the
template's overrides, each with the place it came from for the error messages."""

from __future__ import annotations

from typing import Any

from ..exceptions import TemplateProblem
from .params import describe

BASE_FILE = "base.yaml"


def _problem(rule: str, message: str, parameter: str | None = None) -> TemplateProblem:
    return TemplateProblem(parameter, rule, message)


class SharedDefinitions:
    """base.yaml as read (None when it cannot be), and the problems of its entries."""

    def __init__(
        self,
        base: dict[Any, Any] | None,
        base_error: str,
        base_problems: dict[str, list[TemplateProblem]],
    ) -> None:
        self.base = base
        self.base_error = base_error
        self.base_problems = base_problems

    def for_template(
        self, raw: dict[Any, Any], where: str, problems: list[TemplateProblem]
    ) -> dict[str, tuple[object, str]]:
        """Every parameter's definition, overrides applied, with where it came from."""
        listed = raw.get("parameters", [])
        if not isinstance(listed, list):
            problems.append(
                _problem(
                    "parameters",
                    f"{where}: parameters must be a list of names or "
                    f"{{name: definition}}, got {describe(listed)}",
                )
            )
            listed = []
        definitions: dict[str, tuple[object, str]] = {}
        for item in listed:
            if isinstance(item, dict) and len(item) == 1:
                (key, definition), origin = next(iter(item.items())), "inline"
                name = str(key)
                if self.base and name in self.base:
                    problems.append(
                        _problem(
                            "defined-twice",
                            f"{where}: parameter {name!r} is defined inline "
                            f"and in {BASE_FILE}; change a shared one with overrides",
                            name,
                        )
                    )
                    continue
            elif isinstance(item, str):
                name, origin = item, BASE_FILE
                definition = self._shared(name, where, problems)
                if definition is None:
                    continue
            else:
                problems.append(
                    _problem(
                        "parameters",
                        f"{where}: each parameter must be a name or "
                        f"{{name: definition}}, got {describe(item)}",
                    )
                )
                continue
            if name in definitions:
                problems.append(
                    _problem("defined-twice", f"{where}: parameter {name!r} is listed twice", name)
                )
                continue
            definitions[name] = (definition, origin)
        self._override(raw.get("overrides"), definitions, where, problems)
        return definitions

    def _shared(self, name: str, where: str, problems: list[TemplateProblem]) -> object | None:
        if self.base is None:
            problems.append(
                _problem("yaml", f"{where}: parameter {name!r} comes from {self.base_error}", name)
            )
            return None
        if name in self.base_problems:
            problems += [
                _problem(p.rule, f"{where}: parameter {name!r}: {p.message}", name)
                for p in self.base_problems[name]
            ]
            return None
        if name not in self.base:
            problems.append(
                _problem(
                    "unknown-parameter",
                    f"{where}: parameter {name!r} is neither in {BASE_FILE} nor defined inline",
                    name,
                )
            )
            return None
        definition: object = self.base[name]
        return definition

    def _override(
        self,
        overrides: object,
        definitions: dict[str, tuple[object, str]],
        where: str,
        problems: list[TemplateProblem],
    ) -> None:
        if overrides is None:
            return
        if not isinstance(overrides, dict):
            problems.append(
                _problem(
                    "overrides",
                    f"{where}: overrides must map parameter names to fields, "
                    f"got {describe(overrides)}",
                )
            )
            return
        for key, fields in overrides.items():
            name = str(key)
            if name not in definitions:
                problems.append(
                    _problem(
                        "overrides",
                        f"{where}: overrides {name!r}, which is not among its parameters",
                        name,
                    )
                )
                continue
            if not isinstance(fields, dict):
                problems.append(
                    _problem(
                        "overrides",
                        f"{where}: the override of {name!r} must be a mapping "
                        f"of fields, got {describe(fields)}",
                        name,
                    )
                )
                continue
            definition, origin = definitions[name]
            if isinstance(definition, dict):
                definitions[name] = (_overridden(definition, fields), f"{origin} with overrides")


def _overridden(definition: dict[Any, Any], fields: dict[Any, Any]) -> dict[Any, Any]:
    """The shared definition with this template's fields. The override is the more specific
    statement: `required: true` makes a shared parameter mandatory here, so its shared
    default no longer applies; a `default` makes a shared required one optional here. An
    override that says both contradicts itself and is refused like any such definition."""
    merged = {**definition, **fields}
    if fields.get("required") is True and "default" not in fields:
        merged.pop("default", None)
    if fields.get("default") is not None and "required" not in fields:
        merged.pop("required", None)
    # `field: null` in an override removes the field (e.g. a shared default).
    return {k: v for k, v in merged.items() if v is not None}
