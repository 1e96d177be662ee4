"""`comfyui-worker run | job | schema | serve | register`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import cli_templates
from .constants import JobOutcome, LogFormat
from .exceptions import ComfyUIWorkerError, InvalidJobError
from .execution import Executor
from .job import Job, job_json_schema, parse_job
from .observability.console import ConsoleObserver
from .observability.logs import configure_logging, redact
from .runner import Media, run_job, run_workflow
from .settings import Settings, describe_validation_error
from .workflow import load_workflow_file

SCHEMAS = {"job": job_json_schema}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="comfyui-worker",
        description="Run ComfyUI workflows, alone or as the LittleHorse task "
        "execute-comfyui-workflow. Configured by COMFYUI_* and LHC_*/LHW_* env vars.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser(
        "run", help="run one API-format workflow file or one template and print the result"
    )
    run_p.add_argument(
        "workflow", type=Path, nargs="?", help="workflow JSON exported in API format"
    )
    cli_templates.add_run_arguments(run_p)
    run_p.add_argument(
        "--mock",
        action="store_true",
        help="start the bundled mock ComfyUI in-process and run against it",
    )
    run_p.add_argument("--prompt-id", help="reuse/attach to this ComfyUI prompt_id")
    job_p = sub.add_parser(
        "job", help="run one job envelope file (as the task run-comfyui-job) and print the result"
    )
    job_p.add_argument("job", type=Path, help="job JSON: workflow or template, inputs, output")
    job_p.add_argument("--mock", action="store_true", help="run against the bundled mock")
    job_p.add_argument("--prompt-id", help="reuse/attach to this ComfyUI prompt_id")
    schema_p = sub.add_parser("schema", help="print a JSON Schema")
    schema_p.add_argument("name", choices=sorted(SCHEMAS), help="job: the run-comfyui-job envelope")
    sub.add_parser("serve", help="serve the LittleHorse tasks (production entrypoint)")
    sub.add_parser("register", help="create the LittleHorse TaskDefs (idempotent)")
    cli_templates.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "schema":
        print(json.dumps(SCHEMAS[args.name](), indent=2))
        return 0

    try:
        settings = Settings()
    except ValidationError as exc:
        configure_logging(LogFormat.TEXT, verbose=args.verbose)
        return _fail(f"invalid configuration: {describe_validation_error(exc)}")
    except UnicodeDecodeError as exc:  # pydantic-settings reading .env
        return _fail(
            f"cannot read .env: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as "
            "UTF-8, or set those variables in the environment"
        )
    except OSError as exc:  # .env unreadable (its permissions, a folder of that name)
        return _fail(f"cannot read .env: {exc.strerror or exc}")
    configure_logging(settings.log_format, verbose=args.verbose)
    if args.command in ("run", "job"):
        return _run(args, settings)
    if args.command == "templates":
        return cli_templates.run(args, settings)
    if args.command == "register":
        return _register(settings)
    return _serve(settings)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        what: dict[str, Any] | Job
        if args.command == "job":
            what = _load_job(args.job)
        elif (template := cli_templates.template_job(args, settings)) is not None:
            what = template
        else:
            what = load_workflow_file(args.workflow, max_bytes=settings.max_workflow_bytes)
        if args.mock:
            result = _run_with_mock(what, args.prompt_id, settings)
        else:
            settings.check_dirs(*settings.mounted_dirs)
            result = asyncio.run(run_once(what, settings, prompt_id=args.prompt_id))
    except ComfyUIWorkerError as exc:
        return _fail(f"{type(exc).__name__}: {exc}")
    print(json.dumps(result, indent=2))
    return 0


def _load_job(path: Path) -> Job:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidJobError(f"cannot read job file {path}: {exc}") from exc
    try:
        return parse_job(text)
    except InvalidJobError as exc:
        raise InvalidJobError(f"{path}: {exc}", errors=exc.errors) from exc


async def run_once(
    what: dict[str, Any] | Job, settings: Settings, *, prompt_id: str | None = None
) -> dict[str, Any]:
    """The same path the LittleHorse tasks take, for one workflow or job; progress on stderr."""
    from .lh.worker import template_store

    executor = Executor(settings)
    media = Media(settings, executor.client)
    with ConsoleObserver() as observer:
        outcome = JobOutcome.FAILED
        try:
            if isinstance(what, Job):
                result = await run_job(
                    what,
                    executor=executor,
                    media=media,
                    templates=template_store(executor),
                    prompt_id=prompt_id,
                    observer=observer,
                )
            else:
                result = await run_workflow(
                    what, executor=executor, media=media, prompt_id=prompt_id, observer=observer
                )
            outcome = JobOutcome.SUCCESS
        finally:
            observer.close(outcome)
            await media.aclose()
            await executor.aclose()
    return result


def _run_with_mock(
    what: dict[str, Any] | Job, prompt_id: str | None, settings: Settings
) -> dict[str, Any]:
    try:
        from comfyui_mock.runner import MockComfyUIThread
    except ImportError as exc:  # aiohttp is an optional extra
        raise SystemExit(
            f"--mock needs the 'mock' extra (pip install 'comfyui-worker[mock]'): {exc}"
        ) from exc
    with MockComfyUIThread.in_directory(Path.cwd() / ".comfyui-mock") as mock:
        mocked = settings.model_copy(
            update={
                "base_url": mock.url,
                "output_dir": mock.output_dir,
                "temp_dir": mock.temp_dir,
                "input_dir": mock.input_dir,
            }
        )
        return asyncio.run(run_once(what, mocked, prompt_id=prompt_id))


def _register(settings: Settings) -> int:
    import grpc

    from .lh.config import describe_rpc_error, lh_config
    from .lh.worker import TaskDefError, register_all, task_functions

    try:
        config = lh_config(settings)
        # The Executor only lends the task functions their signatures; it opens no connection.
        executor = Executor(settings)
        tasks = task_functions(executor, Media(settings, executor.client))
        print("\n".join(register_all(config, tasks)))
    except (TaskDefError, ComfyUIWorkerError) as exc:
        return _fail(str(exc))
    except grpc.RpcError as exc:  # unreachable server, auth
        return _fail(f"cannot register the TaskDefs: {describe_rpc_error(exc, config)}")
    return 0


def _serve(settings: Settings) -> int:
    import grpc

    from .lh.config import describe_rpc_error, lh_config
    from .lh.worker import TaskDefError, serve

    try:
        # Paths under a folder that is not mounted here would be useless to every task.
        settings.check_dirs(*settings.mounted_dirs)
        config = lh_config(settings)  # reads the TLS files: before the event loop runs
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(settings, config))
    except (TaskDefError, ComfyUIWorkerError) as exc:  # configuration errors among them
        return _fail(str(exc))
    except grpc.RpcError as exc:  # LittleHorse unreachable or refusing us: let the supervisor retry
        return _fail(describe_rpc_error(exc, config))
    return 0


def _fail(message: str) -> int:
    print(f"comfyui-worker: error: {redact(message)}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
