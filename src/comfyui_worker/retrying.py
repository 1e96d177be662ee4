"""The one retry policy: capped exponential back-off with optional jitter, and a helper that
retries a coroutine with it.

Every wait between tries in the worker comes from a `Backoff`: HTTP requests to ComfyUI,
reports to LittleHorse, the warmup workflow, registration with LittleHorse and websocket
reconnects. What is worth retrying is the caller's to say (`retry_on`): `lh/errors.py` for
task outcomes, the client for HTTP statuses.

Only `Exception`s are retried: a cancellation (or KeyboardInterrupt) goes through at once, in
a try or in the pause between tries, and so does any error `retry_on` refuses. Timeouts
belong to the call site: a try that can hang is bounded where it is made.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

OnRetry = Callable[[int, Exception, float], None]
"""Called before each pause with (tries failed so far, the last error, the pause in seconds):
the call site's log line and metric."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """`first` seconds after the first failure, times `multiplier` after each further one,
    never more than `maximum`.

    `jitter` is the share of each pause that is random: 0 waits exactly, 1 waits anywhere
    between 0 and the pause ("full jitter", which spreads many workers retrying one server),
    0.3 between 70 % and 100 % of it. `attempts` bounds the tries (the first included), and
    `deadline` the seconds after the first try within which a retry may start; None for
    either is no bound.
    """

    first: float
    maximum: float
    multiplier: float = 2.0
    jitter: float = 0.0
    attempts: int | None = None
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.first < 0 or self.maximum < 0:
            raise ValueError(f"back-off pauses cannot be negative: {self}")
        if self.multiplier < 1:
            raise ValueError(f"a back-off multiplier below 1 would shrink the pauses: {self}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter is a share of the pause, from 0 to 1: {self}")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"at least one attempt is made: {self}")
        if self.deadline is not None and self.deadline < 0:
            raise ValueError(f"a deadline cannot be negative: {self}")

    def delay(self, failures: int, *, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after `failures` consecutive failures (none: no wait). `rand`
        gives numbers in [0, 1), for the jitter."""
        if failures <= 0:
            return 0.0
        try:
            grown = self.first * self.multiplier ** (failures - 1)
        except OverflowError:  # hours of failures in a row; the cap applies all the same
            grown = self.maximum
        capped = min(self.maximum, grown)
        return capped * (1 - self.jitter * rand())


async def retry(
    attempt: Callable[[int], Awaitable[T]],
    backoff: Backoff,
    *,
    retry_on: Callable[[Exception], bool],
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> T:
    """`await attempt(n)` for n = 0, 1, ... until it returns; pausing by `backoff` after each
    error that `retry_on` accepts.

    The attempt number lets a retry differ from the first try (look for what an earlier try
    may have done, take a newer channel). The last error is raised as it was once `retry_on`
    refuses it, the attempts are used up, or the next try would start past the deadline.
    """
    started = clock()
    failures = 0
    while True:
        try:
            return await attempt(failures)
        except Exception as exc:
            failures += 1
            if not retry_on(exc) or (backoff.attempts is not None and failures >= backoff.attempts):
                raise
            pause = backoff.delay(failures, rand=rand)
            if backoff.deadline is not None and clock() + pause - started > backoff.deadline:
                raise
            if on_retry is not None:
                on_retry(failures, exc, pause)
        await sleep(pause)
