"""The command line `comfyui-worker` parses: commands, their arguments and their help, with
the environment variables `serve` and `register` read."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterable
from enum import Enum
from pathlib import Path

from . import __version__, cli_run, cli_templates
from .job import job_json_schema
from .settings import Settings

SCHEMAS = {"job": job_json_schema}
# Where every setting is described (it will move to its own page).
CONFIGURATION_DOC = "docs/configuration.md"
# The help's width, and that of its first column (argparse's own).
WIDTH = 79
NAMES = 24
SERVE_SETTINGS = (
    "base_url",
    "output_dir",
    "temp_dir",
    "tasks",
    "templates_dir",
    "max_in_flight",
    "job_deadline",
    "shutdown_grace",
    "worker_health_port",
    "log_format",
    "output_mode",
    "output_store",
    "job_namespace",
)
# The LittleHorse SDK's own; it reads them, so their descriptions are ours to give.
LH_CONNECTION = {
    "LHC_API_HOST": "LittleHorse server host (default: localhost)",
    "LHC_API_PORT": "its gRPC port (default: 2023)",
    "LHC_API_PROTOCOL": "PLAINTEXT or TLS (default: PLAINTEXT)",
    "LHC_TENANT_ID": "the LittleHorse tenant",
    "LHC_CA_CERT, LHC_CLIENT_CERT, LHC_CLIENT_KEY": "TLS: CA, client certificate and key files",
    "LHC_OAUTH_CLIENT_ID, _CLIENT_SECRET, _ACCESS_TOKEN_URL": "OAuth credentials (TLS only)",
}
LH_WORKER = {
    "LHW_TASK_WORKER_ID": "this worker's id in LittleHorse",
    "LHW_NUM_WORKER_THREADS": "tasks claimed at once per LittleHorse host "
    "(default: COMFYUI_MAX_IN_FLIGHT)",
}


def build(
    exit_codes: Iterable[tuple[str, str]],
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The parser, and its `run` subparser (whose argument mistakes main reports);
    `exit_codes` (code, meaning) are listed after the help."""
    parser = argparse.ArgumentParser(
        prog="comfyui-worker",
        description=_paragraph(
            "Run ComfyUI workflows, alone or as the LittleHorse task "
            "execute-comfyui-workflow. Configured by COMFYUI_* and LHC_*/LHW_* env vars "
            f"(or ./.env); every setting: {CONFIGURATION_DOC}."
        ),
        epilog=f"exit codes:\n{table(exit_codes, names=3)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser(
        "run", help="run one API-format workflow file or one template and print the result"
    )
    run_p.add_argument(
        "workflow", type=Path, nargs="?", help="workflow JSON exported in API format"
    )
    cli_templates.add_run_arguments(run_p)
    cli_run.add_arguments(run_p)
    job_p = sub.add_parser(
        "job", help="run one job envelope file (as the task run-comfyui-job) and print the result"
    )
    job_p.add_argument("job", type=Path, help="job JSON: workflow or template, inputs, output")
    cli_run.add_arguments(job_p)
    schema_p = sub.add_parser("schema", help="print a JSON Schema")
    schema_p.add_argument("name", choices=sorted(SCHEMAS), help="job: the run-comfyui-job envelope")
    sub.add_parser(
        "serve",
        help="serve the LittleHorse tasks (production entrypoint)",
        description=_paragraph(
            "Serve the LittleHorse tasks of COMFYUI_TASKS until SIGTERM/SIGINT, then drain. "
            "Creates the TaskDefs first if they are missing."
        ),
        epilog=environment(SERVE_SETTINGS, {**LH_CONNECTION, **LH_WORKER}),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_parser(
        "register",
        help="create the LittleHorse TaskDefs (idempotent)",
        description=_paragraph(
            "Create the TaskDefs of COMFYUI_TASKS in LittleHorse; an identical one is fine, "
            "one with another signature is refused."
        ),
        epilog=environment(("tasks",), LH_CONNECTION),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_templates.add_parser(sub)
    return parser, run_p


def environment(settings: tuple[str, ...], sdk: dict[str, str]) -> str:
    """The epilog listing the variables a command reads: ours described as in Settings."""
    fields = Settings.model_fields
    rows = [
        (f"COMFYUI_{name.upper()}", f"{fields[name].description} (default: {_shown(name)})")
        for name in settings
    ]
    return (
        "environment (or ./.env; the environment wins):\n"
        f"{table([*rows, *sdk.items()])}\nevery setting: {CONFIGURATION_DOC}"
    )


def table(rows: Iterable[tuple[str, str]], names: int = NAMES) -> str:
    """Two columns as argparse lays out options: a name longer than `names` starts its own
    line."""
    lines = []
    indent = " " * (names + 4)
    for name, meaning in rows:
        head = f"  {name.ljust(names)}  "
        wrapped = textwrap.wrap(meaning, WIDTH - len(indent), break_on_hyphens=False)
        if len(name) > names:
            lines.append(f"  {name}")
            lines += [indent + line for line in wrapped]
        else:
            lines += [(head if i == 0 else indent) + line for i, line in enumerate(wrapped)]
    return "\n".join(lines)


def _paragraph(text: str) -> str:
    # The raw formatter (for the tables) leaves the wrapping to us.
    return textwrap.fill(text, WIDTH, break_on_hyphens=False)


def _shown(name: str) -> str:
    default = Settings.model_fields[name].default
    if isinstance(default, tuple):
        return ", ".join(default) or "none"
    if isinstance(default, Enum):
        return str(default.value)
    return "none" if default in (None, "") else str(default).rstrip("/")
