"""`serve` and `register`: the LittleHorse worker process around one Executor."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
from typing import Any

import grpc
import littlehorse
from littlehorse.config import LHConfig
from littlehorse.model import TaskDef, TaskDefId, VariableType
from littlehorse.worker import WorkerContext

from ..constants import JOB_TASK_NAME, TASK_NAME, TEMPLATE_TASK_NAME
from ..exceptions import ConfigurationError
from ..execution import Executor
from ..media.store import check_output_store
from ..observability.health import open_health_server
from ..observability.logs import flush_logs, set_worker_id
from ..retrying import Backoff
from ..runner import Media
from ..settings import Settings
from ..templates import TemplateStore
from .config import describe_lh_config, lh_config
from .identity import JobIdentity, JobScope
from .readiness import ComfyUIReadiness
from .supervisor import Supervisor
from .task import (
    TaskFunction,
    make_job_task_function,
    make_task_function,
    make_template_task_function,
)

log = logging.getLogger(__name__)


class TaskDefError(ConfigurationError):
    """The TaskDef cannot be served as it is; the message says what to do."""


class TaskDefConflictError(TaskDefError):
    """A TaskDef with our name but another signature exists (TaskDefs are immutable)."""


class TaskDefMissingError(TaskDefError):
    """LittleHorse refused to create the TaskDef and it does not exist."""


def task_functions(
    executor: Executor,
    media: Media,
    templates: TemplateStore | None = None,
    *,
    scope: JobScope | None = None,
) -> dict[str, TaskFunction]:
    """The tasks this worker serves (COMFYUI_TASKS), by TaskDef name."""
    templates = templates or template_store(executor)
    every = {
        TASK_NAME: make_task_function(executor, media, scope=scope),
        JOB_TASK_NAME: make_job_task_function(executor, media, templates, scope=scope),
        TEMPLATE_TASK_NAME: make_template_task_function(executor, media, templates, scope=scope),
    }
    return {name: every[name] for name in executor.settings.tasks}


def template_store(executor: Executor) -> TemplateStore:
    """The templates of COMFYUI_TEMPLATES_DIR, `choices: comfyui` asked of this ComfyUI."""
    return TemplateStore(executor.settings.templates_dir, object_info=executor.client.object_info)


def register(config: LHConfig, task: TaskFunction, name: str = TASK_NAME) -> str:
    """Put the TaskDef `task`'s signature describes and wait until it can be read. An
    identical existing one is fine; a conflicting one raises TaskDefConflictError.
    Credentials that may not write TaskDefs are fine when ours is already there. Blocking
    (the SDK's sync gRPC stub)."""
    try:
        littlehorse.create_task_def(task, name, config)
    except grpc.RpcError as exc:
        existing = _existing_task_def(config, name)
        if existing is not None and _same_signature(existing, task):
            # Least-privilege credentials: may run tasks, may not write TaskDefs.
            log.warning(
                "cannot put TaskDef %r (%s: %s), but it exists with this worker's signature; "
                "serving it",
                name,
                exc.code().name,
                exc.details(),
            )
            return f"TaskDef {name!r} already registered"
        if existing is not None:
            params = ", ".join(
                f"{v.name}: {VariableType.Name(v.type_def.primitive_type)}"
                for v in _wanted_vars(task)
            )
            raise TaskDefConflictError(
                f"TaskDef {name!r} already exists with a different signature "
                f"({describe_task_def(existing)}); this worker needs ({params}) -> "
                "JSON_OBJ. TaskDefs are immutable: delete the old one (lhctl delete taskDef "
                f"{name}) once no WfSpec uses it, then register again."
            ) from exc
        if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
            raise
        raise TaskDefMissingError(
            f"cannot create TaskDef {name!r}: LittleHorse answered {exc.code().name}: "
            f"{exc.details()}; and it does not exist yet. Register it once with credentials "
            "allowed to write TaskDefs (comfyui-worker register)."
        ) from exc
    _wait_readable(config, name)
    return f"TaskDef {name!r} registered"


# A real server answers PutTaskDef before the TaskDef is committed: a GetTaskDef right after
# (the SDK's worker start) can say NOT_FOUND for a moment (tens of ms, longer under load).
READABLE_WITHIN = 15.0
READABLE_BACKOFF = Backoff(first=0.05, maximum=1.0)


def _wait_readable(config: LHConfig, name: str) -> None:
    """Until LittleHorse serves the TaskDef it accepted. Blocking, as `register` is."""
    started = time.monotonic()
    for failures in itertools.count(1):
        if _existing_task_def(config, name) is not None:
            return
        if time.monotonic() - started > READABLE_WITHIN:
            raise TaskDefMissingError(
                f"LittleHorse accepted TaskDef {name!r} but still answers NOT_FOUND for it "
                f"{READABLE_WITHIN:g} s later"
            )
        time.sleep(READABLE_BACKOFF.delay(failures))


def register_all(config: LHConfig, tasks: dict[str, TaskFunction]) -> list[str]:
    return [register(config, task, name) for name, task in tasks.items()]


def _existing_task_def(config: LHConfig, name: str) -> TaskDef | None:
    try:
        task_def: TaskDef = config.stub().GetTaskDef(TaskDefId(name=name), timeout=30)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return task_def


def _wanted_vars(task: TaskFunction) -> list[Any]:
    """The TaskDef input variables the SDK derives from `task`'s signature."""
    # The SDK builds its PutTaskDefRequest with these (littlehorse-client 1.3.0, pinned).
    from littlehorse.worker import _resolved_signature, _to_variable_def

    return [
        _to_variable_def(param)
        for param in _resolved_signature(task).parameters.values()
        if param.annotation is not WorkerContext
    ]


def _same_signature(existing: TaskDef, task: TaskFunction) -> bool:
    from littlehorse.worker import _resolved_signature, _return_to_lh_schema

    returns = _return_to_lh_schema(_resolved_signature(task).return_annotation)
    return list(existing.input_vars) == _wanted_vars(task) and existing.return_type == returns


def describe_task_def(task_def: TaskDef) -> str:
    inputs = ", ".join(
        f"{v.name}: {VariableType.Name(v.type_def.primitive_type)}" for v in task_def.input_vars
    )
    returns = (
        VariableType.Name(task_def.return_type.return_type.primitive_type)
        if task_def.return_type.HasField("return_type")
        else "nothing"
    )
    return f"({inputs}) -> {returns}"


async def serve(settings: Settings, config: LHConfig | None = None) -> None:
    """Run the workers until SIGTERM/SIGINT, then drain (signal handlers need the main
    thread)."""
    config = config or lh_config(settings)
    # The SDK draws a random id when none is set and keeps it in the config: the one it polls
    # and registers under.
    set_worker_id(config.task_worker_id)
    log.debug("LittleHorse settings: %s", describe_lh_config(config))
    executor = Executor(settings, keep_spare_socket=True)
    media = Media(settings, executor.client)
    templates = template_store(executor)
    scope = JobScope.of(config, settings)
    tasks = task_functions(executor, media, templates, scope=scope)
    readiness = ComfyUIReadiness(executor)
    supervisor = Supervisor(
        tasks, config, ready=lambda: readiness.ready, ready_wait=settings.ready_wait
    )
    readiness.on_change = supervisor.wake
    health = None
    try:
        # Bound first: a port in use is a configuration error before anything else happens.
        health = open_health_server(settings, supervisor, asyncio.get_running_loop())
        if health is not None:
            health.start()
            log.info("health server on %s", health.url)
        # Before any task: one that cannot be delivered would fail after its GPU work.
        await check_output_store(settings, media.stores)
        # The SDK refuses to start without the TaskDefs; creating them here (idempotent) also
        # turns a conflicting one into a clear error instead of the SDK's signature mismatch.
        for line in await asyncio.to_thread(register_all, config, tasks):
            log.info(line)
        # Loaded now so that broken templates show in the log at start, not at first use.
        catalogue = await templates.catalogue()
        log.info(
            "templates in %s: %s",
            settings.templates_dir,
            ", ".join(sorted(catalogue.templates)) or "none",
        )
        log.info(
            "serving %s: ComfyUI %s, %d job(s) in flight, %d task slot(s) per LittleHorse host",
            ", ".join(repr(name) for name in tasks),
            settings.base_url_str,
            settings.max_in_flight,
            config.num_worker_threads,
        )
        await _run_until_signal(supervisor, readiness, settings, executor, scope)
    finally:
        if health is not None:
            await asyncio.to_thread(health.close)
        await media.aclose()
        await executor.aclose()


async def _run_until_signal(
    supervisor: Supervisor,
    readiness: ComfyUIReadiness,
    settings: Settings,
    executor: Executor,
    scope: JobScope,
) -> None:
    """Serve until the first SIGTERM/SIGINT, then drain; a second signal exits at once.

    Not `littlehorse.start()`: its stop() leaves start() asleep in the SDK's 60 s heartbeat
    and cancels running tasks instead of letting them finish.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now without waiting for running tasks", sig.name)
            flush_logs()
            logging.shutdown()
            os._exit(128 + sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    runner = asyncio.create_task(supervisor.run(), name="lh-supervisor")
    watcher = asyncio.create_task(readiness.run(), name="comfyui-readiness")
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({runner, watcher, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if watcher.done():
            # It watches until cancelled; ended, nothing would open the gate again.
            watcher.result()
            raise RuntimeError("the ComfyUI readiness watch ended")
        if runner.done():
            runner.result()  # e.g. LittleHorse unreachable at start: raise it
            return
        log.info(
            "signal received: draining (COMFYUI_SHUTDOWN_GRACE %g s; a second signal exits "
            "at once)",
            settings.shutdown_grace,
        )
        cancelled = await supervisor.drain(settings.shutdown_grace)
        if cancelled and settings.interrupt_on_shutdown:
            # At once: each is bounded (5 s), one after another they would add up.
            await asyncio.gather(
                *(
                    executor.abandon(
                        JobIdentity.of(claim.task.task_run_id, scope).prompt_id,
                        "the worker shut down",
                    )
                    for claim in cancelled
                )
            )
        await runner
        log.info("drained: exiting")
    finally:
        for task in (runner, watcher, stopping):
            task.cancel()
        await asyncio.gather(runner, watcher, stopping, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
