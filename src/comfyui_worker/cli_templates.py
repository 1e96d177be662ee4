"""`comfyui-worker templates list | show NAME [--json] | check`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from .comfyui.client import ComfyUIClient, RetryPolicy
from .exceptions import ComfyUIError
from .settings import Settings
from .templates.check import comfyui_findings, local_findings
from .templates.manifest import Catalogue, load_catalogue
from .templates.schema import describe_template, params_schema


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "templates", help="list, show and check the named templates (COMFYUI_TEMPLATES_DIR)"
    )
    commands = parser.add_subparsers(dest="templates_command", required=True)
    commands.add_parser("list", help="every template with its description, broken ones marked")
    show = commands.add_parser("show", help="one template's parameters")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print the JSON Schema of its params")
    commands.add_parser(
        "check",
        help="report every problem of every template (and, when ComfyUI answers, check "
        "nodes, inputs and enum values against its /object_info); exit 1 on problems",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    catalogue = load_catalogue(settings.templates_dir)
    if args.templates_command == "list":
        return _list(catalogue)
    if args.templates_command == "show":
        return _show(catalogue, args.name, as_json=args.json)
    return _check(catalogue, settings)


def _list(catalogue: Catalogue) -> int:
    for problem in catalogue.file_problems:
        print(f"warning: {problem.message}", file=sys.stderr)
    names = catalogue.names
    if not names:
        print(f"no templates in {catalogue.directory}")
        return 0
    width = max(len(n) for n in names)
    for name in names:
        if (template := catalogue.templates.get(name)) is not None:
            print(f"{name.ljust(width)}  {template.description}")
        else:
            first = catalogue.broken[name][0].message
            print(f"{name.ljust(width)}  BROKEN: {first} (see `templates check`)")
    return 0


def _show(catalogue: Catalogue, name: str, *, as_json: bool) -> int:
    if (template := catalogue.templates.get(name)) is None:
        if name in catalogue.broken:
            for problem in catalogue.broken[name]:
                print(f"template {name!r}: {problem.message}", file=sys.stderr)
            return 1
        available = ", ".join(sorted(catalogue.templates)) or "none"
        print(
            f"no template {name!r} in {catalogue.directory} (available: {available})",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(params_schema(template), indent=2) if as_json else describe_template(template))
    return 0


def _check(catalogue: Catalogue, settings: Settings) -> int:
    findings = local_findings(catalogue)
    try:
        object_info = asyncio.run(_object_info(settings))
    except ComfyUIError as exc:
        note = f"ComfyUI not checked ({exc}); local checks only"
    else:
        findings += comfyui_findings(catalogue, object_info)
        note = f"checked against ComfyUI's /object_info at {settings.base_url_str}"
    for finding in findings:
        print(finding)
    count = len(catalogue.names)
    print(
        f"{len(findings)} problem(s) in {count} template(s) in {catalogue.directory}; {note}",
        file=sys.stderr,
    )
    return 1 if findings or not catalogue.templates else 0


async def _object_info(settings: Settings) -> dict[str, Any]:
    # One try: a check should say at once that ComfyUI is not there.
    async with ComfyUIClient(
        settings.base_url_str, timeout=settings.request_timeout, retry=RetryPolicy(retries=0)
    ) as client:
        return await client.object_info()
