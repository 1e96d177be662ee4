"""`run_job` end to end against the mock ComfyUI and moto's S3: inputs in, outputs out."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from job_stack import PNG, Stack, b64, history_prompt, workflow

from comfyui_mock.handle import MockHandle
from comfyui_worker.constants import JobStatus, OutputMode
from comfyui_worker.exceptions import (
    InvalidInputError,
    InvalidJobError,
    OutputTooLargeError,
    UnknownTemplateError,
)
from comfyui_worker.execution import JobResult
from comfyui_worker.job import InputSource
from comfyui_worker.media.delivery import OutputRequest
from comfyui_worker.outputs import OutputFile
from comfyui_worker.runner import run_workflow
from http_files import FileServer
from s3_server import S3


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
        entry = await history_prompt(comfyui_mock, result["prompt_id"])
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
    prompt = await history_prompt(comfyui_mock, result["prompt_id"])
    assert {prompt[str(i)]["inputs"]["image"] for i in range(1, 5)} == set(uploaded.values())


async def test_a_long_input_name_is_uploaded_under_a_short_one(
    make_stack: Any, comfyui_mock: MockHandle
) -> None:
    """`<prompt_id>-<name>` past 255 bytes is a name no file system takes: ComfyUI would
    answer 500 to every attempt."""
    name = "p" * 226 + ".png"
    pid = str(uuid.uuid4())
    job = {"workflow": workflow(name), "inputs": {name: b64(PNG)}}
    result = await make_stack().run(job, prompt_id=pid)
    uploaded = result["inputs"][name]["uploaded"]
    assert len(uploaded.encode()) <= 255 and uploaded.startswith(f"{pid}-")
    assert uploaded.endswith(".png") and (comfyui_mock.input_dir / uploaded).read_bytes() == PNG
    assert (await history_prompt(comfyui_mock, pid))["1"]["inputs"]["image"] == uploaded


async def test_an_upload_comfyui_refuses_is_not_retried(
    make_stack: Any, comfyui_mock: MockHandle
) -> None:
    comfyui_mock.fail_http(count=5, path="/upload/image", status=400)
    with pytest.raises(InvalidInputError) as err:
        await make_stack().run({"workflow": workflow(), "inputs": {"photo.png": b64(PNG)}})
    assert err.value.rule == "upload-refused" and "HTTP 400" in str(err.value)
    assert comfyui_mock.request_count("/upload/image", "POST") == 1


async def test_only_file_inputs_that_name_an_input_are_rewritten(
    make_stack: Any, comfyui_mock: MockHandle
) -> None:
    """A free-text parameter that happens to equal an input's name (here the output
    prefix) is no reference to the input and keeps its value."""
    wf = workflow()
    wf["3"]["inputs"]["filename_prefix"] = "photo.png"
    pid = str(uuid.uuid4())
    result = await make_stack().run(
        {"workflow": wf, "inputs": {"photo.png": b64(PNG)}}, prompt_id=pid
    )
    ran = await history_prompt(comfyui_mock, pid)
    assert ran["1"]["inputs"]["image"] == f"{pid}-photo.png"
    assert ran["3"]["inputs"]["filename_prefix"] == "photo.png"
    assert result["inputs"]["photo.png"]["nodes"] == ["1"]
    assert Path(result["outputs"][0]).name.startswith("photo.png_")


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
    # A retry of the TaskRun (its report was lost): the files are gone, but their objects
    # are in the store, so nothing runs again and nothing flushes ComfyUI's cache.
    again = await stack.run(job, prompt_id=pid)
    assert again["files"][0]["uri"] == entry["uri"]
    assert again["files"][0]["sha256"] == entry["sha256"]
    assert s3.keys() == [entry["uri"].split("/", 3)[3]]
    assert comfyui_mock.executions(pid) == 1
    assert comfyui_mock.request_count("/free", "POST") == 0


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
    prompt = await history_prompt(comfyui_mock, result["prompt_id"])
    assert prompt["1"]["inputs"]["image"] == uploaded["uploaded"]


async def test_a_retry_that_reuses_its_prompt_survives_an_expired_input_url(
    make_stack: Any, file_server: FileServer, comfyui_mock: MockHandle
) -> None:
    """Inputs are fetched before the slot, so before the retry knows its prompt finished: a
    presigned input URL has often expired by then, and its 404 must not fail a job whose work
    is already done."""
    file_server.files["p.png"] = PNG
    stack = make_stack()
    job = {"workflow": workflow(), "inputs": {"photo.png": {"url": file_server.file_url("p.png")}}}
    pid = str(uuid.uuid4())
    first = await stack.run(job, prompt_id=pid)
    assert first["reused"] is False and file_server.requests == ["/files/p.png"]

    del file_server.files["p.png"]  # the URL has expired
    again = await stack.run(job, prompt_id=pid)
    assert again["reused"] is True and again["outputs"] == first["outputs"]
    assert "inputs" not in again  # the prompt ran on what the first attempt uploaded
    assert file_server.requests == ["/files/p.png"] * 2  # the retry tried, got a 404
    assert comfyui_mock.executions(pid) == 1


async def test_a_retry_that_attaches_to_its_running_prompt_survives_an_expired_input_url(
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
    assert file_server.requests == ["/files/p.png"] * 2
    assert comfyui_mock.executions(pid) == 1


async def test_an_input_url_that_fails_with_no_earlier_prompt_fails_at_once(
    make_stack: Any, file_server: FileServer, comfyui_mock: MockHandle
) -> None:
    job = {"workflow": workflow(), "inputs": {"photo.png": {"url": file_server.file_url("x")}}}
    with pytest.raises(InvalidInputError) as err:
        await make_stack().run(job, prompt_id=str(uuid.uuid4()))
    assert err.value.rule == "url-status" and "HTTP 404" in str(err.value)
    assert comfyui_mock.request_count("/prompt", "POST") == 0


async def test_a_retry_uploading_while_its_earlier_prompt_runs_leaves_the_file_alone(
    make_stack: Any, comfyui_mock: MockHandle
) -> None:
    """The retry uploads its inputs before it finds its earlier attempt's prompt running: the
    same bytes must not rewrite the file that prompt may be reading."""
    stack = make_stack()
    comfyui_mock.set_job_delay(1.0)
    job = {"workflow": workflow(), "inputs": {"photo.png": b64(PNG)}}
    pid = str(uuid.uuid4())
    await _cancel_while_running(stack, job, pid, comfyui_mock)
    uploaded = comfyui_mock.input_dir / f"{pid}-photo.png"
    before = uploaded.stat()
    again = await stack.run(job, prompt_id=pid)
    assert again["reused"] is True and comfyui_mock.executions(pid) == 1
    after = uploaded.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


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
