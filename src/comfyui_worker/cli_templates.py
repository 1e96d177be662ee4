"""`comfyui-worker templates list | show NAME [--json] | check`, and the template form of
`run`: `run --template NAME --param key=value ...`."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import mimetypes
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from .comfyui.client import DEFAULT_RETRY, ComfyUIClient
from .exceptions import (
    BrokenTemplateError,
    ComfyUIError,
    InvalidJobError,
    UnknownTemplateError,
)
from .job import Job, parse_job
from .observability.logs import mask_userinfo
from .settings import Settings
from .templates.binding import parse_text_value
from .templates.check import comfyui_findings, local_findings
from .templates.manifest import Catalogue, load_catalogue
from .templates.params import ParamType
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


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--template", help="run this template (COMFYUI_TEMPLATES_DIR) instead")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="a template parameter, read by its type (int, float, true/false...); for an "
        "image: a file path, an http(s) URL, an object-store URI or a JSON object",
    )


def _key_value(item: str) -> tuple[str, str]:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{item!r}: expected KEY=VALUE")
    return key, text


def usage_problem(args: argparse.Namespace) -> str | None:
    """What makes `run`'s arguments go together badly, if anything."""
    if args.template is None and args.workflow is None:
        return "give a workflow file or --template NAME"
    if args.template is not None and args.workflow is not None:
        return "give a workflow file or --template NAME, not both"
    if args.template is None and args.param:
        return "--param is for --template runs only"
    return None


def check_templates_dir(settings: Settings) -> None:
    """A ConfigurationError for a COMFYUI_TEMPLATES_DIR that is not there. The default
    (./templates) may well be absent, meaning no templates; a folder named is meant to be."""
    if "templates_dir" in settings.model_fields_set:
        settings.check_dirs("templates_dir")


def template_job(args: argparse.Namespace, settings: Settings) -> Job | None:
    """The job `run --template` stands for, or None for a workflow file."""
    if args.template is None:
        return None
    # Only to read each value by its declared type; binding checks it as for any task.
    template = load_catalogue(settings.templates_dir).templates.get(args.template)
    params: dict[str, Any] = {}
    for key, text in args.param:
        spec = template.params.get(key) if template is not None else None
        if spec is None:
            params[key] = text  # unknown or untyped: binding names the problem
        elif spec.type is ParamType.IMAGE:
            params[key] = image_param(key, text)
        else:
            params[key] = parse_text_value(spec, text)
    return parse_job({"template": args.template, "params": params})


def image_param(key: str, text: str) -> Any:
    """An image parameter from the command line: a JSON object as is, a URL or URI by
    reference, anything else a local file sent as base64."""
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidJobError(f"--param {key}: not valid JSON: {exc}") from exc
    if text.startswith(("http://", "https://")):
        return {"url": text}
    if re.match(r"^[a-z][a-z0-9+.-]*://", text):
        return {"uri": text}
    path = Path(text.removeprefix("@"))
    # A data URL keeps the file's type, so the uploaded name keeps its suffix.
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        return {"base64": f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()}
    except OSError as exc:
        raise InvalidJobError(f"--param {key}: cannot read {path}: {exc.strerror or exc}") from exc


def run(args: argparse.Namespace, settings: Settings) -> bool:
    """`templates ...`; False when `check` found problems."""
    check_templates_dir(settings)
    catalogue = load_catalogue(settings.templates_dir)
    if args.templates_command == "list":
        _list(catalogue)
    elif args.templates_command == "show":
        _show(catalogue, args.name, as_json=args.json)
    else:
        return _check(catalogue, settings)
    return True


def _list(catalogue: Catalogue) -> None:
    for problem in catalogue.file_problems:
        print(f"warning: {problem.message}", file=sys.stderr)
    names = catalogue.names
    if not names:
        print(f"no templates in {catalogue.directory}")
        return
    width = max(len(n) for n in names)
    for name in names:
        if (template := catalogue.templates.get(name)) is not None:
            print(f"{name.ljust(width)}  {template.description}")
        else:
            first = catalogue.broken[name][0].message
            print(f"{name.ljust(width)}  BROKEN: {first} (see `templates check`)")


def _show(catalogue: Catalogue, name: str, *, as_json: bool) -> None:
    if (template := catalogue.templates.get(name)) is None:
        if name in catalogue.broken:
            raise BrokenTemplateError.of(name, catalogue.broken[name])
        available = ", ".join(sorted(catalogue.templates)) or "none"
        raise UnknownTemplateError(
            f"no template {name!r} in {catalogue.directory} (available: {available})",
            template=name,
        )
    print(json.dumps(params_schema(template), indent=2) if as_json else describe_template(template))


def _check(catalogue: Catalogue, settings: Settings) -> bool:
    findings = local_findings(catalogue)
    try:
        object_info = asyncio.run(_object_info(settings))
    except ComfyUIError as exc:
        note = f"ComfyUI not checked ({exc}); local checks only"
    else:
        findings += comfyui_findings(catalogue, object_info)
        note = f"checked against ComfyUI's /object_info at {mask_userinfo(settings.base_url_str)}"
    for finding in findings:
        print(finding)
    count = len(catalogue.names)
    print(
        f"{len(findings)} problem(s) in {count} template(s) in {catalogue.directory}; {note}",
        file=sys.stderr,
    )
    return not findings and bool(catalogue.templates)


async def _object_info(settings: Settings) -> dict[str, Any]:
    # One try: a check should say at once that ComfyUI is not there.
    async with ComfyUIClient(
        settings.base_url_str,
        timeout=settings.request_timeout,
        retry=replace(DEFAULT_RETRY, attempts=1),
    ) as client:
        return await client.object_info()
