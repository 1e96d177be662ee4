"""What can be checked of the Docker image, CI and README without building them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_builds_from_the_lockfile_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml uv.lock ./" in text
    assert text.count("uv sync --frozen --no-dev") == 2
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    final_stage = text.split("\nFROM ")[-1]
    assert "uv" not in re.findall(r"COPY --from=\S+ (\S+)", final_stage)
    assert 'ENTRYPOINT ["comfyui-worker"]' in final_stage and 'CMD ["serve"]' in final_stage


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
