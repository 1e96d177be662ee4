"""What each node class of the catalogue does when the mock executes it.

Nothing is computed: images are described by their size and batch, and every node that saves
an image writes a copy of the fixture picture (assets/kernie_512x768.jpg). File names follow
ComfyUI's `{prefix}_{counter:05}_` pattern; the extension is the one of the bytes actually
written (.jpg for the picture), so /view serves a truthful Content-Type.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyui_mock import catalogue
from comfyui_mock.files import Dirs, resolve_annotated, save_target, write_new

# Saving thousands of copies of the picture proves nothing; keep a validated but huge
# batch_size from filling the disk.
MAX_SAVED_PER_NODE = 64


@dataclass(frozen=True)
class Value:
    """A node output as the mock sees it: a kind and just enough shape to look plausible."""

    kind: str
    width: int = 0
    height: int = 0
    batch: int = 1
    source: Path | None = None
    scalar: int | float | str | None = None

    def __str__(self) -> str:
        if self.scalar is not None:
            return str(self.scalar)
        if self.kind in ("IMAGE", "MASK", "VIDEO"):
            return f"{self.kind}(shape=[{self.batch}, {self.height}, {self.width}, 3])"
        if self.kind == "LATENT":
            return f"LATENT(shape=[{self.batch}, 4, {self.height // 8}, {self.width // 8}])"
        return f"{self.kind}({self.source.name if self.source else ''})"


@dataclass
class NodeResult:
    outputs: tuple[Value, ...] = ()
    ui: dict[str, Any] | None = None


@dataclass
class NodeContext:
    """What a node may touch while it runs."""

    node_id: str
    dirs: Dirs
    record_file: Callable[[Path], None]
    send_text: Callable[[str, str], None]
    _temp_prefix: str = field(default="")

    def temp_prefix(self) -> str:
        if not self._temp_prefix:
            suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
            self._temp_prefix = f"ComfyUI_temp_{suffix}"
        return self._temp_prefix


Behaviour = Callable[[NodeContext, dict[str, Any]], Awaitable[NodeResult]]


async def _save(
    ctx: NodeContext, prefix: str, base: Path, data: bytes, ext: str, count: int, size: Value
) -> list[dict[str, str]]:
    base_type = "temp" if base == ctx.dirs.temp else "output"

    def write() -> list[dict[str, str]]:
        target = save_target(prefix, base, size.width, size.height)
        items, counter = [], target.counter
        for _ in range(max(1, min(count, MAX_SAVED_PER_NODE))):
            name, counter = write_new(target.folder, target.filename, counter, ext, data)
            ctx.record_file(target.folder / name)
            items.append({"filename": name, "subfolder": target.subfolder, "type": base_type})
            counter += 1
        return items

    return await asyncio.to_thread(write)


def _picture() -> bytes:
    return catalogue.FIXTURE_IMAGE.read_bytes()


async def _save_images(ctx: NodeContext, images: Value, prefix: str, temp: bool) -> list[Any]:
    base = ctx.dirs.temp if temp else ctx.dirs.output
    return await _save(ctx, prefix, base, _picture(), ".jpg", images.batch, images)


async def empty_image(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    return NodeResult((Value("IMAGE", i["width"], i["height"], i["batch_size"]),))


async def load_image(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    path = resolve_annotated(i["image"], ctx.dirs)
    if path is None:
        raise FileNotFoundError(f"No such file or directory: '{i['image']}'")
    width, height = catalogue.FIXTURE_IMAGE_SIZE
    return NodeResult((Value("IMAGE", width, height, 1), Value("MASK", width, height, 1)))


async def pass_image(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    return NodeResult((i["image"],))


async def scale_image(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    image: Value = i["image"]
    scale = i["scale_by"]
    scaled = Value(
        "IMAGE",
        max(1, round(image.width * scale)),
        max(1, round(image.height * scale)),
        image.batch,
    )
    return NodeResult((scaled,))


async def image_size(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    image: Value = i["image"]
    ctx.send_text(
        ctx.node_id, f"width: {image.width}, height: {image.height}\n batch size: {image.batch}"
    )
    return NodeResult(
        (
            Value("INT", scalar=image.width),
            Value("INT", scalar=image.height),
            Value("INT", scalar=image.batch),
        )
    )


async def preview_any(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    source = i["source"]
    plain = isinstance(source, (Value, str, int, float, bool))
    text = str(source) if plain else json.dumps(source)
    return NodeResult(ui={"text": [text]})


async def concatenate(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    text = f"{i['string_a']}{i.get('delimiter', '')}{i['string_b']}"
    return NodeResult((Value("STRING", scalar=text),))


async def save_image(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    items = await _save_images(ctx, i["images"], i["filename_prefix"], temp=False)
    return NodeResult(ui={"images": items})


async def preview_image(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    items = await _save_images(ctx, i["images"], ctx.temp_prefix(), temp=True)
    return NodeResult(ui={"images": items})


async def save_animated(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    frames: Value = i.get("images") or i["video"]
    items = await _save(ctx, i["filename_prefix"], ctx.dirs.output, _picture(), ".jpg", 1, frames)
    return NodeResult(ui={"images": items, "animated": [True]})


async def create_video(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    images: Value = i["images"]
    return NodeResult((Value("VIDEO", images.width, images.height, images.batch),))


async def empty_latent(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    return NodeResult((Value("LATENT", i["width"], i["height"], i["batch_size"]),))


def _latent_file(latent: Value) -> bytes:
    """A small but well-formed safetensors file, like SaveLatent's `.latent`."""
    shape = [1, 4, 8, 8]
    payload = bytes(4 * 4 * 8 * 8)
    header = {
        "latent_tensor": {"dtype": "F32", "shape": shape, "data_offsets": [0, len(payload)]},
        "__metadata__": {
            "format": "comfyui-mock",
            "source_shape": f"{latent.batch}x4x{latent.height // 8}x{latent.width // 8}",
        },
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + payload


async def save_latent(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    latent: Value = i["samples"]
    data = _latent_file(latent)
    items = await _save(ctx, i["filename_prefix"], ctx.dirs.output, data, ".latent", 1, latent)
    return NodeResult(ui={"latents": items})


async def load_audio(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    path = resolve_annotated(i["audio"], ctx.dirs)
    if path is None:
        raise FileNotFoundError(f"No such file or directory: '{i['audio']}'")
    return NodeResult((Value("AUDIO", source=path),))


async def _save_audio(ctx: NodeContext, audio: Value, prefix: str, base: Path) -> list[Any]:
    assert audio.source is not None
    data = await asyncio.to_thread(audio.source.read_bytes)
    ext = audio.source.suffix.lower() or ".wav"
    return await _save(ctx, prefix, base, data, ext, 1, audio)


async def save_audio(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    items = await _save_audio(ctx, i["audio"], i["filename_prefix"], ctx.dirs.output)
    return NodeResult(ui={"audio": items})


async def preview_audio(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    items = await _save_audio(ctx, i["audio"], ctx.temp_prefix(), ctx.dirs.temp)
    return NodeResult(ui={"audio": items})


async def video_combine(ctx: NodeContext, i: dict[str, Any]) -> NodeResult:
    """VideoHelperSuite-style output: a custom `gifs` key with extra fields per item."""
    temp = not i["save_output"]
    base = ctx.dirs.temp if temp else ctx.dirs.output
    prefix = i["filename_prefix"]
    items = await _save(ctx, prefix, base, _picture(), ".jpg", 1, i["images"])
    gifs = [
        {
            **item,
            "format": i["format"],
            "frame_rate": i["frame_rate"],
            "workflow": item["filename"].rsplit(".", 1)[0] + ".png",
            "fullpath": str(base / item["subfolder"] / item["filename"]),
        }
        for item in items
    ]
    filenames = Value("VHS_FILENAMES", scalar=json.dumps([True, [g["fullpath"] for g in gifs]]))
    return NodeResult((filenames,), ui={"gifs": gifs})


BEHAVIOURS: dict[str, Behaviour] = {
    "EmptyImage": empty_image,
    "LoadImage": load_image,
    "ImageInvert": pass_image,
    "ImageBlur": pass_image,
    "ImageScaleBy": scale_image,
    "GetImageSize": image_size,
    "PreviewAny": preview_any,
    "StringConcatenate": concatenate,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
    "SaveAnimatedWEBP": save_animated,
    "SaveAnimatedPNG": save_animated,
    "SaveWEBM": save_animated,
    "CreateVideo": create_video,
    "SaveVideo": save_animated,
    "EmptyLatentImage": empty_latent,
    "SaveLatent": save_latent,
    "LoadAudio": load_audio,
    "SaveAudio": save_audio,
    "PreviewAudio": preview_audio,
    "VHS_VideoCombine": video_combine,
}
