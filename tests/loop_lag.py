"""How late the event loop runs a ticker: what a blocking call on it costs every other job
(and the LittleHorse heartbeat)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

TICK = 0.005


@dataclass
class Lag:
    worst: float = 0.0
    ticks: int = 0


@contextlib.asynccontextmanager
async def loop_lag() -> AsyncIterator[Lag]:
    """While the block runs, a task sleeps TICK seconds over and over and records the worst
    delay beyond that; read `worst` after the block."""
    lag = Lag()
    loop = asyncio.get_running_loop()

    async def tick() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(TICK)
            lag.worst = max(lag.worst, loop.time() - before - TICK)
            lag.ticks += 1

    ticker = asyncio.create_task(tick(), name="loop-lag-ticker")
    await asyncio.sleep(2 * TICK)
    try:
        yield lag
    finally:
        await asyncio.sleep(2 * TICK)  # a stall at the very end shows in the next tick
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
