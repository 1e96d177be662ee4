"""The measurements, each taken side by side with its reference in the same rounds, so that
load from other processes on the machine lands on both alike."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from comfyui_worker.constants import CompletionMode
from comfyui_worker.execution import Executor
from comfyui_worker.settings import Settings

from .comfy import (
    Target,
    detection_ms,
    direct_burst,
    idle_gaps_ms,
    minimal_job,
    tiny_workflow,
)
from .serve import Serve, lh_burst, process_cpu_s, task_job

LATENCY_KINDS = ("floor", "websocket", "poll", "serve")


@dataclass
class Latencies:
    """Per kind: milliseconds per job (round i of every kind ran back to back) and, per job,
    the prompt id and the wall time the result was in hand."""

    ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in LATENCY_KINDS})
    done: dict[str, list[tuple[str, float]]] = field(
        default_factory=lambda: {k: [] for k in LATENCY_KINDS}
    )
    detection: dict[str, list[float]] = field(default_factory=dict)
    # CPU milliseconds spent per job: the in-process kinds' own thread, serve's whole process.
    cpu_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class Bursts:
    direct: list[float] = field(default_factory=list)
    worker: list[float] = field(default_factory=list)
    direct_gaps: list[float] = field(default_factory=list)
    worker_gaps: list[float] = field(default_factory=list)


def executor_for(target: Target, mode: CompletionMode) -> Executor:
    """An Executor with the production defaults but for where ComfyUI is."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        comfyui_base_url=target.url,
        output_dir=target.output_dir,
        temp_dir=target.temp_dir,
        completion_mode=mode,
    )
    return Executor(settings)


async def latencies(
    http: httpx.AsyncClient, target: Target, serve: Serve, *, rounds: int, warmup: int
) -> Latencies:
    """The floor, the Executor in both modes and one task through `serve`, round-robin (each
    round starts with a different one, so none always follows another)."""
    out = Latencies()
    by_mode = {m: executor_for(target, m) for m in CompletionMode}
    timed: dict[str, Callable[[], Awaitable[tuple[float, str, float]]]] = {
        "floor": lambda: _timed_floor(http, target),
        "websocket": lambda: _timed_executor(by_mode[CompletionMode.WEBSOCKET]),
        "poll": lambda: _timed_executor(by_mode[CompletionMode.POLL]),
        "serve": lambda: task_job(serve),
    }
    cpu = dict.fromkeys(LATENCY_KINDS, 0.0)
    try:
        for n in range(warmup + rounds):
            for i in range(len(LATENCY_KINDS)):
                kind = LATENCY_KINDS[(n + i) % len(LATENCY_KINDS)]
                # Only the serve task runs in another process; the rest run on this thread
                # (an Executor's rare worker-thread trips are not counted).
                used = process_cpu_s(serve.pid) if kind == "serve" else time.thread_time()
                ms, prompt_id, done = await timed[kind]()
                used = (process_cpu_s(serve.pid) if kind == "serve" else time.thread_time()) - used
                if n >= warmup:
                    out.ms[kind].append(ms)
                    out.done[kind].append((prompt_id, done))
                    cpu[kind] += used
        out.cpu_ms = {kind: total * 1000 / rounds for kind, total in cpu.items()}
    finally:
        for executor in by_mode.values():
            await executor.aclose()
    for kind in LATENCY_KINDS:
        out.detection[kind] = await detection_ms(http, out.done[kind])
    return out


async def _timed_floor(http: httpx.AsyncClient, target: Target) -> tuple[float, str, float]:
    start = time.perf_counter()
    prompt_id, done, done_counter = await minimal_job(http, target)
    return (done_counter - start) * 1000, prompt_id, done


async def _timed_executor(executor: Executor) -> tuple[float, str, float]:
    workflow = tiny_workflow()
    start = time.perf_counter()
    result = await executor.run(workflow)
    done = time.time()
    return (time.perf_counter() - start) * 1000, result.prompt_id, done


async def bursts(
    http: httpx.AsyncClient, target: Target, serve: Serve, *, count: int, rounds: int
) -> Bursts:
    """Per round: `count` prompts straight to ComfyUI, then `count` tasks through `serve`."""
    out = Bursts()
    for _ in range(rounds):
        rate, prompt_ids = await direct_burst(http, target, count)
        out.direct.append(rate)
        out.direct_gaps += await idle_gaps_ms(http, prompt_ids)
        rate, prompt_ids = await lh_burst(serve, count)
        out.worker.append(rate)
        out.worker_gaps += await idle_gaps_ms(http, prompt_ids)
    return out
