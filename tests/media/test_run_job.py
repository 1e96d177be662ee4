"""`run_job` end to end against the mock ComfyUI and moto's S3: inputs in, outputs out."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import JobStatus, OutputMode
from comfyui_worker.exceptions import (
    InvalidInputError,
    InvalidJobError,
    OutputTooLargeError,
    UnknownTemplateError,
)
from comfyui_worker.execution import Executor, JobResult
from comfyui_worker.job import InputSource, parse_job
from comfyui_worker.media.delivery import OutputRequest
from comfyui_worker.outputs import OutputFile
from comfyui_worker.runner import Media, run_job, run_workflow
from comfyui_worker.settings import Settings
from http_files import FileServer
from mock_settings import settings_for
from s3_server import S3

PNG = b"\x89PNG\r\n\x1a\n" + b"photo-bytes" * 100


def workflow(image: str = "photo.png") -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "job"}},
    }


@dataclass
class Stack:
    settings: Settings
    executor: Executor
    media: Media

    async def run(self, job: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return await run_job(parse_job(job), executor=self.executor, media=self.media, **kwargs)


@pytest.fixture
async def make_stack(comfyui_mock: MockHandle) -> AsyncIterator[Any]:
    made: list[Stack] = []

    def make(**overrides: Any) -> Stack:
        settings = settings_for(comfyui_mock, **{"input_allow_private_urls": True, **overrides})
        executor = Executor(settings)
        stack = Stack(settings, executor, Media(settings, executor.client))
        made.append(stack)
        return stack

    yield make
    for stack in made:
        await stack.media.aclose()
        await stack.executor.aclose()


def b64(data: bytes) -> dict[str, str]:
    return {"base64": base64.b64encode(data).decode()}


async def test_store_mode_uploads_outputs_under_deterministic_keys(
    make_stack: Any, s3: S3, comfyui_mock: MockHandle
) -> None:
    stack = make_stack(output_store=f"s3://{s3.bucket}/renders")
    pid = str(uuid.uuid4())
    job = {
        "workflow": workflow(),
        "inputs": {"photo.png": {"base64": "data:image/png;base64," + b64(PNG)["base64"]}},
        "output": {"mode": "store", "presign_seconds": 600},
    }
    result = await stack.run(job, prompt_id=pid)
    (entry,) = result["files"]
    key = f"renders/{pid}/3/{entry['filename']}"
    data = Path(entry["path"]).read_bytes()
    assert entry["uri"] == f"s3://{s3.bucket}/{key}" and result["outputs"] == [entry["uri"]]
    assert s3.get(key) == data
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
    assert (entry["kind"], entry["mime"]) == ("image", "image/jpeg")
    async with httpx.AsyncClient() as http:
        assert (await http.get(entry["url"])).content == data
    # The input went up under a name unique to the job, and the node was pointed at it.
    uploaded = result["inputs"]["photo.png"]
    assert uploaded["uploaded"] == f"{pid}-photo.png" and uploaded["nodes"] == ["1"]
    assert (comfyui_mock.input_dir / uploaded["uploaded"]).read_bytes() == PNG
    assert uploaded["sha256"] == hashlib.sha256(PNG).hexdigest()

    # A retry of the same TaskRun (same prompt id) reuses the prompt and overwrites the keys.
    again = await stack.run(job, prompt_id=pid)
    assert again["reused"] is True and again["files"][0]["uri"] == entry["uri"]
    assert s3.keys("renders/") == [key]
    assert comfyui_mock.executions(pid) == 1


async def test_one_nodes_outputs_of_one_name_get_keys_of_their_own(
    make_stack: Any, s3: S3, tmp_path: Path
) -> None:
    """A custom node may save one name in two subfolders (or in output and temp): each file
    keeps its own object instead of the second replacing the first under one key."""
    stack = make_stack(output_store=f"s3://{s3.bucket}/r")
    files = []
    for folder, kind in (("a", "output"), ("b", "output"), ("", "temp")):
        path = tmp_path / kind / folder / "x.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PNG + f"{kind}/{folder}".encode())
        files.append(OutputFile("9", "images", "x.png", folder, kind, str(path)))
    files.append(OutputFile("8", "images", "y.png", "", "output", str(tmp_path / "x.png")))
    Path(files[-1].path).write_bytes(PNG)
    result = JobResult(prompt_id="p", status=JobStatus.SUCCESS, files=files)
    out = await stack.media.delivery.deliver(result, OutputRequest(OutputMode.STORE))
    assert [f["uri"] for f in out["files"]] == [
        f"s3://{s3.bucket}/r/p/9/output/a/x.png",
        f"s3://{s3.bucket}/r/p/9/output/b/x.png",
        f"s3://{s3.bucket}/r/p/9/temp/x.png",
        f"s3://{s3.bucket}/r/p/8/y.png",  # no other file shares its key: the plain one
    ]
    for entry, file in zip(out["files"], files, strict=True):
        stored = s3.get(entry["uri"].split("/", 3)[3])
        assert stored == Path(file.path).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == entry["sha256"]


async def test_two_jobs_with_the_same_input_name_see_their_own_bytes(
    make_stack: Any, comfyui_mock: MockHandle
) -> None:
    stack = make_stack()
    comfyui_mock.set_job_delay(0.2)
    a, b = PNG + b"A", PNG + b"B"
    results = await asyncio.gather(
        stack.run({"workflow": workflow(), "inputs": {"photo.png": b64(a)}}),
        stack.run({"workflow": workflow(), "inputs": {"photo.png": b64(b)}}),
    )
    names = [r["inputs"]["photo.png"]["uploaded"] for r in results]
    assert names[0] != names[1]
    assert [(comfyui_mock.input_dir / n).read_bytes() for n in names] == [a, b]
    for result, name in zip(results, names, strict=True):
        entry = await _history_prompt(comfyui_mock, result["prompt_id"])
        assert entry["1"]["inputs"]["image"] == name


async def test_inputs_whose_names_reduce_alike_keep_their_own_bytes(
    make_stack: Any, comfyui_mock: MockHandle
) -> None:
    names = ("a/photo.png", "b/photo.png", "photo 1.png", "photo_1.png")
    wf = {
        str(i): {"class_type": "LoadImage", "inputs": {"image": name}}
        for i, name in enumerate(names, start=1)
    }
    wf["9"] = {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "j"}}
    data = {name: PNG + name.encode() for name in names}
    result = await make_stack().run(
        {"workflow": wf, "inputs": {name: b64(data[name]) for name in names}}
    )
    uploaded = {name: result["inputs"][name]["uploaded"] for name in names}
    assert len(set(uploaded.values())) == len(names)
    for name in names:
        assert (comfyui_mock.input_dir / uploaded[name]).read_bytes() == data[name], name
    prompt = await _history_prompt(comfyui_mock, result["prompt_id"])
    assert {prompt[str(i)]["inputs"]["image"] for i in range(1, 5)} == set(uploaded.values())


async def _history_prompt(mock: MockHandle, prompt_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=mock.url) as http:
        history = (await http.get(f"/history/{prompt_id}")).json()
    prompt: dict[str, Any] = history[prompt_id]["prompt"][2]
    return prompt


async def test_url_input_from_a_loopback_server(
    make_stack: Any, file_server: FileServer, comfyui_mock: MockHandle
) -> None:
    file_server.files["m.png"] = PNG
    stack = make_stack()
    result = await stack.run(
        {
            "workflow": workflow("mask.png"),
            "inputs": {"mask.png": {"url": file_server.file_url("m.png")}},
        }
    )
    name = result["inputs"]["mask.png"]["uploaded"]
    assert (comfyui_mock.input_dir / name).read_bytes() == PNG

    refusing = make_stack(input_allow_private_urls=False)
    with pytest.raises(InvalidInputError) as err:
        await refusing.run(
            {
                "workflow": workflow("mask.png"),
                "inputs": {"mask.png": {"url": file_server.file_url("m.png")}},
            }
        )
    assert err.value.input_name == "mask.png" and err.value.rule == "private-address"


async def test_store_uri_input(
    make_stack: Any, s3: S3, comfyui_mock: MockHandle, tmp_path: Path
) -> None:
    import obstore

    await obstore.put_async(s3.store(), "in/clip.png", PNG)
    job = {
        "workflow": workflow(),
        "inputs": {"photo.png": {"uri": f"s3://{s3.bucket}/in/clip.png"}},
    }
    # The output store's bucket is read by default; its endpoint (moto on loopback) is the
    # deployment's own, so private addresses being refused to input URLs does not apply.
    for stack in (
        make_stack(output_store=f"s3://{s3.bucket}/out", input_allow_private_urls=False),
        make_stack(input_stores=f"s3://{s3.bucket}/in"),
    ):
        result = await stack.run(job)
        uploaded = result["inputs"]["photo.png"]["uploaded"]
        assert (comfyui_mock.input_dir / uploaded).read_bytes() == PNG
    with pytest.raises(InvalidInputError) as err:
        await make_stack().run(job)  # no store configured: none is read
    assert err.value.rule == "uri-store" and err.value.input_name == "photo.png"


@pytest.mark.parametrize(
    ("inputs", "rule", "says"),
    [
        ({"photo.png": {"base64": "not base64!"}}, "base64", "is not valid base64"),
        ({"photo.png": {"base64": ""}}, "empty", "is empty"),
        ({"other.png": b64(PNG)}, "unreferenced", "no node of the workflow"),
        ({"photo.png": {"url": "ftp://example.com/x.png"}}, "url-scheme", "not allowed"),
        # The worker's own files: a mounted secret, .env, a service-account token.
        ({"photo.png": {"uri": "file://localhost/etc/passwd"}}, "uri-scheme", "not an object"),
        ({"photo.png": {"uri": "file:///etc/passwd"}}, "uri-scheme", "not an object store"),
        ({"photo.png": {"uri": "https://127.0.0.1:9/b/x.png"}}, "uri-scheme", "goes in 'url'"),
        ({"photo.png": {"uri": "s3://any-bucket/x.png"}}, "uri-store", "not in a store"),
        ({"photo.png": b64(b"x" * 2000)}, "max-bytes", "COMFYUI_MAX_INPUT_BYTES"),
    ],
)
async def test_bad_inputs_name_the_input_and_the_rule(
    make_stack: Any, comfyui_mock: MockHandle, inputs: dict[str, Any], rule: str, says: str
) -> None:
    stack = make_stack(max_input_bytes=1500)
    with pytest.raises(InvalidInputError) as err:
        await stack.run({"workflow": workflow(), "inputs": inputs})
    assert err.value.rule == rule and says in str(err.value)
    assert err.value.input_name in str(err.value)
    assert comfyui_mock.request_count("/prompt", "POST") == 0  # nothing ran


async def test_base64_mode_inlines_small_outputs_and_refuses_large_ones(
    make_stack: Any,
) -> None:
    stack = make_stack(max_inline_bytes=200_000)
    result = await stack.run(
        {"workflow": workflow(), "inputs": {"photo.png": b64(PNG)}, "output": {"mode": "base64"}}
    )
    (entry,) = result["files"]
    data = Path(entry["path"]).read_bytes()
    assert base64.b64decode(entry["base64"]) == data
    assert result["outputs"] == [f"data:image/jpeg;base64,{entry['base64']}"]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()

    small = make_stack(max_inline_bytes=1000)
    with pytest.raises(OutputTooLargeError) as err:
        await small.run(
            {
                "workflow": workflow(),
                "inputs": {"photo.png": b64(PNG)},
                "output": {"mode": "base64"},
            }
        )
    assert "COMFYUI_MAX_INLINE_BYTES (1000)" in str(err.value) and "'store'" in str(err.value)


async def test_path_mode_manifest(make_stack: Any) -> None:
    result = await make_stack().run({"workflow": workflow(), "inputs": {"photo.png": b64(PNG)}})
    (entry,) = result["files"]
    data = Path(entry["path"]).read_bytes()
    assert result["outputs"] == [entry["path"]]
    assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert "uri" not in entry and "base64" not in entry


async def test_store_mode_needs_a_store(make_stack: Any) -> None:
    with pytest.raises(InvalidJobError) as err:
        await make_stack().run({"workflow": workflow(), "output": {"mode": "store"}})
    assert "COMFYUI_OUTPUT_STORE is not set" in str(err.value)
    with pytest.raises(InvalidJobError) as presign:
        await make_stack().run({"workflow": workflow(), "output": {"presign_seconds": 60}})
    assert "only applies to output mode 'store'" in str(presign.value)


async def test_cleanup_removes_inputs_and_stored_outputs(
    make_stack: Any, s3: S3, comfyui_mock: MockHandle
) -> None:
    stack = make_stack(output_store=f"s3://{s3.bucket}", cleanup="all")
    job = {"workflow": workflow(), "inputs": {"photo.png": b64(PNG)}, "output": {"mode": "store"}}
    pid = str(uuid.uuid4())
    result = await stack.run(job, prompt_id=pid)
    assert not (comfyui_mock.input_dir / result["inputs"]["photo.png"]["uploaded"]).exists()
    (entry,) = result["files"]
    assert not Path(entry["path"]).exists()
    stored = s3.get(entry["uri"].split("/", 3)[3])
    assert hashlib.sha256(stored).hexdigest() == entry["sha256"]
    # A retry of the TaskRun (its report was lost): the files are gone, so the prompt runs
    # again and its outputs overwrite the same keys.
    again = await stack.run(job, prompt_id=pid)
    assert again["files"][0]["uri"] == entry["uri"]
    assert s3.keys() == [entry["uri"].split("/", 3)[3]]


@dataclass
class Bound:
    workflow: dict[str, Any]
    params: dict[str, Any]
    inputs: dict[str, InputSource]


class Binder:
    async def bind(self, name: str, params: dict[str, Any], *, key: str | None = None) -> Bound:
        if name != "invert":
            raise UnknownTemplateError(f"no template {name!r}", template=name)
        source = InputSource(base64=b64(PNG)["base64"])
        return Bound(workflow(), {**params, "seed": 7, "key": key}, {"photo.png": source})


async def test_templates_plug_in_through_the_binder(
    make_stack: Any, comfyui_mock: MockHandle
) -> None:
    stack = make_stack()
    job = {"template": "invert", "params": {"strength": 1}}
    with pytest.raises(UnknownTemplateError) as err:
        await stack.run(job)
    assert "templates are not configured" in str(err.value) and "COMFYUI_TEMPLATES_DIR" in str(
        err.value
    )
    result = await stack.run(job, templates=Binder(), prompt_id="p-1")
    assert result["params"] == {"strength": 1, "seed": 7, "key": "p-1"}
    assert (comfyui_mock.input_dir / result["inputs"]["photo.png"]["uploaded"]).read_bytes() == PNG
    with pytest.raises(InvalidInputError) as dup:
        await stack.run({**job, "inputs": {"photo.png": b64(PNG)}}, templates=Binder())
    assert dup.value.rule == "duplicate"


async def test_execute_workflow_applies_the_default_mode(make_stack: Any, s3: S3) -> None:
    stack = make_stack(output_store=f"s3://{s3.bucket}/d", output_mode="store")
    wf = workflow()
    wf["1"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
    }
    result = await run_workflow(
        wf, executor=stack.executor, media=stack.media, prompt_id=str(uuid.uuid4())
    )
    (entry,) = result["files"]
    assert result["outputs"] == [entry["uri"]] and entry["uri"].startswith(f"s3://{s3.bucket}/d/")


async def test_a_template_job_with_an_image_parameter(
    make_stack: Any, comfyui_mock: MockHandle
) -> None:
    from comfyui_worker.templates import TemplateStore

    stack = make_stack()
    examples = Path(__file__).resolve().parents[2] / "examples" / "templates"
    store = TemplateStore(examples, object_info=stack.executor.client.object_info)
    job = {"template": "invert", "params": {"photo": b64(PNG), "blur": 3}}
    result = await stack.run(job, templates=store, prompt_id=str(uuid.uuid4()))
    assert result["status"] == "success" and result["params"]["blur"] == 3
    (uploaded,) = result["inputs"].values()
    assert (comfyui_mock.input_dir / uploaded["uploaded"]).read_bytes() == PNG
    prompt = await _history_prompt(comfyui_mock, result["prompt_id"])
    assert prompt["1"]["inputs"]["image"] == uploaded["uploaded"]


async def test_a_retry_that_reuses_its_prompt_fetches_no_input(
    make_stack: Any, file_server: FileServer, comfyui_mock: MockHandle
) -> None:
    """A retry after the prompt finished must not need the inputs again: a presigned input URL
    has often expired by then, and its 404 would fail a job whose work is already done."""
    file_server.files["p.png"] = PNG
    stack = make_stack()
    job = {"workflow": workflow(), "inputs": {"photo.png": {"url": file_server.file_url("p.png")}}}
    pid = str(uuid.uuid4())
    first = await stack.run(job, prompt_id=pid)
    assert first["reused"] is False and file_server.requests == ["/files/p.png"]

    del file_server.files["p.png"]  # the URL has expired
    again = await stack.run(job, prompt_id=pid)
    assert again["reused"] is True and again["outputs"] == first["outputs"]
    assert "inputs" not in again  # nothing was uploaded by this attempt
    assert file_server.requests == ["/files/p.png"]
    assert comfyui_mock.executions(pid) == 1


async def test_a_retry_that_attaches_to_its_running_prompt_fetches_no_input(
    make_stack: Any, file_server: FileServer, comfyui_mock: MockHandle
) -> None:
    file_server.files["p.png"] = PNG
    stack = make_stack()
    comfyui_mock.set_job_delay(1.0)
    job = {"workflow": workflow(), "inputs": {"photo.png": {"url": file_server.file_url("p.png")}}}
    pid = str(uuid.uuid4())
    await _cancel_while_running(stack, job, pid, comfyui_mock)

    del file_server.files["p.png"]
    again = await stack.run(job, prompt_id=pid)
    assert again["reused"] is True and len(again["outputs"]) == 1
    assert file_server.requests == ["/files/p.png"]
    assert comfyui_mock.executions(pid) == 1


async def test_a_retry_that_attaches_removes_the_inputs_the_earlier_attempt_uploaded(
    make_stack: Any, comfyui_mock: MockHandle
) -> None:
    stack = make_stack(cleanup="inputs")
    comfyui_mock.set_job_delay(1.0)
    job = {"workflow": workflow(), "inputs": {"photo.png": b64(PNG)}}
    pid = str(uuid.uuid4())
    await _cancel_while_running(stack, job, pid, comfyui_mock)
    uploaded = comfyui_mock.input_dir / f"{pid}-photo.png"
    assert uploaded.read_bytes() == PNG  # kept while the prompt may still run

    again = await stack.run(job, prompt_id=pid)
    assert again["reused"] is True and comfyui_mock.executions(pid) == 1
    assert not uploaded.exists()


async def test_inputs_uploaded_before_a_bad_one_are_removed(
    make_stack: Any, comfyui_mock: MockHandle
) -> None:
    stack = make_stack(cleanup="inputs")
    wf = workflow("a.png")
    wf["4"] = {"class_type": "LoadImage", "inputs": {"image": "b.png"}}
    inputs = {"a.png": b64(PNG), "b.png": {"url": "ftp://example.com/b.png"}}
    pid = str(uuid.uuid4())
    with pytest.raises(InvalidInputError) as err:
        await stack.run({"workflow": wf, "inputs": inputs}, prompt_id=pid)
    assert err.value.input_name == "b.png" and err.value.rule == "url-scheme"
    assert comfyui_mock.executions(pid) == 0
    assert not (comfyui_mock.input_dir / f"{pid}-a.png").exists()


async def test_downloads_are_removed_after_the_upload_and_after_an_error(
    make_stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stack = make_stack()
    await stack.run({"workflow": workflow(), "inputs": {"photo.png": b64(PNG)}})
    bad = {"photo.png": {"url": "ftp://example.com/b.png"}}
    with pytest.raises(InvalidInputError):
        await stack.run({"workflow": workflow(), "inputs": bad})
    assert list(tmp_path.iterdir()) == []


async def _cancel_while_running(
    stack: Stack, job: dict[str, Any], pid: str, mock: MockHandle
) -> None:
    """A first attempt cancelled mid-run (its worker went away); the prompt keeps running."""
    first = asyncio.create_task(stack.run(job, prompt_id=pid))
    async with asyncio.timeout(10):
        while "running" not in await _queue_position(mock, pid):
            await asyncio.sleep(0.02)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


async def _queue_position(mock: MockHandle, prompt_id: str) -> str:
    async with httpx.AsyncClient(base_url=mock.url) as http:
        queue = (await http.get("/queue")).json()
    running = [item[1] for item in queue["queue_running"]]
    pending = [item[1] for item in queue["queue_pending"]]
    return "running" if prompt_id in running else "pending" if prompt_id in pending else ""
