"""Single-input checks, as ComfyUI's validate_inputs applies them to values and links."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from comfyui_mock import catalogue
from comfyui_mock.files import Dirs, resolve_annotated

Reason = dict[str, Any]


def full_type_name(klass: type) -> str:
    module = klass.__module__
    if module == "builtins":
        return klass.__qualname__
    return f"{module}.{klass.__qualname__}"


def file_validator(kind: str, dirs: Dirs) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if resolve_annotated(value, dirs) is None:
            return f"Invalid {kind} file: {value}"
        return True

    return check


def custom_validators(dirs: Dirs) -> dict[str, dict[str, Callable[[Any], Any]]]:
    """Classes with a VALIDATE_INPUTS: those inputs skip the range and combo checks."""
    return {
        "LoadImage": {"image": file_validator("image", dirs)},
        "LoadAudio": {"audio": file_validator("audio", dirs)},
    }


def types_compatible(received: Any, expected: Any) -> bool:
    if received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    if "*" in got or "*" in want:
        return True
    return len(got & want) > 0


def convert(input_type: Any, val: Any) -> Any:
    if isinstance(val, dict) and "__value__" in val:
        val = val["__value__"]
    if input_type == "INT":
        val = int(val)
    if input_type == "FLOAT":
        val = float(val)
    if input_type == "STRING":
        val = str(val)
    if input_type == "BOOLEAN":
        val = bool(val)
    return val


def check_value(spec: catalogue.InputSpec, val: Any) -> Reason | None:
    """Range and combo checks for one converted widget value."""
    extra, name = spec.extra, spec.name
    if "min" in extra and val < extra["min"]:
        return {
            "type": "value_smaller_than_min",
            "message": f"Value {val} smaller than min of {extra['min']}",
            "details": name,
            "extra_info": {"input_name": name, "input_config": spec.config, "received_value": val},
        }
    if "max" in extra and val > extra["max"]:
        return {
            "type": "value_bigger_than_max",
            "message": f"Value {val} bigger than max of {extra['max']}",
            "details": name,
            "extra_info": {"input_name": name, "input_config": spec.config, "received_value": val},
        }
    if isinstance(spec.type, list) or spec.type == "COMBO":
        options = spec.extra.get("options", []) if spec.type == "COMBO" else spec.type
        if val not in options:
            config: list[Any] | None = spec.config
            if len(options) > 20:
                # ComfyUI leaves long lists (scanned model files) out of the error.
                list_info = f"(list of length {len(options)})"
                config = None
            else:
                list_info = str(options)
            return {
                "type": "value_not_in_list",
                "message": "Value not in list",
                "details": f"{name}: '{val}' not in {list_info}",
                "extra_info": {"input_name": name, "input_config": config, "received_value": val},
            }
    return None
