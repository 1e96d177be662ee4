"""Typed views of ComfyUI's JSON answers, parsed defensively.

ComfyUI's shapes are loose (tuples as lists, optional keys); every parser here raises
ProtocolError naming the endpoint when a body is not what ComfyUI returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import (
    MissingNodeError,
    NodeError,
    NodeInputError,
    PromptValidationError,
    ProtocolError,
)


@dataclass(frozen=True, slots=True)
class SubmitResult:
    prompt_id: str
    number: int | None
    # A 200 can still carry node_errors: those outputs will not run.
    node_errors: tuple[NodeError, ...] = ()
    # True when the POST's answer was lost but the prompt was found enqueued: its
    # node_errors are unknown here and have to be read from the history entry.
    answer_lost: bool = False


@dataclass(frozen=True, slots=True)
class Submission:
    """One enqueueing of a prompt: its id and the client_id it was submitted with.

    Every attempt of a task reuses the prompt_id, so the id alone cannot tell this
    submission's queue item or history entry from an earlier attempt's; the client_id,
    fresh per submission and recorded by ComfyUI in both, can.
    """

    prompt_id: str
    client_id: str | None

    def owns(self, recorded_client_id: str | None) -> bool:
        # None: a queue item or entry that does not say (ComfyUI always records it).
        return None in (self.client_id, recorded_client_id) or (
            recorded_client_id == self.client_id
        )


# The `extra_data` key our tag travels under; ComfyUI keeps unknown keys in both the queue
# item and the history entry.
TAG_KEY = "comfyui_worker"


@dataclass(frozen=True, slots=True)
class PromptTag:
    """Which job a prompt belongs to, carried in its `extra_data`: the job's identity and a
    digest of what the job was given. A prompt found under a job's prompt_id is that job's
    only if its tag is equal."""

    job: str
    digest: str

    def as_extra_data(self) -> dict[str, Any]:
        return {TAG_KEY: {"job": self.job, "digest": self.digest}}

    @classmethod
    def from_extra_data(cls, extra: dict[str, Any]) -> PromptTag | None:
        tag = _dict(extra.get(TAG_KEY))
        job, digest = tag.get("job"), tag.get("digest")
        if isinstance(job, str) and isinstance(digest, str):
            return cls(job=job, digest=digest)
        return None


@dataclass(frozen=True, slots=True)
class QueueState:
    running: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    # prompt_id -> the client_id it was submitted with (None when its extra_data has none).
    client_ids: dict[str, str | None] = field(default_factory=dict)
    # prompt_id -> the tag it was submitted with (None when it carries none).
    tags: dict[str, PromptTag | None] = field(default_factory=dict)

    def holds(self, submission: Submission) -> bool:
        """Whether this very submission is still queued or running."""
        return self.position(submission.prompt_id) is not None and submission.owns(
            self.client_ids.get(submission.prompt_id)
        )

    def position(self, prompt_id: str) -> str | None:
        """'running', 'pending' or None when the prompt is not in the queue."""
        if prompt_id in self.running:
            return "running"
        if prompt_id in self.pending:
            return "pending"
        return None

    def pending_position(self, prompt_id: str) -> int | None:
        """1 = the next to run after the running prompt; None when not pending."""
        return self.pending.index(prompt_id) + 1 if prompt_id in self.pending else None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One `/history/{id}` entry: written by ComfyUI only once the prompt has ended."""

    prompt_id: str
    status_str: str
    completed: bool
    messages: tuple[tuple[str, dict[str, Any]], ...] = ()
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # From the entry's prompt tuple: who submitted it, and the output nodes ComfyUI accepted
    # (those that passed validation); None when the entry does not say.
    client_id: str | None = None
    outputs_to_execute: tuple[str, ...] | None = None
    tag: PromptTag | None = None
    # The graph ComfyUI ran (as submitted, inputs renamed), None when the entry lacks it.
    prompt: dict[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_str == "success" and self.completed

    @property
    def interrupted(self) -> bool:
        return not self.succeeded and self.message("execution_interrupted") is not None

    def message(self, event: str) -> dict[str, Any] | None:
        for name, data in self.messages:
            if name == event:
                return data
        return None


def parse_submit(body: Any, *, sent_prompt_id: str) -> SubmitResult:
    if not isinstance(body, dict) or "prompt_id" not in body:
        raise ProtocolError(f"POST /prompt answered without a prompt_id: {_preview(body)}")
    prompt_id = str(body["prompt_id"])
    if prompt_id != sent_prompt_id:
        raise ProtocolError(
            f"POST /prompt answered prompt_id {prompt_id!r}, expected {sent_prompt_id!r}"
        )
    number = body.get("number")
    return SubmitResult(
        prompt_id=prompt_id,
        number=number if isinstance(number, int) else None,
        node_errors=parse_node_errors(body.get("node_errors")),
    )


def parse_node_errors(raw: Any) -> tuple[NodeError, ...]:
    if not isinstance(raw, dict):
        return ()
    result = []
    for node_id, info in raw.items():
        info = _dict(info)
        errors = []
        for err in info.get("errors") or []:
            if not isinstance(err, dict):
                continue
            extra = _dict(err.get("extra_info"))
            errors.append(
                NodeInputError(
                    type=str(err.get("type", "")),
                    message=str(err.get("message", "")),
                    details=str(err.get("details", "")),
                    input_name=_str_or_none(extra.get("input_name")),
                )
            )
        result.append(
            NodeError(
                node_id=str(node_id),
                class_type=str(info.get("class_type", "")),
                errors=tuple(errors),
                dependent_outputs=tuple(str(o) for o in info.get("dependent_outputs") or []),
            )
        )
    return tuple(result)


_MISSING_NODE = re.compile(r"node (?P<cls>.+?) does not exist")
_NODE_ID = re.compile(r"Node ID '#(?P<id>[^']*)'")


def parse_validation_error(body: Any) -> PromptValidationError:
    """Turn the 400 body of POST /prompt into a typed error."""
    if not isinstance(body, dict):
        return PromptValidationError(
            f"ComfyUI rejected the prompt: {_preview(body)}", error_type="unknown"
        )
    error = _dict(body.get("error"))
    error_type = str(error.get("type", "unknown"))
    message = str(error.get("message") or "ComfyUI rejected the prompt")
    details = str(error.get("details") or "")
    node_errors = parse_node_errors(body.get("node_errors"))
    missing = _MISSING_NODE.search(message)
    if error_type == "invalid_prompt" and missing:
        node = _NODE_ID.search(details)
        node_errors = node_errors or (
            NodeError(
                node_id=node.group("id") if node else "",
                class_type=missing.group("cls"),
                errors=(NodeInputError(type="missing_node", message=message, details=details),),
            ),
        )
        return MissingNodeError(
            f"{message} Install the custom node that provides it, or fix the class_type",
            error_type=error_type,
            error_details=details,
            node_errors=node_errors,
        )
    if details and not node_errors:
        message = f"{message}: {details}"
    return PromptValidationError(
        message, error_type=error_type, error_details=details, node_errors=node_errors
    )


def parse_queue(body: Any) -> QueueState:
    if not isinstance(body, dict) or not {"queue_running", "queue_pending"} <= body.keys():
        raise ProtocolError(f"GET /queue answered an unexpected body: {_preview(body)}")
    running, pending = _queue_items(body["queue_running"]), _queue_items(body["queue_pending"])
    items = {**pending, **running}
    return QueueState(
        running=tuple(running),
        pending=tuple(pending),
        client_ids={pid: _client_id(item) for pid, item in items.items()},
        tags={pid: _tag(item) for pid, item in items.items()},
    )


def _queue_items(items: Any) -> dict[str, list[Any]]:
    if not isinstance(items, list):
        raise ProtocolError(f"GET /queue: expected a list of items, got {_preview(items)}")
    # Item: [number, prompt_id, prompt, extra_data, outputs_to_execute]. ComfyUI does not sort
    # pending items; it runs the lowest number first, so sort to make the order the position.
    found = [item for item in items if isinstance(item, list) and len(item) > 1]
    found.sort(key=lambda item: item[0] if isinstance(item[0], int | float) else 0)
    return {str(item[1]): item for item in found}


def _extra_data(prompt_tuple: list[Any]) -> dict[str, Any]:
    return _dict(prompt_tuple[3]) if len(prompt_tuple) > 3 else {}


def _client_id(prompt_tuple: list[Any]) -> str | None:
    return _str_or_none(_extra_data(prompt_tuple).get("client_id"))


def _tag(prompt_tuple: list[Any]) -> PromptTag | None:
    return PromptTag.from_extra_data(_extra_data(prompt_tuple))


def parse_history(body: Any, prompt_id: str) -> HistoryEntry | None:
    """The entry for `prompt_id`, or None while ComfyUI has not written it (`{}`)."""
    if not isinstance(body, dict):
        raise ProtocolError(f"GET /history/{prompt_id} answered {_preview(body)}")
    raw = body.get(prompt_id)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ProtocolError(f"GET /history/{prompt_id}: entry is {_preview(raw)}")
    status = _dict(raw.get("status"))
    outputs = _dict(raw.get("outputs"))
    messages = tuple(
        (str(m[0]), m[1] if isinstance(m[1], dict) else {})
        for m in status.get("messages") or []
        if isinstance(m, list) and len(m) == 2
    )
    prompt = raw.get("prompt")
    prompt = prompt if isinstance(prompt, list) else []
    to_execute = prompt[4] if len(prompt) > 4 and isinstance(prompt[4], list) else None
    return HistoryEntry(
        prompt_id=prompt_id,
        client_id=_client_id(prompt),
        tag=_tag(prompt),
        outputs_to_execute=None if to_execute is None else tuple(str(o) for o in to_execute),
        prompt=prompt[2] if len(prompt) > 2 and isinstance(prompt[2], dict) else None,
        # Old servers wrote entries without status; an entry exists only once the run ended.
        status_str=str(status.get("status_str", "success")),
        completed=bool(status.get("completed", True)),
        messages=messages,
        outputs={str(k): v for k, v in outputs.items() if isinstance(v, dict)},
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _preview(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
