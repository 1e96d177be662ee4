"""The prompt queue and the history, with ComfyUI's PromptQueue semantics.

Pending prompts sit in a heap ordered by (number, prompt_id) exactly like ComfyUI's tuples, so
`front` (a negative number) and client-chosen numbers run in the same order as on the real
server, and GET /queue shows the pending list in heap order (not sorted).
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
from dataclasses import dataclass
from typing import Any

MAX_HISTORY = 10000
# extra_data keys ComfyUI shows in /queue but strips before writing the history.
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


@dataclass
class QueueItem:
    number: int | float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]

    @property
    def client_id(self) -> Any:
        return self.extra_data.get("client_id")


class PromptQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[int | float, str, int, QueueItem]] = []
        self._seq = itertools.count()
        self.running: QueueItem | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.next_number = 0
        self._wakeup = asyncio.Event()

    def reset(self) -> None:
        self._heap.clear()
        self.running = None
        self.history.clear()
        self.next_number = 0

    @property
    def remaining(self) -> int:
        return len(self._heap) + (1 if self.running is not None else 0)

    def put(self, item: QueueItem) -> bool:
        """Enqueue; True when ComfyUI would have crashed comparing two equal (number, id) tuples.

        ComfyUI's heappush raises after the item is already in the heap, so the POST answers
        500 while the prompt still runs. The caller reproduces that answer.
        """
        clash = any(n == item.number and pid == item.prompt_id for n, pid, _, _ in self._heap)
        heapq.heappush(self._heap, (item.number, item.prompt_id, next(self._seq), item))
        self._wakeup.set()
        return clash

    async def get(self) -> QueueItem:
        while not self._heap:
            self._wakeup.clear()
            await self._wakeup.wait()
        item = heapq.heappop(self._heap)[3]
        self.running = item
        return item

    def task_done(self, item: QueueItem, result: dict[str, Any]) -> None:
        if self.running is item:
            self.running = None
        if len(self.history) > MAX_HISTORY:
            self.history.pop(next(iter(self.history)))
        extra = {k: v for k, v in item.extra_data.items() if k not in SENSITIVE_EXTRA_DATA_KEYS}
        prompt = [item.number, item.prompt_id, item.prompt, extra, item.outputs_to_execute]
        # Assigning an existing key keeps its old position: a reused prompt_id does not move
        # to the end of GET /history (captures/17).
        self.history[item.prompt_id] = {"prompt": copy.deepcopy(prompt), "outputs": {}, **result}

    def abandon_running(self) -> None:
        self.running = None

    def snapshot(self) -> dict[str, list[Any]]:
        running = [self.running.as_list()] if self.running is not None else []
        pending = [entry[3].as_list() for entry in self._heap]
        return copy.deepcopy({"queue_running": running, "queue_pending": pending})

    def delete_pending(self, prompt_id: Any) -> bool:
        for index, entry in enumerate(self._heap):
            if entry[1] == prompt_id:
                self._heap.pop(index)
                heapq.heapify(self._heap)
                return True
        return False

    def clear_pending(self) -> None:
        self._heap.clear()

    def history_page(self, max_items: int | None, offset: int) -> dict[str, Any]:
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: dict[str, Any] = {}
        for i, key in enumerate(self.history):
            if i >= offset:
                out[key] = self.history[key]
                if max_items is not None and len(out) >= max_items:
                    break
        return copy.deepcopy(out)

    def history_entry(self, prompt_id: str) -> dict[str, Any]:
        if prompt_id in self.history:
            return {prompt_id: copy.deepcopy(self.history[prompt_id])}
        return {}
