"""Results, exceptions and logs kept under what LittleHorse stores (`bounds`)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from pydantic import ValidationError

from comfyui_worker.bounds import (
    EARLIER_ATTEMPT_BYTES,
    LH_RECORD_LIMIT,
    MAX_LOG_BYTES,
    MAX_RESULT_CEILING,
    MIN_RESULT_LIMIT,
    RECORD_OVERHEAD,
    LogBudget,
    bound_details,
    bound_result,
    off_loop,
    result_limit,
    serialized_size,
    truncate,
    truncate_start,
)
from comfyui_worker.constants import ExceptionName
from comfyui_worker.exceptions import (
    ExecutionError,
    InvalidParamsError,
    OutputTooLargeError,
    TemplateProblem,
)
from comfyui_worker.lh.errors import lh_exception
from comfyui_worker.settings import Settings
from loop_lag import loop_lag

LIMIT = 800_000  # the default COMFYUI_MAX_RESULT_BYTES


def result_with(*texts: str, files: int = 1) -> dict[str, Any]:
    paths = [f"/comfyui/output/run/img_{i:05}_.png" for i in range(files)]
    return {
        "prompt_id": "p",
        "status": "success",
        "outputs": paths,
        "files": [{"node_id": "9", "key": "images", "path": p} for p in paths],
        "texts": [{"node_id": str(10 + i), "key": "text", "text": t} for i, t in enumerate(texts)],
        "node_errors": [],
        "reused": False,
    }


def test_truncate_says_how_much_was_cut() -> None:
    assert truncate("short", 100) == "short"
    cut = truncate("a" * 10_000, 1_000)
    assert len(json.dumps(cut)) - 2 <= 1_000
    kept = cut.index("…")
    assert cut.endswith(f"…[truncated {10_000 - kept:,} bytes]")
    # Counted in UTF-8 bytes, measured in the JSON the SDK sends (escapes included).
    accented = truncate("é" * 1_000, 300)
    assert len(json.dumps(accented)) - 2 <= 300
    kept = accented.index("…")
    assert accented.endswith(f"[truncated {2 * (1_000 - kept):,} bytes]")


def test_the_issue_case_a_1_6_mb_text_fits_the_default_limit() -> None:
    limit = Settings(_env_file=None).max_result_bytes  # type: ignore[call-arg]
    caption = "a caption"
    bounded = bound_result(result_with("x" * 1_600_000, caption), limit)
    assert serialized_size(bounded) <= limit < 1_000_000
    long, short = bounded["texts"]
    assert short["text"] == caption
    kept = long["text"].index("…")
    assert long["text"].endswith(f"[truncated {1_600_000 - kept:,} bytes]")
    assert bounded["outputs"] == result_with()["outputs"]


def test_the_longest_texts_are_cut_first_and_the_input_is_left_alone() -> None:
    original = result_with("a" * 30_000, "b" * 5_000, "c" * 100)
    bounded = bound_result(original, 20_000)
    assert serialized_size(bounded) <= 20_000
    assert "[truncated" in bounded["texts"][0]["text"]
    assert bounded["texts"][1]["text"] == "b" * 5_000 and bounded["texts"][2]["text"] == "c" * 100
    assert original["texts"][0]["text"] == "a" * 30_000


def test_what_cannot_be_cut_is_output_too_large_naming_the_parts() -> None:
    with pytest.raises(OutputTooLargeError) as info:
        bound_result(result_with("t" * 50_000, files=400), 20_000)
    err = info.value
    assert err.limit == 20_000 and err.size > 20_000
    assert err.parts["files"] > err.parts["outputs"] > err.parts["texts"]
    assert "biggest parts: files" in str(err) and "COMFYUI_MAX_RESULT_BYTES (20,000)" in str(err)


def test_exception_content_is_cut_string_by_string() -> None:
    exc = ExecutionError(
        prompt_id="p",
        node_id="3",
        node_type="KSampler",
        exception_type="RuntimeError",
        exception_message="tensor " * 100_000,
        traceback=[f"frame {i}: " + "x" * 5_000 for i in range(20)],
    )
    content = bound_details(exc.details(), 10_000)
    assert serialized_size(content) <= 10_000
    assert content["node_id"] == "3" and content["node_type"] == "KSampler"
    assert "[truncated " in content["exception_message"]


def test_many_small_items_are_dropped_whole_keeping_the_scalars() -> None:
    details = {
        "message": "refused",
        "limit": 5,
        "node_errors": [{"id": str(i)} for i in range(5_000)],
    }
    content = bound_details(details, 1_000)
    assert serialized_size(content) <= 1_000
    assert content["message"] == "refused" and content["limit"] == 5
    assert content["node_errors"].startswith("…[truncated ")


def test_the_log_stays_under_budget_and_keeps_room_for_the_failure() -> None:
    budget = LogBudget()
    logged = [line for i in range(5_000) if (line := budget.admit(f"node {i} " + "p" * 100))]
    final = budget.admit("failed: " + "e" * 50_000, final=True)
    assert final is not None and final.startswith("failed: eee") and "[truncated " in final
    logged.append(final)
    assert sum(len(line.encode()) + 32 for line in logged) <= MAX_LOG_BYTES
    assert [line for line in logged if "further log lines dropped" in line] == [logged[-2]]


@pytest.mark.parametrize("value", [0, -1, MAX_RESULT_CEILING + 1, 1_047_000])
def test_max_result_bytes_must_fit_a_littlehorse_record(value: int) -> None:
    with pytest.raises(ValidationError, match="max_result_bytes"):
        Settings(_env_file=None, max_result_bytes=value)  # type: ignore[call-arg]


def test_the_result_limit_is_the_setting_while_the_task_runs_record_holds_it() -> None:
    assert result_limit(LIMIT, 2_000, 0).max_bytes == LIMIT
    assert result_limit(LIMIT, 2_000, 3).max_bytes == LIMIT
    ceiling = result_limit(MAX_RESULT_CEILING, 2_000, 0)
    assert (ceiling.max_bytes, ceiling.name) == (MAX_RESULT_CEILING, "COMFYUI_MAX_RESULT_BYTES")


def test_the_inputs_and_earlier_attempts_take_their_share_of_the_record() -> None:
    # The record: its overhead, the inputs, the earlier attempts, this attempt's log, result.
    limit = result_limit(MAX_RESULT_CEILING, 300_000, 2)
    expected = LH_RECORD_LIMIT - RECORD_OVERHEAD - 300_000 - MAX_LOG_BYTES
    assert limit.max_bytes == expected - 2 * EARLIER_ATTEMPT_BYTES
    assert limit.name == (
        "the room its LittleHorse record leaves (300,000 bytes of inputs, 2 earlier attempt(s))"
    )
    with pytest.raises(OutputTooLargeError, match=r"over the room its LittleHorse record"):
        bound_result(result_with(files=30_000), limit.max_bytes, limit_name=limit.name)
    # Never so little that an exception would not fit.
    assert result_limit(LIMIT, 512_000, 20).max_bytes == MIN_RESULT_LIMIT


def test_truncate_start_keeps_the_end_of_a_traceback() -> None:
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * 10_000 + "ValueError: no"
    cut = truncate_start(traceback, 2_000)
    assert cut.endswith("ValueError: no") and cut.startswith("…[truncated ")
    assert len(json.dumps(cut)) - 2 <= 2_000
    assert truncate_start("short", 2_000) == "short"


def test_max_result_bytes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMFYUI_MAX_RESULT_BYTES", "250000")
    assert Settings(_env_file=None).max_result_bytes == 250_000  # type: ignore[call-arg]


def many_texts() -> dict[str, Any]:
    """The issue's result: 2,500 texts of 400 characters (1.1 MB), each cut a little."""
    return result_with(*(f"{i:04} " + "t" * 395 for i in range(2_500)))


def unknown_params() -> InvalidParamsError:
    """The issue's exception: 3,000 unknown parameters of 200 characters (2.4 MB of content:
    every problem in the message, and each again in `problems`)."""
    keys = [f"unknown_{i:04}_" + "k" * 187 for i in range(3_000)]
    return InvalidParamsError.of(
        "invert",
        [
            TemplateProblem(key, "unknown", f"parameter {key!r} is unknown (it takes: photo)")
            for key in keys
        ],
    )


def test_bounding_takes_time_linear_in_the_size_of_the_value() -> None:
    # Re-measuring the whole value after each cut took 5 s and 24 s for these.
    started = time.perf_counter()
    bounded = bound_result(many_texts(), LIMIT)
    content = bound_details(unknown_params().details(), LIMIT)
    assert time.perf_counter() - started < 1.0
    assert serialized_size(bounded) <= LIMIT < serialized_size(many_texts())
    assert all(t["text"].startswith(f"{i:04} t") for i, t in enumerate(bounded["texts"]))
    assert sum("[truncated " in t["text"] for t in bounded["texts"]) > 1_000
    assert serialized_size(content) <= LIMIT and content["template"] == "invert"


def test_a_cut_keeps_the_most_that_fits_and_says_how_much_went() -> None:
    text = "\n" * 1_000 + "é" * 3_000 + "a" * 100_000  # escapes where the cut is decided
    for limit in (50, 2_000, 7_000, 20_000):
        cut = truncate(text, limit)
        kept = cut.index("…")
        assert len(json.dumps(cut)) - 2 <= limit
        assert cut.endswith(f"[truncated {len(text[kept:].encode()):,} bytes]")
        assert len(json.dumps(truncate(text, limit + 50))) - 2 > len(json.dumps(cut)) - 2
    assert truncate("x" * 1_000_000, 10) == "…[truncated 1,000,000 bytes]"[:10]


async def test_the_event_loop_keeps_ticking_while_a_large_value_is_bounded() -> None:
    result, exc = many_texts(), unknown_params()
    stalls = []
    # Best of three: on a shared machine the OS may pause any thread now and then; a loop
    # blocked by the bounding is blocked every time.
    while len(stalls) < 3 and 0.05 <= min(stalls, default=0.5) <= 1:
        async with loop_lag() as lag:
            bounded = await off_loop(result, lambda: bound_result(result, LIMIT))
            error = await lh_exception(exc, ExceptionName.INVALID_PARAMS, max_bytes=LIMIT)
        stalls.append(lag.worst)
    assert min(stalls) < 0.05, f"the loop stalled for {[round(s * 1000) for s in stalls]} ms"
    assert serialized_size(bounded) <= LIMIT
    assert len(error.message) + len(error.content.json_obj) <= LIMIT
    assert json.loads(error.content.json_obj)["template"] == "invert"


async def test_a_small_value_is_bounded_where_it_is() -> None:
    # A thread hop per task would cost every job; a typical result is a few hundred bytes.
    threads: list[threading.Thread] = []

    def bound(value: dict[str, Any]) -> dict[str, Any]:
        threads.append(threading.current_thread())
        return bound_result(value, LIMIT)

    small, large = result_with("a caption"), many_texts()
    await off_loop(small, lambda: bound(small))
    await off_loop(large, lambda: bound(large))
    assert threads[0] is threading.main_thread() and threads[1] is not threading.main_thread()
