"""The store: hot reload (add, edit, break, fix) without a restart, ComfyUI's own choices from
the mock's /object_info, and the named errors a task for a template gets."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from comfyui_mock.handle import MockHandle
from comfyui_worker.comfyui.client import ComfyUIClient
from comfyui_worker.exceptions import (
    BrokenTemplateError,
    InvalidParamsError,
    TemplateError,
    UnknownTemplateError,
)
from comfyui_worker.lh.errors import business_name
from comfyui_worker.templates.store import TemplateStore
from template_dirs import copy_examples, write

EXTRA = """
tiny:
  workflow_file: solid.json
  parameters: [caption]
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_examples(tmp_path / "templates")


async def test_unchanged_files_are_not_read_again(root: Path) -> None:
    store = TemplateStore(root)
    first = await store.catalogue()
    assert await store.catalogue() is first
    assert sorted(first.templates) == ["animate", "invert", "solid"]


async def test_add_edit_break_and_fix_without_a_restart(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = TemplateStore(root)
    with pytest.raises(UnknownTemplateError, match="available: animate, invert, solid"):
        await store.bind("tiny", {})
    manifest = root / "workflows.yaml"
    original = manifest.read_text()

    write(manifest, original + EXTRA)  # add
    bound = await store.bind("tiny", {"caption": "one"})
    assert bound.params == {"caption": "one"}

    write(manifest, original + EXTRA.replace("[caption]", "[caption, width]"))  # edit
    assert (await store.bind("tiny", {"caption": "x"})).params["width"] == 512

    graph = (root / "solid.json").read_text()
    write(root / "solid.json", graph.replace('"Caption"', '"Label"'))  # break one workflow
    with caplog.at_level(logging.WARNING), pytest.raises(BrokenTemplateError) as caught:
        await store.bind("tiny", {"caption": "x"})
    assert caught.value.problems[0].parameter == "caption"
    assert "no node has the id or _meta.title 'Caption'" in str(caught.value)
    assert "template 'tiny' disabled" in caplog.text
    assert (await store.bind("animate", {})).params["width"] == 256  # the others keep working

    write(root / "solid.json", graph)  # fix
    assert (await store.bind("tiny", {"caption": "back"})).params["caption"] == "back"


def torn(text: str, at: str) -> str:
    """`text` cut short inside the flow collection before the last `at`: not YAML."""
    return text[: text.rindex(at) + 4]


async def test_a_manifest_being_rewritten_keeps_the_last_complete_read(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = TemplateStore(root)
    assert (await store.bind("animate", {})).params["width"] == 256
    manifest, base = root / "workflows.yaml", root / "base.yaml"
    full, shared = manifest.read_text() + EXTRA, base.read_text()
    # Cut mid-entry, then truncated to nothing, then the shared definitions cut too.
    for workflows, definitions in ((torn(full, "[caption]"), shared), ("", shared), (full, "")):
        write(manifest, workflows)
        write(base, definitions)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert (await store.bind("animate", {})).params["width"] == 256
        assert "serving the templates of its last complete read (animate, invert, solid)" in (
            caplog.text
        )
        # A template this very edit adds is not known yet: retried, not refused.
        with pytest.raises(TemplateError) as caught:
            await store.bind("tiny", {"caption": "new"})
        assert business_name(caught.value) is None, caught.value
        assert caught.value.details()["rule"] == "unreadable"
        assert "cannot be read as a whole now" in str(caught.value)
        assert "a later attempt reads it again" in str(caught.value)
    assert "base.yaml is empty, and had content when last read" in str(caught.value)
    write(base, shared)
    assert (await store.bind("tiny", {"caption": "new"})).params == {"caption": "new"}


async def test_a_manifest_unreadable_from_the_start_fails_lookups_retryably(root: Path) -> None:
    manifest = root / "workflows.yaml"
    full = manifest.read_text()
    write(manifest, torn(full, "blur_radius"))
    store = TemplateStore(root)
    with pytest.raises(TemplateError) as caught:
        await store.bind("animate", {})
    assert business_name(caught.value) is None, caught.value
    assert "workflows.yaml is not valid YAML" in str(caught.value)
    write(manifest, full)
    assert (await store.bind("animate", {})).params["width"] == 256
    with pytest.raises(UnknownTemplateError):
        await store.bind("nope", {})


async def test_comfyui_choices_come_from_object_info(root: Path, comfyui_mock: MockHandle) -> None:
    async with ComfyUIClient(comfyui_mock.url, timeout=5) as client:
        store = TemplateStore(root, object_info=client.object_info)
        bound = await store.bind("solid", {"caption": "c", "method": "lanczos"})
        assert bound.workflow["2"]["inputs"]["upscale_method"] == "lanczos"
        with pytest.raises(InvalidParamsError) as caught:
            await store.bind("solid", {"caption": "c", "method": "bicubic-ish"})
        assert caught.value.problems[0].rule == "choices"
        assert '"nearest-exact", "bilinear", "area", "bicubic", "lanczos"' in str(caught.value)

        # A comfyui-choices parameter on an input that has no list in ComfyUI.
        write(
            root / "workflows.yaml",
            """
odd:
  workflow_file: solid.json
  parameters:
    - w: {type: enum, choices: comfyui, default: 64, targets: [{node: Canvas, input: width}]}
""",
        )
        with pytest.raises(BrokenTemplateError, match="has no list of choices for 'width'"):
            await store.bind("odd", {})


async def test_comfyui_choices_need_a_comfyui(root: Path) -> None:
    with pytest.raises(BrokenTemplateError, match="choices: comfyui needs a ComfyUI"):
        await TemplateStore(root).bind("solid", {"caption": "c"})


async def test_an_empty_or_missing_directory_has_no_templates(tmp_path: Path) -> None:
    store = TemplateStore(tmp_path / "nothing")
    with pytest.raises(UnknownTemplateError, match="available: none") as caught:
        await store.bind("solid", {})
    assert caught.value.details()["rule"] == "unknown-template"
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UnknownTemplateError, match=r"no workflows\.yaml"):
        await store.bind("solid", {})
