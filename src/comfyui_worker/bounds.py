"""What LittleHorse stores for a task attempt, measured and kept under its record limit.

The server keeps a TaskRun in one record of at most about 1,047,000 bytes: its input variables
and every attempt's output, log output and error or exception. A report over that is refused
(UNAVAILABLE, retried by the worker until it gives up); a report that fits but would make the
record too large is answered OK and dropped; and in a window of a few hundred bytes below the
limit the record passes the server's own check and is refused by Kafka, which stops the
server's processing altogether, again at every restart (tests/littlehorse/README.md). In the
first two cases the task hangs until its timeout, to be retried into the same result. So the
result (or the exception) of every attempt is kept under COMFYUI_MAX_RESULT_BYTES and under
what the record leaves it (`result_limit`: the inputs and the earlier attempts take their
share), and the NodeRun's log output under MAX_LOG_BYTES, measured as the SDK serializes them:
`json.dumps` of the value (ASCII, so characters are bytes).

Long texts are cut with a marker saying how much was cut; what still does not fit raises
OutputTooLargeError naming the biggest parts. Paths, URLs and other data are never cut: a
shortened one would be wrong, not smaller.

A value is serialized once: replacing one string inside it changes the whole by exactly the
change of that string's encoding, so what is cut is kept in running totals. Values that are
large take milliseconds all the same, so `off_loop` bounds them in a worker thread: the event
loop runs every job and the LittleHorse heartbeat.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .exceptions import OutputTooLargeError

T = TypeVar("T")

LH_RECORD_LIMIT = 1_047_000
"""Bytes of the largest record the LittleHorse server accepts."""

MAX_LOG_BYTES = 32_000
"""Bytes of NodeRun log output one attempt may leave (stored beside the result)."""

MAX_RESULT_CEILING = 1_000_000
"""The highest COMFYUI_MAX_RESULT_BYTES allowed: the record limit less the log and the
report's own fields. What one attempt may really send is `result_limit`, which is less when the
TaskRun's inputs or earlier attempts take more of the record."""

RECORD_OVERHEAD = 8_000
"""What a TaskRun's record holds besides its inputs and its attempts' outputs, logs and errors
(ids, the TaskDef name, timestamps, each attempt's worker id and version, framing): about 400
bytes on LittleHorse 1.2.1, and the Kafka record adds ~300 more; the rest is margin."""

MAX_ERROR_BYTES = 16_000
"""A retryable failure's message in the report (the SDK sends the whole traceback): its last
bytes are kept, where Python puts the exception itself."""

EARLIER_ATTEMPT_BYTES = MAX_LOG_BYTES + MAX_ERROR_BYTES + 1_000
"""The most an earlier failed attempt of this worker leaves in the record: its log output, its
error message and its own fields."""

MIN_RESULT_LIMIT = 64_000
"""`result_limit` never goes below this: room enough for a useful exception. Only a TaskRun
with inputs near COMFYUI_MAX_WORKFLOW_BYTES that has failed more than about eight times gets
here, and its earlier attempts rarely took their whole allowance."""

MAX_LOG_LINE_BYTES = 2_000
"""One log line, cut beyond this (an error message with a whole traceback in it)."""

# A cut text keeps at least this much of its start: enough to say what it was.
MIN_KEPT_CHARS = 200


@dataclass(frozen=True, slots=True)
class ResultLimit:
    """How many bytes one attempt's result or exception may take, and what sets that (for
    the message of a result that does not fit)."""

    max_bytes: int
    name: str = "COMFYUI_MAX_RESULT_BYTES"


def result_limit(max_result_bytes: int, inputs_bytes: int, attempt_number: int) -> ResultLimit:
    """COMFYUI_MAX_RESULT_BYTES, or less where the TaskRun's record would not hold it: the
    record keeps the inputs (`inputs_bytes`, as LittleHorse sent them), each earlier attempt
    (at most EARLIER_ATTEMPT_BYTES each: `attempt_number` of them) and this attempt's log."""
    room = (
        LH_RECORD_LIMIT
        - RECORD_OVERHEAD
        - inputs_bytes
        - MAX_LOG_BYTES
        - attempt_number * EARLIER_ATTEMPT_BYTES
    )
    if room >= max_result_bytes:
        return ResultLimit(max_result_bytes)
    room = max(room, MIN_RESULT_LIMIT)
    return ResultLimit(
        room,
        f"the room its LittleHorse record leaves ({inputs_bytes:,} bytes of inputs, "
        f"{attempt_number} earlier attempt(s))",
    )


def truncate_start(text: str, max_bytes: int) -> str:
    """`text` whose JSON encoding fits `max_bytes`, its start replaced by a marker if cut (for
    a traceback, whose end says what happened)."""
    if len(text) <= max_bytes and _encoded(text) <= max_bytes:
        return text
    cut = truncate(text[::-1], max_bytes)
    if not cut.endswith(" bytes]"):
        return cut[::-1]
    kept, mark = cut.rsplit("…[truncated ", 1)
    return f"…[truncated {mark}" + kept[::-1]


def serialized_size(value: Any) -> int:
    """Bytes LittleHorse stores for `value`: the SDK sends `json.dumps(value)`."""
    return len(json.dumps(value))


def marker(cut_bytes: int) -> str:
    return f"…[truncated {cut_bytes:,} bytes]"


def truncate(text: str, max_bytes: int) -> str:
    """`text` whose JSON encoding fits `max_bytes`, its end replaced by a marker if cut.

    Every character takes at least one byte, so only the first `max_bytes` characters are
    ever encoded, however long the text: a first guess scaled by their escapes, and if that
    does not fit, a bisection (about log2(max_bytes) tries).
    """
    if len(text) <= max_bytes and _encoded(text) <= max_bytes:
        return text
    head = text[: max(0, max_bytes)]
    # surrogatepass: a lone surrogate (valid in JSON, not in UTF-8) must not fail the cut.
    total = len(text.encode(errors="surrogatepass"))

    def cut(keep: int) -> str:
        return head[:keep] + marker(total - len(head[:keep].encode(errors="surrogatepass")))

    def fits(keep: int) -> bool:
        return _encoded(cut(keep)) <= max_bytes

    guess = min(len(head), len(head) * max(0, max_bytes - 40) // max(1, _encoded(head)))
    if fits(guess):
        return cut(guess)
    low, high = 0, guess  # `high` does not fit
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return cut(low) if fits(low) else marker(total)[: max(0, max_bytes)]


def bound_result(
    result: dict[str, Any], max_bytes: int, *, limit_name: str = "COMFYUI_MAX_RESULT_BYTES"
) -> dict[str, Any]:
    """The task result cut to fit `max_bytes`: long `texts[*].text` are truncated, longest
    first; raises OutputTooLargeError when it still does not fit (`limit_name`: what sets
    `max_bytes`, for its message).

    Call it on the final dict, after anything that adds to it (inline base64 outputs...).
    """
    bounded = dict(result)
    texts = [dict(t) for t in result.get("texts") or []]
    if texts:
        bounded["texts"] = texts
    slots = [_Slot(t, "text") for t in texts if isinstance(t.get("text"), str)]
    size = _fit(serialized_size(bounded), max_bytes, slots)
    if size > max_bytes:
        parts = {key: serialized_size(value) for key, value in bounded.items()}
        biggest = sorted(parts.items(), key=lambda kv: -kv[1])[:3]
        raise OutputTooLargeError(
            f"the result is {size:,} bytes, over {limit_name} ({max_bytes:,}) "
            "even with its texts cut; biggest parts: "
            + ", ".join(f"{key} {n:,} bytes" for key, n in biggest)
            + ". Return fewer outputs, or deliver them to an object store (output mode "
            "'store') instead of inline",
            size=size,
            limit=max_bytes,
            parts=parts,
        )
    return bounded


def bound_details(details: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """Exception content cut to fit `max_bytes`: every string may be cut (messages,
    tracebacks, node error details), longest first; then the biggest lists and objects are
    replaced by a marker; if it still does not fit, only the (cut) message is kept."""
    bounded: dict[str, Any] = _copy(details)
    slots: list[_Slot] = []
    _collect(bounded, slots)
    size = _fit(serialized_size(bounded), max_bytes, slots)
    # Many small items (node errors, frames): drop the biggest lists and objects whole.
    nested = {k: serialized_size(v) for k, v in bounded.items() if isinstance(v, dict | list)}
    for key in sorted(nested, key=lambda k: -nested[k]):
        if size <= max_bytes:
            break
        bounded[key] = marker(nested[key])
        size -= nested[key] - serialized_size(bounded[key])
    if size <= max_bytes:
        return bounded
    message = truncate(str(details.get("message", "")), max(0, max_bytes // 2))
    return {
        "message": message,
        "truncated": f"the exception's content was {size:,} bytes, over {max_bytes:,}",
    }


@dataclass(slots=True)
class _Slot:
    """A string inside a JSON value that may be cut: `container[key]`."""

    container: Any
    key: Any

    @property
    def text(self) -> str:
        value: str = self.container[self.key]
        return value


def _fit(size: int, max_bytes: int, slots: list[_Slot]) -> int:
    """Cut the longest slots of a value that serializes to `size` bytes until it fits
    `max_bytes`; its final size. Each cut is counted, never measured again."""
    for slot in sorted(slots, key=lambda s: -len(s.text)):
        if size <= max_bytes:
            break
        text = slot.text
        if len(text) <= MIN_KEPT_CHARS:
            continue
        encoded = _encoded(text)
        budget = max(encoded - (size - max_bytes), _encoded(text[:MIN_KEPT_CHARS]) + 40)
        cut = truncate(text, budget)
        slot.container[slot.key] = cut
        size -= encoded - _encoded(cut)
    return size


def _encoded(text: str) -> int:
    return len(json.dumps(text)) - 2


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def _collect(value: Any, slots: list[_Slot]) -> None:
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(item, str):
            slots.append(_Slot(value, key))
        elif isinstance(item, dict | list):
            _collect(item, slots)


# A value this small (in characters and items) is bounded on the event loop in well under a
# millisecond; a larger one goes to a worker thread, which costs a thread hop.
OFF_LOOP_THRESHOLD = 32_000
# What one list or object item counts for at least: the walk deciding stays short too.
_ITEM_WEIGHT = 4


async def off_loop(value: Any, bound: Callable[[], T]) -> T:
    """`bound()`, which measures and cuts `value`: in a worker thread when `value` is large.

    `value` must not change meanwhile (the task that awaits this holds it)."""
    if _small(value):
        return bound()
    return await asyncio.to_thread(bound)


def _small(value: Any, limit: int = OFF_LOOP_THRESHOLD) -> bool:
    """Whether `value` is clearly under `limit`: a walk that stops as soon as it is not, so
    it takes at most about limit / _ITEM_WEIGHT steps whatever the value."""
    budget, pending = limit, [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            budget -= len(item)
        elif isinstance(item, dict):
            budget -= _ITEM_WEIGHT * len(item)
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            budget -= _ITEM_WEIGHT * len(item)
            pending.extend(item)
        else:
            budget -= _ITEM_WEIGHT
        if budget < 0:
            return False
    return True


MAX_MESSAGE_BYTES = 16_000
"""An exception's message (and ComfyUI's exception_message), cut beyond this."""

# The SDK prefixes each log line with "[<datetime>] " and joins lines with a newline.
_LOG_LINE_OVERHEAD = 32


class LogBudget:
    """Lines for the NodeRun log output, each cut to MAX_LOG_LINE_BYTES and all together kept
    under `max_bytes`. Room for one last line (the failure) is always kept; lines beyond the
    budget are dropped, with one line saying so."""

    def __init__(self, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.dropped = 0

    def admit(self, line: str, *, final: bool = False) -> str | None:
        """The line to log (cut if long), or None when it is dropped to stay in budget."""
        line = truncate(line, MAX_LOG_LINE_BYTES)
        cost = len(line.encode()) + _LOG_LINE_OVERHEAD
        # Kept back for the final line and the note about dropped lines.
        reserve = 0 if final else 2 * (MAX_LOG_LINE_BYTES + _LOG_LINE_OVERHEAD)
        if self.used + cost > self.max_bytes - reserve:
            self.dropped += 1
            if self.dropped > 1:
                return None
            line = f"…[further log lines dropped to keep this log under {self.max_bytes:,} bytes]"
            cost = len(line.encode()) + _LOG_LINE_OVERHEAD
        self.used += cost
        return line
