"""One upload of a big file to an S3 bucket, in a process of its own so that its memory is
its own: `python upload.py worker|obstore FILE s3://bucket/prefix`. Prints JSON: seconds,
MB/s and how far resident memory rose above where it stood before the upload.

`worker` delivers the file as a store-mode job does (`Delivery.store_file`: read in chunks,
hashed on the way, multipart); `obstore` is obstore's own upload of the same path, the
floor. Both first put a tiny object, so that the client and its runtime exist before the
measurement starts. AWS_* variables say where the S3 server is.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

import obstore
from obstore.store import from_url

from comfyui_worker.constants import OutputMode
from comfyui_worker.media.delivery import Delivery, OutputRequest
from comfyui_worker.media.store import Location, ObjectStores
from comfyui_worker.outputs import OutputFile
from comfyui_worker.settings import Settings


def _status_mb(field: str) -> float:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert match is not None, field
    return int(match.group(1)) / 1024


def _reset_peak() -> None:
    """Restart the high-water mark (VmHWM) from the current resident size."""
    Path("/proc/self/clear_refs").write_text("5")


async def upload(mode: str, path: Path, warm: Path, root: str) -> dict[str, float]:
    where = Location.parse(root)
    if mode == "worker":
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, output_store=root, output_dir=path.parent, temp_dir=path.parent
        )
        delivery = Delivery(settings, ObjectStores.from_settings(settings))
        request = OutputRequest(OutputMode.STORE)

        async def put(file: Path) -> None:
            output = OutputFile("9", "videos", file.name, "", "output", str(file))
            await delivery.store_file(output, "bench", request)

    else:
        store = from_url(f"{where.scheme}://{where.bucket}")

        async def put(file: Path) -> None:
            await obstore.put_async(store, f"{where.key}/obstore/{file.name}", file)

    await put(warm)
    _reset_peak()
    before = _status_mb("VmRSS")
    start = time.perf_counter()
    await put(path)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_growth_mb": _status_mb("VmHWM") - before}


if __name__ == "__main__":
    mode, file, root = sys.argv[1:4]
    path = Path(file)
    warm = path.with_name("warm.bin")
    warm.write_bytes(b"w" * 1024)
    figures = asyncio.run(upload(mode, path, warm, root))
    figures["mb_per_s"] = path.stat().st_size / 1e6 / figures["seconds"]
    print(json.dumps(figures), flush=True)
    # Skip interpreter teardown: obstore's runtime threads can abort the process there
    # (SIGABRT, now and then, after a small upload), which would lose nothing but the exit code.
    os._exit(0)
