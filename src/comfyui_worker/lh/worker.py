"""`serve` and `register`: the LittleHorse worker process around one Executor."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import grpc
import littlehorse
from littlehorse.config import LHConfig
from littlehorse.model import TaskDef, TaskDefId, VariableType
from littlehorse.worker import LHTaskWorker

from ..constants import TASK_NAME
from ..execution import Executor
from ..settings import Settings
from .task import TaskFunction, make_task_function

log = logging.getLogger(__name__)

NUM_WORKER_THREADS = "LHW_NUM_WORKER_THREADS"


class TaskDefConflictError(RuntimeError):
    """A TaskDef with our name but another signature exists (TaskDefs are immutable)."""


def lh_config(settings: Settings) -> LHConfig:
    """The SDK's config from LHC_*/LHW_* env vars, sized to the GPU when not set.

    The SDK's LHW_NUM_WORKER_THREADS (default 8) is how many tasks this process claims from
    LittleHorse per server connection (plus one extra poll). Claimed tasks beyond
    COMFYUI_MAX_IN_FLIGHT would only wait here while other GPUs idle, so it defaults to it.
    """
    config = LHConfig()
    # load() layers the environment over what it is given: an explicit setting still wins.
    config.load({NUM_WORKER_THREADS: str(settings.max_in_flight)})
    return config


def register(config: LHConfig, task: TaskFunction) -> str:
    """Put the TaskDef `task`'s signature describes. An identical existing one is fine; a
    conflicting one raises TaskDefConflictError. Blocking (the SDK's sync gRPC stub)."""
    try:
        littlehorse.create_task_def(task, TASK_NAME, config)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
        existing: TaskDef = config.stub().GetTaskDef(TaskDefId(name=TASK_NAME), timeout=30)
        raise TaskDefConflictError(
            f"TaskDef {TASK_NAME!r} already exists with a different signature "
            f"({describe_task_def(existing)}); this worker needs (workflow: JSON_OBJ) -> "
            "JSON_OBJ. TaskDefs are immutable: delete the old one (lhctl delete taskDef "
            f"{TASK_NAME}) once no WfSpec uses it, then register again."
        ) from exc
    return f"TaskDef {TASK_NAME!r} registered"


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
    """Run the worker until SIGTERM/SIGINT (signal handlers need the main thread)."""
    config = config or lh_config(settings)
    executor = Executor(settings)
    task = make_task_function(executor)
    # The SDK refuses to start without the TaskDef; creating it here (idempotent) also turns a
    # conflicting one into a clear error instead of the SDK's signature mismatch.
    log.info(await asyncio.to_thread(register, config, task))
    if not await executor.client.check_health():
        log.warning(
            "ComfyUI at %s is not answering yet; tasks will retry until it does",
            settings.base_url_str,
        )
    worker = LHTaskWorker(task, TASK_NAME, config)
    log.info(
        "serving %r: ComfyUI %s, %d job(s) in flight, %d task slot(s) per LittleHorse host",
        TASK_NAME,
        settings.base_url_str,
        settings.max_in_flight,
        config.num_worker_threads,
    )
    try:
        await _run_until_signal(worker)
    finally:
        await executor.aclose()


async def _run_until_signal(worker: LHTaskWorker) -> None:
    """Run the worker until SIGTERM/SIGINT.

    Not `littlehorse.start()`: its stop() leaves start() asleep in the SDK's 60 s heartbeat,
    so the process would linger for up to a minute after SIGTERM. Prompts already in ComfyUI
    keep running; LittleHorse retries their tasks, and a retry on this ComfyUI attaches.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(worker.start(), name="lh-worker")
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        await asyncio.wait({runner, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # e.g. LittleHorse unreachable at start: raise it
            return
        log.info("signal received: stopping the worker")
        # stop() reads the TaskDef start() fetched: AttributeError if it never got there.
        with contextlib.suppress(AttributeError):
            worker.stop()
    finally:
        for task in (runner, stopping):
            task.cancel()
        await asyncio.gather(runner, stopping, return_exceptions=True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
