"""`comfyui-worker run | job`: one workflow file, template or job envelope down the path the
LittleHorse tasks take, progress on stderr, the result returned for stdout.

A signal stops the waiting, not the prompt: ComfyUI runs it on, and one line says so and how
to reattach (`--prompt-id`, which attaches to the prompt or reuses its result instead of
running it again). A second Ctrl-C within SECOND_SIGNAL_WINDOW seconds, or a first signal with
`--interrupt-on-signal`, interrupts it in ComfyUI.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

from . import cli_templates
from .constants import JobOutcome
from .exceptions import ComfyUIError, ConfigurationError, InvalidJobError, WorkflowAsJobError
from .execution import Executor
from .job import Job, parse_job
from .observability.console import ConsoleObserver, say
from .runner import Media, run_job, run_workflow
from .settings import Settings
from .workflow import load_workflow_file

# Long enough to press Ctrl-C again on purpose; short enough not to hold up a shell.
SECOND_SIGNAL_WINDOW = 3.0
# How long a stopped run asks ComfyUI whether the prompt is still there before it gives up.
QUEUE_CHECK_TIMEOUT = 5.0


class Stopped(Exception):
    """`run` ended on a signal; what became of the prompt has been said already."""


class Interrupted(Stopped):
    """By SIGINT (Ctrl-C)."""


class Terminated(Stopped):
    """By SIGTERM."""


STOPPED_BY: dict[signal.Signals, type[Stopped]] = {
    signal.SIGINT: Interrupted,
    signal.SIGTERM: Terminated,
}
# What each line calls the stop.
STOP_WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """What `run` and `job` share."""
    parser.add_argument(
        "--mock",
        action="store_true",
        help="start the bundled mock ComfyUI in-process and run against it",
    )
    parser.add_argument(
        "--prompt-id",
        help="attach to this ComfyUI prompt (or reuse its result) instead of submitting anew",
    )
    parser.add_argument(
        "--interrupt-on-signal",
        action="store_true",
        help="on Ctrl-C or SIGTERM, interrupt the prompt in ComfyUI instead of leaving it "
        "running there",
    )


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """The result of `run` or `job`; raises the errors of `exceptions`, or Stopped."""
    what = _what(args, settings)
    if args.mock:
        return _run_with_mock(what, args, settings)
    settings.check_dirs(*settings.mounted_dirs)
    return asyncio.run(_run(what, args, settings))


def _what(args: argparse.Namespace, settings: Settings) -> dict[str, Any] | Job:
    what: dict[str, Any] | Job
    if args.command == "job":
        what = _load_job(args.job)
    elif (template := cli_templates.template_job(args, settings)) is not None:
        what = template
    else:
        what = load_workflow_file(args.workflow, max_bytes=settings.max_workflow_bytes)
    if isinstance(what, Job) and what.template is not None:
        cli_templates.check_templates_dir(settings)
    return what


def _load_job(path: Path) -> Job:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidJobError(f"cannot read job file {path}: {exc}") from exc
    try:
        return parse_job(text)
    except InvalidJobError as exc:
        hint = (
            f"; to run a workflow file: comfyui-worker run {path}"
            if isinstance(exc, WorkflowAsJobError)
            else ""
        )
        raise type(exc)(f"{path}: {exc}{hint}", errors=exc.errors) from exc


def _run_with_mock(
    what: dict[str, Any] | Job, args: argparse.Namespace, settings: Settings
) -> dict[str, Any]:
    try:
        from comfyui_mock.runner import MockComfyUIThread
    except ImportError as exc:  # aiohttp is an optional extra
        raise ConfigurationError(
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
        return asyncio.run(_run(what, args, mocked, mock=True))


async def _run(
    what: dict[str, Any] | Job, args: argparse.Namespace, settings: Settings, *, mock: bool = False
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
    for sig in STOPPED_BY:
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    executor = Executor(settings)
    media = Media(settings, executor.client)
    try:
        with ConsoleObserver() as observer:
            job = asyncio.create_task(_job(what, executor, media, observer, args.prompt_id))
            stop = asyncio.create_task(signals.get())
            await asyncio.wait({job, stop}, return_when=asyncio.FIRST_COMPLETED)
            if job.done():
                stop.cancel()
                return job.result()
            observer.quiet = True
            job.cancel()
            await asyncio.gather(job, return_exceptions=True)
        sig = stop.result()
        if mock:
            message = f"{STOP_WORDS[sig]}: the mock ComfyUI stops with this process"
            say(message, settings.log_format, level=logging.WARNING)
        else:
            await _stopped(sig, observer.prompt_id, executor, signals, args.interrupt_on_signal)
        raise STOPPED_BY[sig]
    finally:
        for sig in STOPPED_BY:
            loop.remove_signal_handler(sig)
        await media.aclose()
        await executor.aclose()


async def _job(
    what: dict[str, Any] | Job,
    executor: Executor,
    media: Media,
    observer: ConsoleObserver,
    prompt_id: str | None,
) -> dict[str, Any]:
    outcome = JobOutcome.FAILED
    try:
        if isinstance(what, Job):
            # Here: lh.worker loads the LittleHorse SDK, which a bare workflow never needs.
            from .lh.worker import template_store

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
    except asyncio.CancelledError:
        outcome = JobOutcome.CANCELLED
        raise
    finally:
        observer.close(outcome)
    return result


async def _stopped(
    sig: signal.Signals,
    pid: str | None,
    executor: Executor,
    signals: asyncio.Queue[signal.Signals],
    interrupt: bool,
) -> None:
    """Say what became of the prompt; interrupt it in ComfyUI when asked to."""
    log_format, word = executor.settings.log_format, STOP_WORDS[sig]

    def tell(message: str) -> None:
        say(f"{word}: {message}", log_format, level=logging.WARNING)

    if pid is None:
        tell("before anything was sent to ComfyUI")
        return
    where = await _position(executor, pid)
    if where is None:
        tell(
            f"prompt {pid} is not in ComfyUI's queue; if it ran, --prompt-id {pid} gets its result"
        )
        return
    if interrupt:
        tell(await _interrupt(executor, pid))
        return
    still = {"running": "still runs", "pending": "is still queued"}.get(where, "may still run")
    there = f"prompt {pid} {still} in ComfyUI; reattach with --prompt-id {pid}"
    if sig is not signal.SIGINT:
        tell(f"{there} (--interrupt-on-signal interrupts it on a signal instead)")
        return
    tell(f"{there}, or press Ctrl-C again within {SECOND_SIGNAL_WINDOW:g} s to interrupt it there")
    try:
        async with asyncio.timeout(SECOND_SIGNAL_WINDOW):
            await signals.get()
    except TimeoutError:
        return
    tell(await _interrupt(executor, pid))


async def _position(executor: Executor, pid: str) -> str | None:
    """'running', 'pending', None when not in ComfyUI's queue, 'unknown' when it does not say."""
    try:
        async with asyncio.timeout(QUEUE_CHECK_TIMEOUT):
            return (await executor.client.queue()).position(pid)
    except (TimeoutError, ComfyUIError):
        return "unknown"


async def _interrupt(executor: Executor, pid: str) -> str:
    if await executor.abandon(pid, "the run was stopped"):
        return f"asked ComfyUI to interrupt prompt {pid}"
    return f"could not interrupt prompt {pid} in ComfyUI (see the warning above)"
