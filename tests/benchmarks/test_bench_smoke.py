"""`benchmarks/bench.py` end to end with tiny counts against the bundled mock: it runs, and
its table has the rows and columns the README shows. Figures are never checked here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

COLUMNS = ["measure", "n", "median", "p95", "unit", "vs reference"]
ROWS = [
    "minimal client: fresh ws + POST + wait + GET history",
    "Executor, websocket mode",
    "Executor, poll mode (default 0.25 s interval)",
    "one task through serve + LittleHorse, dispatch to report",
    "execution_success -> minimal client has it",
    "execution_success -> Executor (websocket) has it",
    "execution_success -> Executor (poll) has it",
    "execution_success -> LittleHorse has serve's report",
    "mean CPU per job: minimal client (its thread)",
    "mean CPU per job: Executor, websocket mode (its thread)",
    "mean CPU per job: serve, per task (the whole process)",
    "burst of 3 posted straight to ComfyUI",
    "burst of 3 via LittleHorse, COMFYUI_MAX_IN_FLIGHT=1",
    "burst of 3 via LittleHorse, COMFYUI_MAX_IN_FLIGHT=2",
    "burst of 3 via LittleHorse, COMFYUI_MAX_IN_FLIGHT=4",
    "ComfyUI idle between jobs, all queued up front",
    "ComfyUI idle between jobs, via serve, 1 in flight",
    "ComfyUI idle between jobs, via serve, 2 in flight",
    "serve idle RSS",
    "serve idle CPU over 0.5 s",
    "obstore's own upload of a 1 MB output to S3 (moto, loopback)",
    "store-mode delivery of a 1 MB output to S3 (moto, loopback)",
    "peak RSS growth, obstore's own upload",
    "peak RSS growth, store-mode delivery",
]
FIGURE = re.compile(r"^(-|-?\d+(\.\d)?)$")


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@pytest.mark.timeout(180)
def test_bench_prints_every_row_and_column(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench.py"),
            *("--rounds", "2", "--warmup", "0", "--burst", "3", "--burst-rounds", "1"),
            *("--idle-seconds", "0.5", "--big-mb", "1", "--big-rounds", "1"),
            *("--time-limit", "150"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    table = [line for line in run.stdout.splitlines() if line.startswith("|")]
    assert cells(table[0]) == COLUMNS
    assert set(table[1]) <= {"|", "-"}
    rows = [cells(line) for line in table[2:]]
    assert [row[0] for row in rows] == ROWS
    for row in rows:
        assert len(row) == len(COLUMNS), row
        assert int(row[1]) >= 1, row
        assert FIGURE.match(row[2]) and FIGURE.match(row[3]), row
    # Every worker figure is set against its reference.
    by_name = {row[0]: row for row in rows}
    assert all("over the floor" in row[5] for row in rows[1:4])
    assert all(
        "over the floor" in by_name[name][5]
        for name in ROWS
        if name.startswith("mean CPU") and "minimal client" not in name
    )
    assert all(
        by_name[name][5].endswith("% of straight to ComfyUI")
        for name in ROWS
        if "via LittleHorse" in name
    )
    delivery = by_name["store-mode delivery of a 1 MB output to S3 (moto, loopback)"]
    assert delivery[5].endswith("% of obstore's own")
