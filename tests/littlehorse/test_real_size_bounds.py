"""Results at LittleHorse's size limit, on the real server.

The worker's largest result (COMFYUI_MAX_RESULT_BYTES at its ceiling, a text the bound cuts)
is stored; a result that would fit a report but not the TaskRun's record beside large inputs
is cut further, so it is stored too. Beyond the limit, measured with a task function of our
own on the SDK's own worker (not ours): a report over ~1 MB is refused with UNAVAILABLE, and
one that fits while its TaskRun record does not is answered OK and applied in part (the
TaskRun never); either way the attempt hangs until its timeout (README.md next to this file).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import littlehorse
import pytest
from harness import LittleHorseServer, retry_rpc
from littlehorse.config import LHConfig
from littlehorse.model import TaskDefId
from littlehorse.worker import LHTaskWorker
from littlehorse.workflow import Workflow, WorkflowThread
from scenario import (
    describe_task_run,
    finish_all,
    register_wf_spec,
    serving,
    statuses,
    the_task_run,
    wf_status,
)
from wf_runs import describe_node_runs, run_wf, variable, wait_wf_run
from worker_processes import worker_env

from comfyui_mock.handle import MockHandle
from comfyui_worker.bounds import LH_RECORD_LIMIT, MAX_RESULT_CEILING, result_limit
from comfyui_worker.constants import TASK_NAME

pytestmark = [pytest.mark.real_littlehorse, pytest.mark.timeout(120, func_only=True)]

WF_SPEC = "large-results"


def doubled_text(seed: str, doublings: int) -> dict[str, Any]:
    """ComfyUI's StringConcatenate doubling `seed` `doublings` times into a PreviewAny: a
    text 2 ** doublings times the seed from a workflow about the seed's size."""
    workflow: dict[str, Any] = {
        "10": {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": seed, "string_b": "", "delimiter": ""},
        }
    }
    for n in range(11, 11 + doublings):
        workflow[str(n)] = {
            "class_type": "StringConcatenate",
            "inputs": {"string_a": [str(n - 1), 0], "string_b": [str(n - 1), 0], "delimiter": ""},
        }
    workflow["9"] = {"class_type": "PreviewAny", "inputs": {"source": [str(10 + doublings), 0]}}
    return workflow


def test_the_largest_results_the_worker_sends_are_stored(
    real_lh_server: LittleHorseServer,
    lh_tenant: str,
    lh_config: LHConfig,
    comfyui_mock: MockHandle,
    tmp_path: Path,
) -> None:
    env = worker_env(
        real_lh_server,
        lh_tenant,
        comfyui_mock,
        COMFYUI_TASKS=TASK_NAME,
        COMFYUI_MAX_RESULT_BYTES=str(MAX_RESULT_CEILING),
        COMFYUI_MAX_WORKFLOW_BYTES="400000",
    )
    # A 2 MB text from a 1 KB workflow; and a 1.2 MB one from a 300 KB workflow, whose
    # TaskRun record keeps those 300 KB beside the result.
    at_ceiling = doubled_text("c" * 1_000, 11)
    big_inputs = doubled_text("i" * 300_000, 2)
    with serving(env, tmp_path) as serve:
        # A timeout short enough that a dropped report fails the test in seconds.
        register_wf_spec(lh_config, WF_SPEC, timeout_seconds=15, retries=0)
        ceiling_run, inputs_run = finish_all(lh_config, WF_SPEC, [at_ceiling, big_inputs], serve)

    limits = []
    for wf_run_id in (ceiling_run, inputs_run):
        task_run = the_task_run(lh_config, wf_run_id)
        assert wf_status(lh_config, wf_run_id) == "COMPLETED", describe_task_run(task_run)
        assert statuses(task_run) == ["TASK_SUCCESS"]
        result = variable(lh_config, wf_run_id, "result")
        size = len(json.dumps(result))
        inputs = sum(v.value.ByteSize() for v in task_run.input_variables)
        limit = result_limit(MAX_RESULT_CEILING, inputs, 0).max_bytes
        limits.append(limit)
        # Cut to the most that fits, and stored as sent.
        assert limit - 1_000 < size <= limit, (size, limit)
        (text,) = result["texts"]
        assert "…[truncated " in text["text"]
        record = task_run.ByteSize()
        print(
            f"\nresult {size:,} bytes (limit {limit:,}, inputs {inputs:,}): the TaskRun "
            f"is {record:,} bytes, {LH_RECORD_LIMIT - record:,} under the record limit"
        )
        assert record < LH_RECORD_LIMIT
    # The small workflow's result had all of COMFYUI_MAX_RESULT_BYTES; the other one about as
    # much less as its 300 KB of inputs take.
    assert limits[0] == MAX_RESULT_CEILING
    assert limits[1] < MAX_RESULT_CEILING - 250_000


# -- beyond the limit, with the SDK's own worker ------------------------------------------


async def oversized(padding: str, size: int) -> dict[str, Any]:
    """A task that returns `size` bytes of text; `padding` only makes the TaskRun's inputs
    (and so its record) larger."""
    return {"blob": "o" * size}


OVERSIZED = "oversized-output"
SDK_TIMEOUT = 2  # seconds per attempt


class SdkWorker:
    """The SDK's `LHTaskWorker` on an event loop of its own, in a thread (`littlehorse.start`
    wants the main thread), collecting what its report loop logs."""

    def __init__(self, config: LHConfig) -> None:
        self.worker = LHTaskWorker(oversized, OVERSIZED, config)
        self.warnings: list[logging.LogRecord] = []
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._run(),))
        self._handler = _ListHandler(self.warnings)

    def __enter__(self) -> SdkWorker:
        logging.getLogger("LHConnection").addHandler(self._handler)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        logging.getLogger("LHConnection").removeHandler(self._handler)

    async def _run(self) -> None:
        started = asyncio.ensure_future(self.worker.start())
        await self._stop.wait()
        self.worker.stop()
        # The SDK tracks none of its tasks (connections, executions, report retries).
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.gather(started, return_exceptions=True)


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def sdk_config(real_lh_server: LittleHorseServer, lh_tenant: str) -> Iterator[LHConfig]:
    config = real_lh_server.config(lh_tenant)
    littlehorse.create_task_def(oversized, OVERSIZED, config)
    stub = config.stub()
    retry_rpc(lambda: stub.GetTaskDef(TaskDefId(name=OVERSIZED), timeout=5))

    def entrypoint(wf: WorkflowThread) -> None:
        padding = wf.declare_str("padding")
        size = wf.declare_int("size")
        result = wf.declare_json_obj("result")
        result.assign(wf.execute(OVERSIZED, padding, size, timeout_seconds=SDK_TIMEOUT, retries=1))

    littlehorse.create_workflow_spec(Workflow(OVERSIZED, entrypoint), config)
    yield config


def test_beyond_the_record_limit_the_server_refuses_or_drops_the_report(
    sdk_config: LHConfig,
) -> None:
    started = time.monotonic()
    with SdkWorker(sdk_config) as sdk:
        # The report alone is over the limit.
        refused = run_wf(sdk_config, OVERSIZED, {"padding": "", "size": 1_100_000})
        # The report fits (900 KB); its TaskRun's record, with 300 KB of inputs, does not.
        dropped = run_wf(sdk_config, OVERSIZED, {"padding": "p" * 300_000, "size": 900_000})
        for wf_run_id in (refused, dropped):
            wait_wf_run(sdk_config, wf_run_id, timeout=30)
        warnings = [record.getMessage() for record in sdk.warnings]
    print(
        f"\nover-limit reports: both TaskRuns timed out twice in {time.monotonic() - started:.1f} s"
    )

    for wf_run_id in (refused, dropped):
        task_run = the_task_run(sdk_config, wf_run_id)
        # The TaskRun kept nothing of either report: each attempt timed out, was retried,
        # timed out again.
        assert statuses(task_run) == ["TASK_TIMEOUT", "TASK_TIMEOUT"], describe_task_run(task_run)
        assert not any(attempt.HasField("output") for attempt in task_run.attempts)
    # The refused report changed nothing else: the WfRun failed on the timeouts.
    assert wf_status(sdk_config, refused) == "ERROR", describe_node_runs(sdk_config, refused)
    # The dropped one was applied in part, differently from run to run: the WfRun COMPLETED
    # (its NodeRun COMPLETED or still RUNNING, the output assigned or not) or ERROR with the
    # output assigned all the same; whatever it did, its TaskRun disagrees with it.
    result = variable(sdk_config, dropped, "result")
    print(
        f"the dropped report's WfRun ended {wf_status(sdk_config, dropped)}, its result "
        f"{'unset' if result is None else f'{len(json.dumps(result)):,} bytes'}:\n"
        f"{describe_node_runs(sdk_config, dropped)}"
    )
    # The SDK was told UNAVAILABLE for the report over the limit (it retries every 2 s), and
    # nothing at all for the one its record could not hold.
    refusals = [w for w in warnings if "Failed recording task claim to Kafka" in w]
    assert refusals and all("UNAVAILABLE" in w for w in refusals), warnings
    assert len(refusals) == len(warnings), warnings
