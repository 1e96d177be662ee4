"""What the `run_job` tests share: an Executor and Media against the mock ComfyUI, and jobs."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from comfyui_mock.handle import MockHandle
from comfyui_worker.execution import Executor
from comfyui_worker.job import parse_job
from comfyui_worker.runner import Media, run_job
from comfyui_worker.settings import Settings
from mock_settings import settings_for

PNG = b"\x89PNG\r\n\x1a\n" + b"photo-bytes" * 100


def workflow(image: str = "photo.png") -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "job"}},
    }


def generated(prefix: str = "gen", color: int = 3) -> dict[str, Any]:
    """A workflow without inputs: identical jobs are served from ComfyUI's cache."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def b64(data: bytes) -> dict[str, str]:
    return {"base64": base64.b64encode(data).decode()}


@dataclass
class Stack:
    settings: Settings
    executor: Executor
    media: Media

    async def run(self, job: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return await run_job(parse_job(job), executor=self.executor, media=self.media, **kwargs)


MakeStack = Callable[..., Stack]


async def stacks(mock: MockHandle) -> AsyncIterator[MakeStack]:
    """The body of the `make_stack` fixture: Stacks on `settings_for(mock, **overrides)`."""
    made: list[Stack] = []

    def make(**overrides: Any) -> Stack:
        settings = settings_for(mock, **{"input_allow_private_urls": True, **overrides})
        executor = Executor(settings)
        stack = Stack(settings, executor, Media(settings, executor.client))
        made.append(stack)
        return stack

    yield make
    for stack in made:
        await stack.media.aclose()
        await stack.executor.aclose()


async def history_prompt(mock: MockHandle, prompt_id: str) -> dict[str, Any]:
    """The graph ComfyUI ran for `prompt_id`, from its history entry."""
    async with httpx.AsyncClient(base_url=mock.url) as http:
        history = (await http.get(f"/history/{prompt_id}")).json()
    prompt: dict[str, Any] = history[prompt_id]["prompt"][2]
    return prompt
