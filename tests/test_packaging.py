"""What can be checked of the Docker image, CI and README without Docker; and the project
installed the way the image installs it (a wheel, not editable), which does run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from comfyui_worker.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# The image's install: what uv.lock pins, no dev dependencies, the project as a wheel.
IMAGE_SYNC = ("sync", "--frozen", "--no-dev", "--no-editable")


def final_stage() -> str:
    """The Dockerfile's last stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    return re.sub(r"\\\n\s*", " ", text.split("\nFROM ")[-1])


def test_dockerfile_builds_from_the_lockfile_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml uv.lock ./" in text
    assert text.count("uv sync --frozen --no-dev") == 2
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    final_stage = text.split("\nFROM ")[-1]
    assert "uv" not in re.findall(r"COPY --from=\S+ (\S+)", final_stage)
    assert 'ENTRYPOINT ["comfyui-worker"]' in final_stage and 'CMD ["serve"]' in final_stage


def test_dockerfile_installs_the_project_as_a_wheel_and_ships_only_the_virtualenv() -> None:
    text = (ROOT / "Dockerfile").read_text()
    syncs = [line.split()[2:] for line in re.findall(r"^RUN uv sync .*$", text, flags=re.M)]
    assert syncs == [[*IMAGE_SYNC, "--no-install-project"], [*IMAGE_SYNC]]
    # Not editable, the runtime needs no source tree: it gets the virtualenv and nothing else.
    copies = re.findall(r"^COPY --from=build (?:--\S+ )*(\S+) (\S+)$", final_stage(), flags=re.M)
    assert copies == [("/app/.venv", "/app/.venv")]


def test_dockerfile_labels_say_what_pyproject_says() -> None:
    stage = final_stage()
    labels = dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', stage))
    assert labels["org.opencontainers.image.title"] == PROJECT["name"]
    assert labels["org.opencontainers.image.description"] == PROJECT["description"]
    assert labels["org.opencontainers.image.version"] == PROJECT["version"]
    assert labels["org.opencontainers.image.licenses"] == PROJECT["license"]
    # No URL is guessed: the build says where its source is.
    assert labels["org.opencontainers.image.source"] == "${SOURCE_URL}"
    assert stage.index("ARG SOURCE_URL") < stage.index("LABEL ")


def test_dockerfile_exposes_the_health_port() -> None:
    (port,) = re.findall(r"^EXPOSE\s+(\d+)$", final_stage(), flags=re.M)
    assert int(port) == Settings.model_fields["worker_health_port"].default


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git"} <= set(ignored)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "uv run pytest" in readme
    assert ci.strip().splitlines()[-1] == "uv run pytest"
    assert "pip install" in ci and "command -v uv" in ci


def test_quick_start_example_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    (first,) = re.findall(r"uv run comfyui-worker run (\S+) --mock", readme)
    assert (ROOT / first).is_file()


@pytest.mark.timeout(300)
def test_the_project_installs_as_a_wheel_and_runs(tmp_path: Path) -> None:
    """The image's `uv sync`, from uv's cache (no network), into a virtualenv of its own:
    the packages are the wheel's, and the image's commands run from it."""
    uv = shutil.which("uv")
    assert uv is not None, "uv is needed (CI installs it)"
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    built = subprocess.run(
        [uv, *IMAGE_SYNC, "--offline", "--python", sys.executable],
        cwd=ROOT,
        env=env | {"UV_PROJECT_ENVIRONMENT": str(venv), "UV_LINK_MODE": "copy"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert built.returncode == 0, built.stderr
    bin_dir = venv / "bin"
    python = bin_dir / "python"
    run_env = {k: v for k, v in env.items() if not k.startswith("COMFYUI_")}

    def run(*args: str | Path, **extra: str) -> str:
        done = subprocess.run(
            [str(a) for a in args],
            cwd=tmp_path,  # not the checkout: nothing may come from ./src
            env=run_env | extra,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # The packages are the wheel's, inside the virtualenv, with their data files.
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    assert site.is_relative_to(venv)
    where = run(
        python,
        "-c",
        "import comfyui_worker as w, comfyui_mock as m; print(w.__file__, m.__file__)",
    ).split()
    assert [Path(p).relative_to(site).parts[0] for p in where] == ["comfyui_worker", "comfyui_mock"]
    assert (site / "comfyui_mock" / "assets" / "object_info.json").is_file()
    src = str(ROOT / "src")
    assert not [p for p in site.glob("*.pth") if src in p.read_text()]  # no editable hook
    # The image's entrypoint and its HEALTHCHECK command.
    assert "serve" in run(bin_dir / "comfyui-worker", "--help")
    schema = json.loads(run(bin_dir / "comfyui-worker", "schema", "job"))
    assert "workflow" in schema["properties"]
    run(
        python,
        "-m",
        "comfyui_worker.observability.probe",
        "/healthz",
        COMFYUI_WORKER_HEALTH_PORT="0",
    )
