"""Benchmark comfyui-worker against the bundled mock ComfyUI or your own.

    uv run python benchmarks/bench.py
    uv run python benchmarks/bench.py --comfyui-url http://127.0.0.1:8188 \\
        --output-dir ~/ComfyUI/output --temp-dir ~/ComfyUI/temp
    uv run python benchmarks/bench.py --littlehorse real     # through a real LittleHorse

Prints one Markdown table: the minimal client (the floor), the Executor in websocket and poll
mode and one task through a real `comfyui-worker serve` under a fake LittleHorse server, all
in the same rounds; burst throughput through LittleHorse against prompts posted straight to
ComfyUI; how long after ComfyUI's execution_success each has the result; the CPU each spends
per job; the idle gap between jobs in ComfyUI; serve's idle memory and CPU; and a 200 MB
output delivered to S3 (moto on loopback) in store mode against obstore's own upload. Jobs
are tiny and model-free (EmptyImage -> PreviewImage), so what is measured is the overhead
around ComfyUI. About a minute with the defaults; --time-limit bounds it.

With --littlehorse real the table has the rows through a real LittleHorse server instead
(with both, after those above; the server is started here with its Kafka, as
tests/littlehorse/ does, or is --lh-address): a WfRun of the tiny workflow through serve
against the same WfRun shape whose task does nothing (the SDK's own LHTaskWorker:
LittleHorse's floor) and the minimal client (ComfyUI's own time), and bursts of WfRuns
started at once against prompts posted straight to ComfyUI and no-op WfRuns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchkit.comfy import Target, http_client, mock_comfyui
from benchkit.delivery import Uploads, uploads
from benchkit.phases import Bursts, Latencies, bursts, latencies
from benchkit.serve import idle_usage, serve_process
from benchkit.table import Row, median, overhead, render, sample_row

if TYPE_CHECKING:
    from benchkit.real_phases import RealBursts, RealLatencies

DEFAULT_IN_FLIGHT = 2  # COMFYUI_MAX_IN_FLIGHT's default
SHORT_JOBS_IN_FLIGHT = 4  # what the README suggests for short jobs on a busy host
# A real ComfyUI v0.3.64 on CPU runs the tiny job in 5-8 ms (POST to execution_success).
MOCK_JOB_SECONDS = 0.005


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--comfyui-url", help="your ComfyUI (default: start the bundled mock)")
    parser.add_argument("--output-dir", type=Path, help="its output folder as seen from here")
    parser.add_argument("--temp-dir", type=Path, help="its temp folder as seen from here")
    parser.add_argument(
        "--mock-job-seconds",
        type=float,
        default=MOCK_JOB_SECONDS,
        help=f"how long each job takes the mock (default {MOCK_JOB_SECONDS}: a real ComfyUI's "
        "time for the tiny job on CPU)",
    )
    parser.add_argument("--rounds", type=int, default=50, help="latency rounds (default 50)")
    parser.add_argument("--warmup", type=int, default=3, help="rounds not counted (default 3)")
    parser.add_argument("--burst", type=int, default=40, help="jobs per burst (default 40)")
    parser.add_argument("--burst-rounds", type=int, default=5, help="bursts each (default 5)")
    parser.add_argument(
        "--short-jobs-in-flight",
        type=int,
        default=SHORT_JOBS_IN_FLIGHT,
        help=f"COMFYUI_MAX_IN_FLIGHT for the short-jobs burst (default {SHORT_JOBS_IN_FLIGHT})",
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=10, help="serve idle sampling (default 10)"
    )
    parser.add_argument(
        "--big-mb", type=int, default=200, help="size of the output delivered (default 200)"
    )
    parser.add_argument(
        "--big-rounds", type=int, default=2, help="deliveries of it each way (default 2)"
    )
    parser.add_argument(
        "--littlehorse",
        choices=("fake", "real", "both"),
        default="fake",
        help="the LittleHorse server: the tests' fake (default), a real one, or both tables",
    )
    parser.add_argument(
        "--lh-address",
        help="real: a running LittleHorse server (host:port, plaintext) instead of starting one",
    )
    parser.add_argument(
        "--lh-mock-job-seconds",
        type=float,
        default=0.0,
        help="real: how long each job takes the mock (default 0: the overhead alone)",
    )
    parser.add_argument(
        "--time-limit", type=float, default=300, help="give up after this many seconds (300)"
    )
    args = parser.parse_args(argv)
    given = [args.comfyui_url, args.output_dir, args.temp_dir]
    if any(given) and not all(given):
        parser.error("--comfyui-url, --output-dir and --temp-dir go together")
    if min(args.rounds, args.burst, args.burst_rounds, args.big_mb, args.big_rounds) < 1:
        parser.error("--rounds, --burst, --burst-rounds, --big-mb, --big-rounds: at least 1")
    if args.warmup < 0:
        parser.error("--warmup cannot be negative")
    return args


async def bench(args: argparse.Namespace) -> list[Row]:
    rows = await fake_bench(args) if args.littlehorse in ("fake", "both") else []
    if args.littlehorse in ("real", "both"):
        rows += await real_bench(args)
    return rows


async def fake_bench(args: argparse.Namespace) -> list[Row]:
    async with contextlib.AsyncExitStack() as stack:
        if args.comfyui_url:
            target = Target(args.comfyui_url.rstrip("/"), args.output_dir, args.temp_dir)
        else:
            target = await stack.enter_async_context(mock_comfyui(args.mock_job_seconds))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-")))
        http = await stack.enter_async_context(http_client(target))
        burst_by_limit: dict[int, Bursts] = {}
        # The other limits first: their serve processes leave the bytecode cache written (as
        # the Docker image ships it), so the default one is measured as it would run there.
        for limit in sorted({1, args.short_jobs_in_flight} - {DEFAULT_IN_FLIGHT}):
            async with serve_process(target, limit, workdir) as serve:
                burst_by_limit[limit] = await bursts(
                    http, target, serve, count=args.burst, rounds=args.burst_rounds
                )
        async with serve_process(target, DEFAULT_IN_FLIGHT, workdir) as serve:
            rss, cpu = await idle_usage(serve.pid, args.idle_seconds)
            lat = await latencies(http, target, serve, rounds=args.rounds, warmup=args.warmup)
            burst_by_limit[DEFAULT_IN_FLIGHT] = await bursts(
                http, target, serve, count=args.burst, rounds=args.burst_rounds
            )
        delivered = await uploads(workdir, size_mb=args.big_mb, rounds=args.big_rounds)
    return (
        latency_rows(lat)
        + burst_rows(burst_by_limit, args.burst)
        + [
            sample_row("serve idle RSS", rss, "MB"),
            Row(f"serve idle CPU over {args.idle_seconds:g} s", 1, cpu, None, "% of a core"),
        ]
        + delivery_rows(delivered, args.big_mb)
    )


async def real_bench(args: argparse.Namespace) -> list[Row]:
    # Imported here: it needs tests/littlehorse/ (the harness) on the path.
    from benchkit.real_lh import noop_worker, real_littlehorse, serve_on_real_lh
    from benchkit.real_phases import real_bursts, real_latencies

    async with contextlib.AsyncExitStack() as stack:
        lh = await stack.enter_async_context(real_littlehorse(args.lh_address))
        if args.comfyui_url:
            target = Target(args.comfyui_url.rstrip("/"), args.output_dir, args.temp_dir)
        else:
            target = await stack.enter_async_context(mock_comfyui(args.lh_mock_job_seconds))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-real-")))
        http = await stack.enter_async_context(http_client(target))
        noop = await stack.enter_async_context(noop_worker(lh, workdir))
        by_limit: dict[int, RealBursts] = {}
        # One serve at a time: two would share the tenant's tasks.
        limits = [*sorted({args.short_jobs_in_flight} - {DEFAULT_IN_FLIGHT}), DEFAULT_IN_FLIGHT]
        for limit in limits:
            async with serve_on_real_lh(lh, target, limit, workdir) as serve:
                if limit == DEFAULT_IN_FLIGHT:
                    lat = await real_latencies(
                        http, target, lh, noop, serve, rounds=args.rounds, warmup=args.warmup
                    )
                by_limit[limit] = await real_bursts(
                    http, target, lh, noop, serve, count=args.burst, rounds=args.burst_rounds
                )
    job = f"mock job {args.lh_mock_job_seconds * 1000:g} ms" if not args.comfyui_url else "yours"
    return real_latency_rows(lat, job) + real_burst_rows(by_limit, args.burst)


def real_latency_rows(lat: RealLatencies, job: str) -> list[Row]:
    floor, noop, serve = lat.ms["floor"], lat.ms["noop"], lat.ms["serve"]
    own = [s - n - f for s, n, f in zip(serve, noop, floor, strict=True)]
    return [
        sample_row(f"real LH: minimal client straight to ComfyUI ({job})", floor, "ms"),
        sample_row("real LH: WfRun, no-op task (SDK LHTaskWorker), RunWf to COMPLETED", noop, "ms"),
        sample_row(
            "real LH: WfRun through serve, RunWf to COMPLETED",
            serve,
            "ms",
            overhead(serve, noop).replace("the floor", "the no-op WfRun"),
        ),
        sample_row(
            "real LH: serve's WfRun less the no-op WfRun less the minimal client",
            own,
            "ms",
            "the worker's own time per task",
        ),
        sample_row(
            "real LH: no-op WfRun, start to end on the server's clock", lat.server_ms["noop"], "ms"
        ),
        sample_row(
            "real LH: serve's WfRun, start to end on the server's clock",
            lat.server_ms["serve"],
            "ms",
            overhead(lat.server_ms["serve"], lat.server_ms["noop"]).replace(
                "the floor", "the no-op WfRun"
            ),
        ),
        sample_row(
            "real LH: no-op task's attempt, claimed to reported (its start/end)",
            lat.task_ms["noop"],
            "ms",
        ),
        sample_row(
            "real LH: serve's task's attempt, claimed to reported (its start/end)",
            lat.task_ms["serve"],
            "ms",
            overhead(lat.task_ms["serve"], lat.task_ms["noop"]).replace(
                "the floor", "the no-op task"
            ),
        ),
    ]


def real_burst_rows(by_limit: dict[int, RealBursts], count: int) -> list[Row]:
    direct = [rate for b in by_limit.values() for rate in b.direct]
    noop = [rate for b in by_limit.values() for rate in b.noop]
    rows = [
        sample_row(f"real LH: burst of {count} posted straight to ComfyUI", direct, "jobs/s"),
        sample_row(
            f"real LH: burst of {count} WfRuns, no-op task",
            noop,
            "jobs/s",
            f"{median(noop) / median(direct) * 100:.0f} % of straight to ComfyUI",
        ),
    ]
    for limit, b in sorted(by_limit.items()):
        rows.append(
            sample_row(
                f"real LH: burst of {count} WfRuns through serve, COMFYUI_MAX_IN_FLIGHT={limit}",
                b.serve,
                "jobs/s",
                f"{median(b.serve) / median(b.direct) * 100:.0f} % of straight to ComfyUI, "
                f"{median(b.serve) / median(b.noop) * 100:.0f} % of no-op",
            )
        )
    return rows


def latency_rows(lat: Latencies) -> list[Row]:
    floor = lat.ms["floor"]
    names = {
        "floor": "minimal client: fresh ws + POST + wait + GET history",
        "websocket": "Executor, websocket mode",
        "poll": "Executor, poll mode (default 0.25 s interval)",
        "serve": "one task through serve + LittleHorse, dispatch to report",
    }
    rows = [
        sample_row(
            name, lat.ms[kind], "ms", "" if kind == "floor" else overhead(lat.ms[kind], floor)
        )
        for kind, name in names.items()
    ]
    detection = {
        "floor": "minimal client has it",
        "websocket": "Executor (websocket) has it",
        "poll": "Executor (poll) has it",
        "serve": "LittleHorse has serve's report",
    }
    rows += [
        sample_row(f"execution_success -> {name}", lat.detection[kind], "ms")
        for kind, name in detection.items()
    ]
    cpu = {
        "floor": "minimal client (its thread)",
        "websocket": "Executor, websocket mode (its thread)",
        "serve": "serve, per task (the whole process)",
    }
    floor_cpu = lat.cpu_ms["floor"]
    rows += [
        Row(
            f"mean CPU per job: {name}",
            len(lat.ms[kind]),
            lat.cpu_ms[kind],
            None,
            "ms",
            "" if kind == "floor" else f"{lat.cpu_ms[kind] - floor_cpu:+.1f} ms over the floor",
        )
        for kind, name in cpu.items()
    ]
    return rows


def burst_rows(by_limit: dict[int, Bursts], count: int) -> list[Row]:
    direct = [rate for b in by_limit.values() for rate in b.direct]
    rows = [sample_row(f"burst of {count} posted straight to ComfyUI", direct, "jobs/s")]
    for limit, b in sorted(by_limit.items()):
        share = median(b.worker) / median(b.direct) * 100
        rows.append(
            sample_row(
                f"burst of {count} via LittleHorse, COMFYUI_MAX_IN_FLIGHT={limit}",
                b.worker,
                "jobs/s",
                f"{share:.0f} % of straight to ComfyUI",
            )
        )
    gaps = [gap for b in by_limit.values() for gap in b.direct_gaps]
    rows.append(sample_row("ComfyUI idle between jobs, all queued up front", gaps, "ms"))
    rows += [
        sample_row(f"ComfyUI idle between jobs, via serve, {limit} in flight", b.worker_gaps, "ms")
        for limit, b in sorted(by_limit.items())
        if limit <= DEFAULT_IN_FLIGHT
    ]
    return rows


def delivery_rows(up: Uploads, size_mb: int) -> list[Row]:
    share = median(up.mb_per_s["worker"]) / median(up.mb_per_s["obstore"]) * 100
    what = f"a {size_mb} MB output to S3 (moto, loopback)"
    return [
        sample_row(f"obstore's own upload of {what}", up.mb_per_s["obstore"], "MB/s"),
        sample_row(
            f"store-mode delivery of {what}",
            up.mb_per_s["worker"],
            "MB/s",
            f"{share:.0f} % of obstore's own",
        ),
        sample_row("peak RSS growth, obstore's own upload", up.peak_growth_mb["obstore"], "MB"),
        sample_row("peak RSS growth, store-mode delivery", up.peak_growth_mb["worker"], "MB"),
    ]


def machine() -> str:
    """Where the figures come from: CPU, cores, Python, and how busy the machine was."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = "/".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"{model}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, load average {load}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, before = time.monotonic(), machine()

    async def bounded() -> list[Row]:
        async with asyncio.timeout(args.time_limit):
            return await bench(args)

    try:
        rows = asyncio.run(bounded())
    except TimeoutError:
        print(f"bench.py: gave up after {args.time_limit:g} s", file=sys.stderr)
        return 1
    print(render(rows))
    print(f"\nstart: {before}\nend:   {machine()}")
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
