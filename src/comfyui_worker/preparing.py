"""What a job hands `Executor.run` besides its workflow: work to do before it takes a slot,
and how its workflow becomes the prompt it submits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .comfyui.models import PromptTag

Prepare = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""Makes the prompt to submit from the validated workflow (see `Executor.run`)."""

BeforeSlot = Callable[[], Awaitable[None]]
"""What a job needs done before it takes an in-flight slot (see `Executor.run`)."""


class Submittable:
    """A job's workflow, the prompt `prepare` makes of it the first time it is needed, and the
    tag that prompt carries (see `Executor.run`)."""

    def __init__(
        self, workflow: dict[str, Any], prepare: Prepare | None, tag: PromptTag | None = None
    ) -> None:
        self.workflow = workflow
        self.tag = tag
        self._prepare = prepare
        self._prompt: dict[str, Any] | None = workflow if prepare is None else None

    async def prompt(self) -> dict[str, Any]:
        if self._prompt is None:
            assert self._prepare is not None
            self._prompt = await self._prepare(self.workflow)
        return self._prompt
