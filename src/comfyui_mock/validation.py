"""Prompt validation, following ComfyUI v0.3.64's execution.validate_prompt step by step.

The control flow (which error wins, what counts as an output, when a node is reported) is kept
close to the original on purpose: clients are written against those exact shapes. Exceptions
raised while validating are turned into `exception_during_validation` reasons just as ComfyUI
does, so their messages are Python's own.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from comfyui_mock import catalogue
from comfyui_mock.files import Dirs
from comfyui_mock.input_checks import (
    Reason,
    check_value,
    convert,
    custom_validators,
    full_type_name,
    types_compatible,
)

Validated = dict[str, tuple[bool, list[Reason], str]]


@dataclass
class ValidationResult:
    ok: bool
    error: dict[str, Any] | None
    outputs: list[str]
    node_errors: dict[str, Any] = field(default_factory=dict)


def _error(type_: str, message: str, details: str) -> dict[str, Any]:
    return {"type": type_, "message": message, "details": details, "extra_info": {}}


class _Validator:
    def __init__(self, prompt: dict[str, Any], dirs: Dirs) -> None:
        self.prompt = prompt
        self.dirs = dirs
        self.custom = custom_validators(dirs)
        self.validated: Validated = {}

    def validate(self, unique_id: str) -> tuple[bool, list[Reason], str]:
        if unique_id in self.validated:
            return self.validated[unique_id]
        inputs = self.prompt[unique_id]["inputs"]
        class_type = self.prompt[unique_id]["class_type"]
        custom = self.custom.get(class_type, {})
        errors: list[Reason] = []
        valid = True
        for spec in catalogue.declared_inputs(class_type, self.dirs.input):
            x = spec.name
            if x not in inputs:
                if spec.category == "required":
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": x,
                            "extra_info": {"input_name": x},
                        }
                    )
                continue
            val = inputs[x]
            if isinstance(val, list):
                reason, linked_ok = self._check_link(spec, val)
                if reason is not None:
                    errors.append(reason)
                valid = valid and linked_ok
                continue
            try:
                val = convert(spec.type, val)
                inputs[x] = val
            except Exception as ex:
                errors.append(
                    {
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {spec.type} value",
                        "details": f"{x}, {val}, {ex}",
                        "extra_info": {
                            "input_name": x,
                            "input_config": spec.config,
                            "received_value": val,
                            "exception_message": str(ex),
                        },
                    }
                )
                continue
            if x not in custom:
                reason = check_value(spec, val)
                if reason is not None:
                    errors.append(reason)
        errors.extend(self._run_custom(custom, inputs))
        result = (not errors and valid, errors, unique_id)
        self.validated[unique_id] = result
        return result

    def _check_link(self, spec: catalogue.InputSpec, val: list[Any]) -> tuple[Reason | None, bool]:
        x = spec.name
        if len(val) != 2:
            return {
                "type": "bad_linked_input",
                "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                "details": x,
                "extra_info": {"input_name": x, "input_config": spec.config, "received_value": val},
            }, True
        o_id = val[0]
        o_class_type = self.prompt[o_id]["class_type"]
        received_type = catalogue.return_types(o_class_type)[val[1]]
        if not types_compatible(received_type, spec.type):
            return {
                "type": "return_type_mismatch",
                "message": "Return type mismatch between linked nodes",
                "details": f"{x}, received_type({received_type}) mismatch input_type({spec.type})",
                "extra_info": {
                    "input_name": x,
                    "input_config": spec.config,
                    "received_type": received_type,
                    "linked_node": val,
                },
            }, True
        try:
            return None, self.validate(o_id)[0]
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            assert typ is not None
            self.validated[o_id] = (
                False,
                [
                    {
                        "type": "exception_during_inner_validation",
                        "message": "Exception when validating inner node",
                        "details": str(ex),
                        "extra_info": {
                            "input_name": x,
                            "input_config": spec.config,
                            "exception_message": str(ex),
                            "exception_type": full_type_name(typ),
                            "traceback": traceback.format_tb(tb),
                            "linked_node": val,
                        },
                    }
                ],
                o_id,
            )
            return None, False

    @staticmethod
    def _run_custom(
        custom: dict[str, Callable[[Any], Any]], inputs: dict[str, Any]
    ) -> list[Reason]:
        reasons: list[Reason] = []
        for x, check in custom.items():
            if x not in inputs:
                raise TypeError(f"VALIDATE_INPUTS() missing 1 required positional argument: '{x}'")
            if isinstance(inputs[x], list):
                continue
            r = check(inputs[x])
            if r is not True:
                details = x if r is False else f"{x} - {r}"
                reasons.append(
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": details,
                        "extra_info": {"input_name": x},
                    }
                )
        return reasons


def validate_prompt(prompt: dict[str, Any], partial_targets: Any, dirs: Dirs) -> ValidationResult:
    """Validate an API-format prompt; may convert widget values in place, as ComfyUI does."""
    outputs: list[str] = []
    for x in prompt:
        node = prompt[x]
        if "class_type" not in node:
            return ValidationResult(
                False,
                _error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{x}'",
                ),
                [],
            )
        class_type = node["class_type"]
        if not catalogue.has_class(class_type):
            return ValidationResult(
                False,
                _error(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{x}'",
                ),
                [],
            )
        if catalogue.is_output_node(class_type) and (
            partial_targets is None or x in partial_targets
        ):
            outputs.append(x)
    if not outputs:
        return ValidationResult(False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [])

    validator = _Validator(prompt, dirs)
    good: list[str] = []
    failed: list[tuple[str, list[Reason]]] = []
    node_errors: dict[str, Any] = {}
    for o in outputs:
        try:
            valid, reasons, _ = validator.validate(o)
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            assert typ is not None
            valid = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {
                        "exception_type": full_type_name(typ),
                        "traceback": traceback.format_tb(tb),
                    },
                }
            ]
            validator.validated[o] = (False, reasons, o)
        if valid:
            good.append(o)
            continue
        failed.append((o, reasons))
        for node_id, (ok, node_reasons, _) in validator.validated.items():
            # Nodes downstream of a broken one are invalid without reasons of their own;
            # ComfyUI reports only the nodes that carry reasons.
            if ok or not node_reasons:
                continue
            if node_id not in node_errors:
                node_errors[node_id] = {
                    "errors": node_reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                }
            node_errors[node_id]["dependent_outputs"].append(o)

    if not good:
        details = "\n".join(f"{r['message']}: {r['details']}" for _, rs in failed for r in rs)
        error = _error(
            "prompt_outputs_failed_validation", "Prompt outputs failed validation", details
        )
        return ValidationResult(False, error, [], node_errors)
    return ValidationResult(True, None, good, node_errors)
