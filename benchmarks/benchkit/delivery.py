"""Delivering a big output to object storage: the worker's store mode against obstore's own
upload of the same file, both to moto's S3 server on loopback, each in a fresh process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

UPLOADER = Path(__file__).with_name("upload.py")
BUCKET = "bench"
MODES = ("obstore", "worker")
MB = 1_000_000


@dataclass
class Uploads:
    mb_per_s: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    peak_growth_mb: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """The tests' moto S3 server (moto is a dev dependency), without its line per request."""
    try:
        from s3_server import s3_server
    except ImportError as exc:
        raise SystemExit(f"the delivery figures need moto's S3 server (uv sync): {exc}") from exc
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with s3_server() as url:
        yield url


def write_file(path: Path, size_mb: int) -> None:
    """`size_mb` MB of incompressible bytes, as a rendered video would be."""
    block = os.urandom(MB)
    with path.open("wb") as out:
        for _ in range(size_mb):
            out.write(block)


async def uploads(workdir: Path, *, size_mb: int, rounds: int) -> Uploads:
    big = workdir / f"output-{size_mb}mb.mp4"
    await asyncio.to_thread(write_file, big, size_mb)
    out = Uploads()
    with moto_s3() as endpoint:
        async with httpx.AsyncClient(base_url=endpoint, timeout=60) as http:
            (await http.put(f"/{BUCKET}")).raise_for_status()
            env = {
                **os.environ,
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_REGION": "us-east-1",
                "AWS_ALLOW_HTTP": "true",
            }
            env.pop("AWS_SESSION_TOKEN", None)
            for _ in range(rounds):
                for mode in MODES:
                    figures = await _upload(mode, big, env)
                    out.mb_per_s[mode].append(figures["mb_per_s"])
                    out.peak_growth_mb[mode].append(figures["peak_growth_mb"])
                    # moto keeps objects in memory: drop them before the next round.
                    for key in (f"out/obstore/{big.name}", f"out/bench/9/{big.name}"):
                        await http.delete(f"/{BUCKET}/{key}")
    big.unlink()
    return out


async def _upload(mode: str, path: Path, env: dict[str, str]) -> dict[str, float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(UPLOADER),
        mode,
        str(path),
        f"s3://{BUCKET}/out",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(
            f"{mode} upload failed (exit {proc.returncode}): {stderr.decode()[-2000:]}"
        )
    figures: dict[str, float] = json.loads(stdout)
    return figures
