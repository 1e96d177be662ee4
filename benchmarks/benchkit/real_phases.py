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
    sees it (RunWf to COMPLETED; the floor's whole job), `server_ms` on the server's clock
    (the WfRun's start to its end; not for the floor)."""

    ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    server_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})


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

    async def floor() -> tuple[float, float]:
        start = time.perf_counter()
        _, _, done_counter = await minimal_job(http, target)
        return (done_counter - start) * 1000, 0.0

    timed: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
        "floor": floor,
        "noop": lambda: timed_wf_run(lh, noop),
        "serve": lambda: timed_wf_run(lh, serve),
    }
    out = RealLatencies()
    for n in range(max(1, warmup) + rounds):
        for i in range(len(KINDS)):
            kind = KINDS[(n + i) % len(KINDS)]
            ms, server_ms = await timed[kind]()
            if n >= max(1, warmup):
                out.ms[kind].append(ms)
                out.server_ms[kind].append(server_ms)
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
    `count` WfRuns through `serve`, each started at once."""
    out = RealBursts()
    for _ in range(rounds):
        rate, _ = await direct_burst(http, target, count)
        out.direct.append(rate)
        out.noop.append(await wf_run_burst(lh, noop, count))
        out.serve.append(await wf_run_burst(lh, serve, count))
    return out
