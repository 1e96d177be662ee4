"""The real server's measurements, each side by side with its references in the same rounds:
the minimal client straight to ComfyUI (ComfyUI's own time), a WfRun whose task does nothing
(LittleHorse's own time) and a WfRun through `serve`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from .comfy import Target, direct_burst, minimal_job
from .real_lh import RealLH, Worker, timed_wf_run, wf_run_burst

KINDS = ("floor", "noop", "serve")


@dataclass
class RealLatencies:
    """Per kind, milliseconds per job, round i of every kind back to back: `ms` as the client
    sees it (RunWf to COMPLETED; the floor's whole job); on the server's clock (not for the
    floor) `server_ms` from the WfRun's start to its end, `task_ms` the task attempt's own
    start to end: the server's claim to the time the worker's report carries."""

    ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    server_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    task_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})


@dataclass
class RealBursts:
    direct: list[float] = field(default_factory=list)
    noop: list[float] = field(default_factory=list)
    serve: list[float] = field(default_factory=list)


async def real_latencies(
    http: httpx.AsyncClient,
    target: Target,
    lh: RealLH,
    noop: Worker,
    serve: Worker,
    *,
    rounds: int,
    warmup: int,
) -> RealLatencies:
    """Round-robin, each round starting with another kind, so none always follows another.
    At least one warm-up round: the first WfRun of each also waits for its worker's poll."""

    async def floor() -> tuple[float, float, float]:
        start = time.perf_counter()
        _, _, done_counter = await minimal_job(http, target)
        return (done_counter - start) * 1000, 0.0, 0.0

    timed: dict[str, Callable[[], Awaitable[tuple[float, float, float]]]] = {
        "floor": floor,
        "noop": lambda: timed_wf_run(lh, noop),
        "serve": lambda: timed_wf_run(lh, serve),
    }
    out = RealLatencies()
    for n in range(max(1, warmup) + rounds):
        for i in range(len(KINDS)):
            kind = KINDS[(n + i) % len(KINDS)]
            ms, server_ms, task_ms = await timed[kind]()
            if n >= max(1, warmup):
                out.ms[kind].append(ms)
                out.server_ms[kind].append(server_ms)
                out.task_ms[kind].append(task_ms)
    return out


async def real_bursts(
    http: httpx.AsyncClient,
    target: Target,
    lh: RealLH,
    noop: Worker,
    serve: Worker,
    *,
    count: int,
    rounds: int,
) -> RealBursts:
    """Per round: `count` prompts straight to ComfyUI, `count` WfRuns of the no-op task, and
    `count` WfRuns through `serve`, each started at once. A first round is not counted: the
    server's JVM is still compiling its hot paths (the first limit measured would lose)."""
    out = RealBursts()
    for n in range(1 + rounds):
        rate, _ = await direct_burst(http, target, count)
        noop_rate = await wf_run_burst(lh, noop, count)
        serve_rate = await wf_run_burst(lh, serve, count)
        if n > 0:
            out.direct.append(rate)
            out.noop.append(noop_rate)
            out.serve.append(serve_rate)
    return out
