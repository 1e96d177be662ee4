"""`benchmarks/bench.py --littlehorse real` with tiny counts against the session's server: it
runs, and its table has the rows and columns the README shows. Figures are never checked
here. (`tests/benchmarks/` runs the default table; this one needs the real server's fixture.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from harness import LittleHorseServer

pytestmark = [pytest.mark.real_littlehorse, pytest.mark.timeout(150, func_only=True)]

REPO = Path(__file__).resolve().parents[2]
COLUMNS = ["measure", "n", "median", "p95", "unit", "vs reference"]
ROWS = [
    "real LH: minimal client straight to ComfyUI (mock job 0 ms)",
    "real LH: WfRun, no-op task (SDK LHTaskWorker), RunWf to COMPLETED",
    "real LH: WfRun through serve, RunWf to COMPLETED",
    "real LH: serve's WfRun less the no-op WfRun less the minimal client",
    "real LH: no-op WfRun, start to end on the server's clock",
    "real LH: serve's WfRun, start to end on the server's clock",
    "real LH: no-op task's attempt, claimed to reported (its start/end)",
    "real LH: serve's task's attempt, claimed to reported (its start/end)",
    "real LH: burst of 3 posted straight to ComfyUI",
    "real LH: burst of 3 WfRuns, no-op task",
    "real LH: burst of 3 WfRuns through serve, COMFYUI_MAX_IN_FLIGHT=2",
    "real LH: burst of 3 WfRuns through serve, COMFYUI_MAX_IN_FLIGHT=4",
]
FIGURE = re.compile(r"^(-|-?\d+(\.\d)?)$")


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_bench_through_the_real_server_prints_its_rows(
    real_lh_server: LittleHorseServer, tmp_path: Path
) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench.py"),
            *("--littlehorse", "real", "--lh-address", real_lh_server.address),
            *("--rounds", "2", "--warmup", "1", "--burst", "3", "--burst-rounds", "1"),
            *("--time-limit", "120"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    table = [line for line in run.stdout.splitlines() if line.startswith("|")]
    assert cells(table[0]) == COLUMNS
    rows = [cells(line) for line in table[2:]]
    assert [row[0] for row in rows] == ROWS
    for row in rows:
        assert len(row) == len(COLUMNS), row
        assert int(row[1]) >= 1, row
        assert FIGURE.match(row[2]) and FIGURE.match(row[3]), row
    by_name = {row[0]: row for row in rows}
    # Every worker figure is set against its reference.
    assert "over the no-op WfRun" in by_name[ROWS[2]][5]
    assert "over the no-op WfRun" in by_name[ROWS[5]][5]
    assert "over the no-op task" in by_name[ROWS[7]][5]
    assert by_name[ROWS[9]][5].endswith("% of straight to ComfyUI")
    assert all(by_name[name][5].endswith("% of no-op") for name in ROWS[10:])
    assert re.search(r"load average [\d.]+/", run.stdout)
