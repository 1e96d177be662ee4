"""The retry policy: back-off delays, and retrying a coroutine by them (no real waiting)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

from comfyui_worker.comfyui.client import DEFAULT_RETRY
from comfyui_worker.lh.readiness import WARMUP_BACKOFF
from comfyui_worker.lh.supervised_worker import REGISTER_BACKOFF
from comfyui_worker.retrying import Backoff, retry


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


class FakeTime:
    """A clock that only the injected sleep moves, and a record of the pauses."""

    def __init__(self) -> None:
        self.now = 100.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def failing(
    times: int, error: Callable[[], BaseException] = Flaky
) -> tuple[Callable[[int], Awaitable[str]], list[int]]:
    """An attempt that fails `times` times, then returns "done"; and the list of each try's n."""
    calls: list[int] = []

    async def attempt(n: int) -> str:
        calls.append(n)
        if len(calls) <= times:
            raise error()
        return "done"

    return attempt, calls


def no_jitter_taken() -> float:
    return 0.0


def is_flaky(exc: Exception) -> bool:
    return isinstance(exc, Flaky)


# -- delays -------------------------------------------------------------------------------


def test_delays_double_from_first_and_stop_at_the_cap() -> None:
    backoff = Backoff(first=0.5, maximum=5.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]


def test_the_multiplier_sets_the_growth() -> None:
    backoff = Backoff(first=1.0, maximum=100.0, multiplier=3.0)
    assert [backoff.delay(n) for n in range(1, 5)] == [1.0, 3.0, 9.0, 27.0]
    assert [Backoff(first=0.2, maximum=1.0, multiplier=1.0).delay(n) for n in (1, 7)] == [0.2, 0.2]


def test_no_failure_no_wait() -> None:
    assert Backoff(first=1.0, maximum=2.0).delay(0) == 0.0


def test_a_cap_below_first_wins() -> None:
    # COMFYUI_BACKOFF_MAX may be set below COMFYUI_BACKOFF_BASE; the cap applies.
    assert Backoff(first=0.5, maximum=0.1).delay(1) == 0.1


def test_hours_of_failures_stay_at_the_cap() -> None:
    # 2 ** 5000 does not fit a float: the failure count of a long outage must not crash.
    assert Backoff(first=0.25, maximum=2.0).delay(5000) == 2.0
    assert REGISTER_BACKOFF.delay(5000, rand=no_jitter_taken) == 2.0


def test_full_jitter_spreads_the_pause_between_zero_and_the_delay() -> None:
    backoff = Backoff(first=1.0, maximum=8.0, jitter=1.0)
    assert backoff.delay(3, rand=no_jitter_taken) == 4.0
    assert backoff.delay(3, rand=lambda: 0.75) == 1.0
    rng = random.Random(17)
    pauses = [backoff.delay(n, rand=rng.random) for n in range(1, 200) for _ in range(5)]
    assert all(0 < p <= 8.0 for p in pauses)
    assert min(pauses) < 0.5 and max(pauses) > 7.5  # the whole range is used, not its top
    first, second = random.Random(3), random.Random(3)
    assert [backoff.delay(2, rand=first.random) for _ in range(5)] == [
        backoff.delay(2, rand=second.random) for _ in range(5)
    ]


def test_partial_jitter_keeps_the_pause_near_the_delay() -> None:
    backoff = Backoff(first=2.0, maximum=2.0, jitter=0.3)
    rng = random.Random(5)
    pauses = [backoff.delay(1, rand=rng.random) for _ in range(1000)]
    assert all(1.4 <= p <= 2.0 for p in pauses)
    assert min(pauses) < 1.45 and max(pauses) > 1.95


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first": -1.0, "maximum": 1.0},
        {"first": 1.0, "maximum": -1.0},
        {"first": 1.0, "maximum": 1.0, "multiplier": 0.5},
        {"first": 1.0, "maximum": 1.0, "jitter": 1.5},
        {"first": 1.0, "maximum": 1.0, "jitter": -0.1},
        {"first": 1.0, "maximum": 1.0, "attempts": 0},
        {"first": 1.0, "maximum": 1.0, "deadline": -1.0},
    ],
)
def test_nonsense_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)  # type: ignore[arg-type]


def test_the_documented_numbers() -> None:
    """README: registration 0.25 s doubling to 2 s (jittered), warmup 1 s doubling to 30 s,
    COMFYUI_RETRIES 3 with full-jitter delays from 0.5 s to 10 s."""
    top = no_jitter_taken
    assert [REGISTER_BACKOFF.delay(n, rand=top) for n in range(1, 6)] == [0.25, 0.5, 1, 2, 2]
    assert REGISTER_BACKOFF.delay(4, rand=lambda: 0.999999) == pytest.approx(1.4)
    assert [WARMUP_BACKOFF.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert WARMUP_BACKOFF.attempts is None and WARMUP_BACKOFF.deadline is None
    assert DEFAULT_RETRY.attempts == 4 and DEFAULT_RETRY.jitter == 1.0
    assert [DEFAULT_RETRY.delay(n, rand=top) for n in range(1, 7)] == [0.5, 1, 2, 4, 8, 10]


# -- retry --------------------------------------------------------------------------------


async def test_a_first_success_returns_without_waiting() -> None:
    time = FakeTime()
    attempt, calls = failing(0)
    assert await retry(attempt, Backoff(first=1, maximum=1), retry_on=is_flaky, sleep=time.sleep)
    assert calls == [0] and time.pauses == []


async def test_retries_with_the_attempt_number_until_it_succeeds() -> None:
    time = FakeTime()
    attempt, calls = failing(3)
    seen: list[tuple[int, str, float]] = []
    result = await retry(
        attempt,
        Backoff(first=0.5, maximum=1.5, attempts=5),
        retry_on=is_flaky,
        on_retry=lambda failures, exc, pause: seen.append((failures, type(exc).__name__, pause)),
        sleep=time.sleep,
    )
    assert result == "done"
    assert calls == [0, 1, 2, 3]
    assert time.pauses == [0.5, 1.0, 1.5]
    assert seen == [(1, "Flaky", 0.5), (2, "Flaky", 1.0), (3, "Flaky", 1.5)]


async def test_attempts_bound_the_tries_and_the_last_error_is_raised() -> None:
    time = FakeTime()
    errors: list[Flaky] = []

    async def attempt(n: int) -> None:
        errors.append(Flaky(n))
        raise errors[-1]

    hooks: list[int] = []
    with pytest.raises(Flaky) as raised:
        await retry(
            attempt,
            Backoff(first=0.1, maximum=1, attempts=3),
            retry_on=is_flaky,
            on_retry=lambda failures, _exc, _pause: hooks.append(failures),
            sleep=time.sleep,
        )
    assert raised.value is errors[-1] and len(errors) == 3
    assert time.pauses == [0.1, 0.2]  # no pause after the last try: nothing follows it
    assert hooks == [1, 2]


async def test_one_attempt_is_one_try() -> None:
    time = FakeTime()
    attempt, calls = failing(5)
    with pytest.raises(Flaky):
        await retry(
            attempt, Backoff(first=1, maximum=1, attempts=1), retry_on=is_flaky, sleep=time.sleep
        )
    assert calls == [0] and time.pauses == []


async def test_without_bounds_it_keeps_trying() -> None:
    time = FakeTime()
    attempt, calls = failing(200)
    result = await retry(attempt, Backoff(first=1, maximum=30), retry_on=is_flaky, sleep=time.sleep)
    assert result == "done" and len(calls) == 201
    assert time.pauses[:6] == [1, 2, 4, 8, 16, 30] and set(time.pauses[5:]) == {30}


async def test_no_retry_starts_past_the_deadline() -> None:
    time = FakeTime()
    attempt, calls = failing(10)
    with pytest.raises(Flaky):
        await retry(
            attempt,
            Backoff(first=1, maximum=1, deadline=2.5),
            retry_on=is_flaky,
            sleep=time.sleep,
            clock=time.clock,
        )
    # Tries at 0, 1 and 2 s; a fourth would start at 3 s, past 2.5 s: not waited for.
    assert calls == [0, 1, 2] and time.pauses == [1, 1]


async def test_the_deadline_counts_the_time_the_tries_take() -> None:
    time = FakeTime()
    calls: list[int] = []

    async def slow(n: int) -> None:
        calls.append(n)
        time.now += 2.0  # each try takes 2 s of the budget
        raise Flaky()

    with pytest.raises(Flaky):
        await retry(
            slow,
            Backoff(first=0.5, maximum=0.5, deadline=4.9),
            retry_on=is_flaky,
            sleep=time.sleep,
            clock=time.clock,
        )
    assert calls == [0, 1]  # tries at 0 and 2.5 s; the third would start at 5 s


async def test_whichever_bound_comes_first_ends_it() -> None:
    time = FakeTime()
    attempt, calls = failing(10)
    with pytest.raises(Flaky):
        await retry(
            attempt,
            Backoff(first=1, maximum=1, attempts=2, deadline=60),
            retry_on=is_flaky,
            sleep=time.sleep,
            clock=time.clock,
        )
    assert calls == [0, 1]


async def test_an_error_the_predicate_refuses_is_raised_at_once() -> None:
    time = FakeTime()
    attempt, calls = failing(1, error=Fatal)
    hooks: list[int] = []
    with pytest.raises(Fatal):
        await retry(
            attempt,
            Backoff(first=1, maximum=1, attempts=5),
            retry_on=is_flaky,
            on_retry=lambda failures, _exc, _pause: hooks.append(failures),
            sleep=time.sleep,
        )
    assert calls == [0] and time.pauses == [] and hooks == []


async def test_a_cancellation_in_a_try_is_never_retried() -> None:
    time = FakeTime()
    asked: list[BaseException] = []

    def retry_everything(exc: Exception) -> bool:
        asked.append(exc)
        return True

    attempt, calls = failing(3, error=asyncio.CancelledError)
    with pytest.raises(asyncio.CancelledError):
        await retry(
            attempt, Backoff(first=1, maximum=1), retry_on=retry_everything, sleep=time.sleep
        )
    assert calls == [0] and asked == [] and time.pauses == []


async def test_a_cancellation_during_the_pause_ends_the_retries() -> None:
    attempt, calls = failing(100)
    pausing = asyncio.Event()

    async def sleep_forever(_: float) -> None:
        pausing.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(
        retry(attempt, Backoff(first=1, maximum=1), retry_on=is_flaky, sleep=sleep_forever)
    )
    await asyncio.wait_for(pausing.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == [0]


async def test_a_timeout_around_the_call_bounds_the_retries_too() -> None:
    attempt, calls = failing(10_000)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await retry(attempt, Backoff(first=0.001, maximum=0.002), retry_on=is_flaky)
    assert 1 <= len(calls) < 10_000


async def test_the_real_sleep_waits_the_pauses() -> None:
    attempt, calls = failing(2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await retry(attempt, Backoff(first=0.005, maximum=0.01, attempts=3), retry_on=is_flaky)
    assert calls == [0, 1, 2] and loop.time() - started >= 0.014
