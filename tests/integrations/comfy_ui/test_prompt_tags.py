"""The prompt tag against the mock ComfyUI: a prompt under a job's prompt_id is attached to or
reused only when it carries that job's tag; anything else is left alone and never delivered."""

from __future__ import annotations

import asyncio

import pytest
from mock_server_helpers import Comfy, save_prompt

from comfyui_mock.handle import MockHandle
from comfyui_worker.comfyui.models import PromptTag
from comfyui_worker.exceptions import PromptConflictError
from mock_settings import executor_for

PID = "22222222-3333-4444-5555-666666666666"
OURS = PromptTag(job="default/wf-2/0-1", digest="b" * 64)
THEIRS = PromptTag(job="default/wf-1/0-1", digest="a" * 64)


async def test_a_tag_travels_in_the_queue_item_and_the_history_entry(
    comfyui_mock: MockHandle, comfy: Comfy
) -> None:
    async with executor_for(comfyui_mock) as executor:
        result = await executor.run(save_prompt("tags/ours"), prompt_id=PID, tag=OURS)
        entry = await executor.client.history(PID)
    assert result.reused is False
    assert entry is not None and entry.tag == OURS
    raw = await comfy.history(PID)
    assert raw[PID]["prompt"][3]["comfyui_worker"] == {"job": OURS.job, "digest": OURS.digest}


@pytest.mark.parametrize("theirs", [THEIRS, None], ids=["other-job", "untagged"])
async def test_a_finished_prompt_of_another_job_is_not_reused(
    comfyui_mock: MockHandle, comfy: Comfy, theirs: PromptTag | None
) -> None:
    extra = {"extra_data": theirs.as_extra_data()} if theirs else {}
    await comfy.submit_ok(save_prompt("tags/theirs", color=9), prompt_id=PID, **extra)
    await comfy.wait_history(PID)
    async with executor_for(comfyui_mock) as executor:
        with pytest.raises(PromptConflictError) as caught:
            await executor.run(save_prompt("tags/ours"), prompt_id=PID, tag=OURS)
    assert caught.value.theirs == (theirs.job if theirs else None)
    assert caught.value.ours == OURS.job and PID in str(caught.value)
    # Their entry stays as it was; ours never ran.
    assert comfyui_mock.executions(PID) == 1
    assert comfyui_mock.request_count("/prompt", "POST") == 1


async def test_a_running_prompt_of_another_job_is_neither_attached_to_nor_interrupted(
    comfyui_mock: MockHandle, comfy: Comfy
) -> None:
    comfyui_mock.set_job_delay(1.0)
    await comfy.submit_ok(
        save_prompt("tags/running"), prompt_id=PID, extra_data=THEIRS.as_extra_data()
    )
    async with executor_for(comfyui_mock) as executor:
        with pytest.raises(PromptConflictError):
            await executor.run(save_prompt("tags/ours"), prompt_id=PID, tag=OURS)
    entry = await comfy.wait_history(PID)
    assert entry["status"]["status_str"] == "success"
    assert comfyui_mock.request_count("/interrupt", "POST") == 0


async def test_an_earlier_attempt_with_the_same_tag_is_attached_to(
    comfyui_mock: MockHandle,
) -> None:
    comfyui_mock.set_job_delay(0.5)
    async with executor_for(comfyui_mock) as first, executor_for(comfyui_mock) as second:
        running = asyncio.create_task(first.run(save_prompt("tags/a"), prompt_id=PID, tag=OURS))
        async with asyncio.timeout(5):
            while comfyui_mock.request_count("/prompt", "POST") < 1:
                await asyncio.sleep(0.01)
        attached = await second.run(save_prompt("tags/a"), prompt_id=PID, tag=OURS)
        assert (await running).outputs == attached.outputs
    assert attached.reused is True and comfyui_mock.executions(PID) == 1
