"""`comfyui-worker run | job | schema | serve | register | templates`, and how it exits.

A failure ends the command with one line on stderr (a JSON log record with
COMFYUI_LOG_FORMAT=json) and the exit code `EXIT_CODES` gives the class of its exception, so
that a script tells input to fix from configuration to fix and from a server to wait for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from enum import IntEnum

from dotenv import dotenv_values
from pydantic import ValidationError

from . import cli_parser, cli_run, cli_templates
from .constants import LogFormat
from .exceptions import (
    ComfyUIError,
    ComfyUIWorkerError,
    ConfigurationError,
    ExecutionError,
    ExecutionInterrupted,
    InputFetchError,
    InvalidInputError,
    InvalidJobError,
    InvalidWorkflowError,
    JobTimeoutError,
    LittleHorseError,
    LittleHorseUnreachableError,
    NotComfyUIError,
    OutputError,
    OutputStoreDeniedError,
    OutputStoreError,
    PromptConflictError,
    PromptLostError,
    PromptValidationError,
    TemplateError,
    TemplatesUnreadableError,
)
from .execution import Executor
from .observability.console import say
from .observability.logs import configure_logging
from .runner import Media
from .settings import Settings, describe_validation_error

log = logging.getLogger(__name__)


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    CONFIGURATION = 3
    INVALID = 4
    UNAVAILABLE = 5
    EXECUTION = 6
    INTERRUPTED = 130
    BROKEN_PIPE = 141
    TERMINATED = 143


MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.FAILED: "`templates check` found problems; an error without a code of its own",
    ExitCode.USAGE: "usage: an unknown option, arguments that do not go together",
    ExitCode.CONFIGURATION: "configuration to fix: a setting, .env, a folder, a TaskDef; the "
    "server at COMFYUI_BASE_URL is not ComfyUI; LittleHorse refused us",
    ExitCode.INVALID: "invalid input: the workflow, job, template or parameters; the same "
    "input fails again",
    ExitCode.UNAVAILABLE: "unavailable: ComfyUI, LittleHorse, an input's source or the store "
    "unreachable or failing (5xx); later may work",
    ExitCode.EXECUTION: "execution failed: a node raised, the prompt was interrupted or lost "
    "(ComfyUI restarted), the deadline passed, outputs are missing",
    ExitCode.INTERRUPTED: "stopped by Ctrl-C (SIGINT)",
    ExitCode.BROKEN_PIPE: "stdout closed early (by `head`, say): nothing more was written",
    ExitCode.TERMINATED: "stopped by SIGTERM",
}

# Most specific first: the first class an error is an instance of gives its code; any other
# error of ours is FAILED.
EXIT_CODES: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (cli_run.Terminated, ExitCode.TERMINATED),
    (cli_run.Interrupted, ExitCode.INTERRUPTED),
    (KeyboardInterrupt, ExitCode.INTERRUPTED),
    (NotComfyUIError, ExitCode.CONFIGURATION),
    (OutputStoreDeniedError, ExitCode.CONFIGURATION),
    # FolderMappingError and the TaskDef errors of `lh.worker` among them.
    (ConfigurationError, ExitCode.CONFIGURATION),
    (LittleHorseUnreachableError, ExitCode.UNAVAILABLE),
    (LittleHorseError, ExitCode.CONFIGURATION),
    (TemplatesUnreadableError, ExitCode.UNAVAILABLE),
    (InputFetchError, ExitCode.UNAVAILABLE),
    (OutputStoreError, ExitCode.UNAVAILABLE),
    (InvalidWorkflowError, ExitCode.INVALID),
    (InvalidJobError, ExitCode.INVALID),
    (InvalidInputError, ExitCode.INVALID),
    (PromptValidationError, ExitCode.INVALID),
    (TemplateError, ExitCode.INVALID),
    (PromptConflictError, ExitCode.INVALID),
    (ExecutionError, ExitCode.EXECUTION),
    (ExecutionInterrupted, ExitCode.EXECUTION),
    (PromptLostError, ExitCode.EXECUTION),
    (JobTimeoutError, ExitCode.EXECUTION),
    (OutputError, ExitCode.EXECUTION),
    # Unreachable, 5xx after retries, answers that make no sense.
    (ComfyUIError, ExitCode.UNAVAILABLE),
)


def exit_code(exc: BaseException) -> ExitCode:
    return next((code for cls, code in EXIT_CODES if isinstance(exc, cls)), ExitCode.FAILED)


def main(argv: list[str] | None = None) -> int:
    parser, run_parser = cli_parser.build((str(code.value), MEANINGS[code]) for code in ExitCode)
    args = parser.parse_args(argv)
    if args.command == "run" and (problem := cli_templates.usage_problem(args)):
        run_parser.error(problem)
    settings: Settings | None = None
    try:
        if args.command == "schema":
            print(json.dumps(cli_parser.SCHEMAS[args.name](), indent=2))
            return ExitCode.OK
        settings = _settings(args.verbose)
        return _command(args, settings)
    except BrokenPipeError:
        # A reader that stopped reading (`| head`) wants no more, error lines included.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.dup2(devnull, sys.stderr.fileno())
        return ExitCode.BROKEN_PIPE
    except cli_run.Stopped as exc:
        return exit_code(exc)  # what became of the prompt was said when the signal came
    except (ComfyUIWorkerError, KeyboardInterrupt) as exc:
        log_format = settings.log_format if settings is not None else _early_log_format()
        if settings is None:
            configure_logging(log_format, verbose=args.verbose)
        if isinstance(exc, KeyboardInterrupt):
            say("interrupted", log_format, level=logging.WARNING)
        else:
            say(_message(args, exc), log_format)
        return exit_code(exc)
    except Exception:
        if settings is None or settings.log_format is not LogFormat.JSON:
            raise  # a person reads the traceback of a bug
        log.critical("unexpected error", exc_info=True)
        return ExitCode.FAILED


def _settings(verbose: bool) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigurationError(
            f"invalid configuration: {describe_validation_error(exc)}"
        ) from exc
    except UnicodeDecodeError as exc:  # pydantic-settings reading .env
        raise ConfigurationError(
            f"cannot read .env: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as "
            "UTF-8, or set those variables in the environment"
        ) from exc
    except OSError as exc:  # .env unreadable (its permissions, a folder of that name)
        raise ConfigurationError(f"cannot read .env: {exc.strerror or exc}") from exc
    configure_logging(settings.log_format, verbose=verbose)
    return settings


def _early_log_format() -> LogFormat:
    """COMFYUI_LOG_FORMAT when the settings as a whole cannot be read, so that the line saying
    why is in the format asked for."""
    value = os.environ.get("COMFYUI_LOG_FORMAT")
    if value is None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            value = dotenv_values(".env").get("COMFYUI_LOG_FORMAT")
    try:
        return LogFormat(value or LogFormat.TEXT)
    except ValueError:
        return LogFormat.TEXT


def _message(args: argparse.Namespace, exc: ComfyUIWorkerError) -> str:
    # The class says which business exception the same job would be as a task (`lh.errors`).
    return f"{type(exc).__name__}: {exc}" if args.command in ("run", "job") else str(exc)


def _command(args: argparse.Namespace, settings: Settings) -> ExitCode:
    if args.command in ("run", "job"):
        print(json.dumps(cli_run.run(args, settings), indent=2))
    elif args.command == "templates":
        return ExitCode.OK if cli_templates.run(args, settings) else ExitCode.FAILED
    elif args.command == "register":
        _register(settings)
    else:
        _serve(settings)
    return ExitCode.OK


def _register(settings: Settings) -> None:
    import grpc

    from .lh.config import lh_config, rpc_error
    from .lh.worker import register_all, task_functions

    config = lh_config(settings)
    # The Executor only lends the task functions their signatures; it opens no connection.
    executor = Executor(settings)
    tasks = task_functions(executor, Media(settings, executor.client))
    try:
        print("\n".join(register_all(config, tasks)))
    except grpc.RpcError as exc:  # unreachable server, auth
        raise rpc_error(exc, config, "cannot register the TaskDefs: ") from exc


def _serve(settings: Settings) -> None:
    import grpc

    from .lh.config import lh_config, rpc_error
    from .lh.worker import serve

    # Paths under a folder that is not mounted here would be useless to every task.
    settings.check_dirs(*settings.mounted_dirs)
    config = lh_config(settings)  # reads the TLS files: before the event loop runs
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(settings, config))
    except grpc.RpcError as exc:  # LittleHorse unreachable or refusing us: let the supervisor retry
        raise rpc_error(exc, config) from exc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
