"""docker-compose.yml wires LittleHorse, ComfyUI and the worker together consistently."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from comfyui_worker.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


# --- tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Named volume -> container path (mode suffix dropped)."""
    return {entry.split(":")[0]: entry.split(":")[1] for entry in service.get("volumes", [])}


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


def test_worker_healthcheck_port_and_stop_grace_fit_its_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = compose["services"]["worker"]
    for key, value in worker["environment"].items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert worker["healthcheck"]["test"][-2:] == ["comfyui_worker.observability.probe", "/readyz"]
    assert f"{settings.worker_health_port}:{settings.worker_health_port}" in worker["ports"]
    # Docker's default stop timeout (10 s) would kill a draining worker mid-grace.
    grace = int(worker["stop_grace_period"].removesuffix("s"))
    assert grace > settings.shutdown_grace + 5
