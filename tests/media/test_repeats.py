"""Repeats of a job whose outputs the worker stored and removed (COMFYUI_CLEANUP=outputs):
ComfyUI serves them from its cache pointing at the removed files, and the worker delivers the
stored objects again instead of dropping ComfyUI's cache and running the prompt twice
(issue #18, item 8)."""

from __future__ import annotations

import uuid
from pathlib import Path

import obstore
import pytest
from job_stack import MakeStack, generated

from comfyui_mock.handle import MockHandle
from comfyui_worker.exceptions import OutputStoreError
from comfyui_worker.lh.errors import business_name
from s3_server import S3

JOB = {"workflow": generated("repeat"), "output": {"mode": "store", "presign_seconds": 60}}


def key_of(uri: str) -> str:
    return uri.split("/", 3)[3]


async def test_a_repeat_of_a_job_whose_outputs_were_stored_and_removed_runs_nothing(
    make_stack: MakeStack, s3: S3, comfyui_mock: MockHandle
) -> None:
    stack = make_stack(output_store=f"s3://{s3.bucket}/r", cleanup="outputs")
    first = await stack.run(JOB, prompt_id=str(uuid.uuid4()))
    (a,) = first["files"]
    assert not Path(a["path"]).exists()

    pid = str(uuid.uuid4())  # another TaskRun of the same job
    again = await stack.run(JOB, prompt_id=pid)
    (b,) = again["files"]
    assert comfyui_mock.request_count("/free", "POST") == 0
    assert comfyui_mock.executions(pid) == 1  # the run ComfyUI served from its cache only
    assert b["uri"] == f"s3://{s3.bucket}/r/{pid}/2/{a['filename']}" == again["outputs"][0]
    assert s3.get(key_of(b["uri"])) == s3.get(key_of(a["uri"]))
    assert (b["size"], b["sha256"], b["mime"]) == (a["size"], a["sha256"], a["mime"])
    assert s3.content_type(key_of(b["uri"])) == "image/jpeg" and b["url"].startswith("http")

    # A retry of that TaskRun (its report was lost): the object is already at its key.
    retry = await stack.run(JOB, prompt_id=pid)
    assert retry["reused"] is True and retry["files"][0]["uri"] == b["uri"]
    assert comfyui_mock.executions(pid) == 1
    assert comfyui_mock.request_count("/free", "POST") == 0
    assert s3.keys("r/") == sorted([key_of(a["uri"]), key_of(b["uri"])])


async def test_a_stored_copy_that_is_gone_fails_retryably_and_the_retry_runs_again(
    make_stack: MakeStack, s3: S3, comfyui_mock: MockHandle
) -> None:
    stack = make_stack(output_store=f"s3://{s3.bucket}/r", cleanup="outputs")
    first = await stack.run(JOB, prompt_id=str(uuid.uuid4()))
    await obstore.delete_async(s3.store(), key_of(first["files"][0]["uri"]))
    pid = str(uuid.uuid4())
    with pytest.raises(OutputStoreError) as err:
        await stack.run(JOB, prompt_id=pid)
    assert business_name(err.value) is None  # retryable
    assert "its stored copy is gone too" in str(err.value)
    retry = await stack.run(JOB, prompt_id=pid)
    assert comfyui_mock.request_count("/free", "POST") == 1
    assert comfyui_mock.executions(pid) == 2  # the cached run, then the real one
    assert s3.get(key_of(retry["files"][0]["uri"]))


async def test_outputs_removed_by_someone_else_are_still_made_again(
    make_stack: MakeStack, s3: S3, comfyui_mock: MockHandle
) -> None:
    stack = make_stack(output_store=f"s3://{s3.bucket}/r")  # no cleanup: the worker keeps them
    first = await stack.run(JOB, prompt_id=str(uuid.uuid4()))
    Path(first["files"][0]["path"]).unlink()
    pid = str(uuid.uuid4())
    again = await stack.run(JOB, prompt_id=pid)
    assert comfyui_mock.request_count("/free", "POST") == 1
    assert comfyui_mock.executions(pid) == 2
    assert Path(again["files"][0]["path"]).is_file()


async def test_another_output_mode_runs_a_removed_output_again(
    make_stack: MakeStack, s3: S3, comfyui_mock: MockHandle
) -> None:
    """Path mode needs the file on disk: a store-mode job's removed output is made again."""
    stack = make_stack(output_store=f"s3://{s3.bucket}/r", cleanup="outputs")
    await stack.run(JOB, prompt_id=str(uuid.uuid4()))
    pid = str(uuid.uuid4())
    again = await stack.run({"workflow": JOB["workflow"]}, prompt_id=pid)
    assert Path(again["outputs"][0]).is_file()
    assert comfyui_mock.executions(pid) == 2
