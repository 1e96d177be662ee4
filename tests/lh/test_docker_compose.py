"""docker-compose.yml wires LittleHorse, ComfyUI and the worker together consistently.

PyYAML is not a dependency, so the file is read with a small loader for the block-style
subset it uses; anything outside that subset fails the test rather than being misread.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from comfyui_worker.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


# --- a loader for the YAML subset used by docker-compose.yml -------------------------------


def _scalar(text: str) -> Any:
    if text.startswith(('"', "[")):
        return json.loads(text)
    if text.startswith("'"):
        if not text.endswith("'"):
            raise ValueError(f"unsupported scalar: {text}")
        return text[1:-1].replace("''", "'")
    if " #" in text or text.startswith(("{", "&", "*", "!")):
        raise ValueError(f"unsupported YAML in {COMPOSE.name}: {text}")
    return text


def _parse(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1].startswith("- "):
        items: list[Any] = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            item = lines[i][1][2:]
            if ": " in item and not item.startswith(('"', "'")):
                raise ValueError(f"unsupported list of mappings: {item}")
            items.append(_scalar(item))
            i += 1
        return items, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        key, sep, rest = lines[i][1].partition(":")
        if not sep or (rest and not rest.startswith(" ")):
            raise ValueError(f"unsupported line: {lines[i][1]}")
        rest = rest.strip()
        i += 1
        if rest in (">-", ">"):
            folded = []
            while i < len(lines) and lines[i][0] > indent:
                folded.append(lines[i][1])
                i += 1
            mapping[key] = " ".join(folded)
        elif rest:
            mapping[key] = _scalar(rest)
        elif i < len(lines) and lines[i][0] > indent:
            mapping[key], i = _parse(lines, i, lines[i][0])
        else:
            mapping[key] = None
    return mapping, i


def load_compose(text: str) -> dict[str, Any]:
    lines = [
        (len(raw) - len(raw.lstrip(" ")), raw.strip())
        for raw in text.splitlines()
        if raw.strip() and not raw.lstrip().startswith("#")
    ]
    document, end = _parse(lines, 0, 0)
    if end != len(lines):
        raise ValueError(f"could not read line {lines[end][1]!r}")
    assert isinstance(document, dict)
    return document


# --- tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE.read_text(encoding="utf-8"))


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Named volume -> container path (mode suffix dropped)."""
    return {entry.split(":")[0]: entry.split(":")[1] for entry in service.get("volumes", [])}


def test_loader_reads_the_constructs_the_file_uses() -> None:
    text = (
        "a:\n"
        "  b: plain\n"
        '  c: ["x", "y"]\n'
        "  d: >-\n"
        "    one\n"
        "    two\n"
        "  # a comment\n"
        "  e:\n"
        '    - "q:1"\n'
        "    - bare\n"
        "f:\n"
    )
    assert load_compose(text) == {
        "a": {"b": "plain", "c": ["x", "y"], "d": "one two", "e": ["q:1", "bare"]},
        "f": None,
    }
    with pytest.raises(ValueError):
        load_compose("a: &anchor x\n")


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"littlehorse", "comfyui", "register", "worker"}
    image, _, tag = services["littlehorse"]["image"].rpartition(":")
    assert image == "ghcr.io/littlehorse-enterprises/littlehorse/lh-standalone"
    # Server and client ship in lockstep; a mismatch is how protocol surprises start.
    assert tag == version("littlehorse-client")
    assert services["comfyui"]["image"].startswith("yanwk/comfyui-boot:")
    assert services["worker"]["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert services["worker"]["entrypoint"] == ["comfyui-worker"]
    assert services["worker"]["command"] == ["serve"]
    assert services["register"]["build"] == services["worker"]["build"]
    assert services["register"]["entrypoint"] == ["comfyui-worker"]
    assert services["register"]["command"] == ["register"]


def test_worker_reaches_littlehorse_through_the_advertised_host(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    worker_env = services["worker"]["environment"]
    lh_env = services["littlehorse"]["environment"]
    assert worker_env["LHC_API_HOST"] == "littlehorse"
    assert worker_env["LHC_API_PORT"] == "2023"
    # The worker polls the advertised address, so it must be the service name too.
    assert lh_env["LHS_ADVERTISED_LISTENERS"] == "PLAIN://littlehorse:2023"
    assert lh_env["LHS_LISTENERS"] == "PLAIN:2023"
    # serve needs the TaskDef, which only the one-shot register service creates.
    assert services["register"]["environment"] == {
        "LHC_API_HOST": worker_env["LHC_API_HOST"],
        "LHC_API_PORT": worker_env["LHC_API_PORT"],
    }
    assert services["register"]["depends_on"]["littlehorse"] == {"condition": "service_healthy"}
    assert services["worker"]["depends_on"]["register"] == {
        "condition": "service_completed_successfully"
    }


def test_worker_sees_comfyui_files_at_the_paths_comfyui_writes(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    worker, comfyui = services["worker"], services["comfyui"]
    env = worker["environment"]
    assert env["COMFYUI_BASE_URL"] == "http://comfyui:8188"
    assert "8188:8188" in comfyui["ports"]

    worker_mounts, comfyui_mounts = _mounts(worker), _mounts(comfyui)
    assert worker_mounts["comfyui-data"] == comfyui_mounts["comfyui-data"] == "/comfyui"
    assert "comfyui-data" in compose["volumes"]
    shared = PurePosixPath("/comfyui")
    output, temp, inputs = (
        PurePosixPath(env[k])
        for k in ("COMFYUI_OUTPUT_DIR", "COMFYUI_TEMP_DIR", "COMFYUI_INPUT_DIR")
    )
    assert all(p.is_relative_to(shared) for p in (output, temp, inputs))

    args = comfyui["environment"]["CLI_ARGS"].split()
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    assert args[0] == "--cpu"
    assert flags["--output-directory"] == str(output)
    assert flags["--input-directory"] == str(inputs)
    # ComfyUI uses <--temp-directory>/temp.
    assert str(PurePosixPath(flags["--temp-directory"]) / "temp") == str(temp)


def test_worker_environment_is_what_settings_reads(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = compose["services"]["worker"]["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.base_url_str == env["COMFYUI_BASE_URL"]
    assert str(settings.output_dir) == env["COMFYUI_OUTPUT_DIR"]
    assert str(settings.temp_dir) == env["COMFYUI_TEMP_DIR"]
    assert str(settings.input_dir) == env["COMFYUI_INPUT_DIR"]
