"""LittleHorse's own floor: the SDK's `LHTaskWorker` serving a task that does nothing, in a
process of its own as `comfyui-worker serve` is. `python noop_worker.py TASK_DEF_NAME`, with
LHC_* saying where LittleHorse is; it registers the TaskDef (the same signature as the
worker's, `(workflow: JSON_OBJ) -> JSON_OBJ`), prints `registered`, then serves until
SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import grpc
import littlehorse
from littlehorse.config import LHConfig
from littlehorse.model import TaskDefId
from littlehorse.worker import LHTaskWorker


async def noop(workflow: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "nodes": len(workflow)}


def main(task_def_name: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    config = LHConfig()
    worker = LHTaskWorker(noop, task_def_name, config)
    worker.register_task_def()
    # The worker reads its TaskDef first, and a TaskDef is readable a moment after its put.
    stub, deadline = config.stub(), time.monotonic() + 30
    while True:
        try:
            stub.GetTaskDef(TaskDefId(name=task_def_name), timeout=5)
            break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
        time.sleep(0.05)
    print("registered", flush=True)
    # littlehorse.start() stops the worker on SIGTERM/SIGINT.
    asyncio.run(littlehorse.start(worker))


if __name__ == "__main__":
    main(sys.argv[1])
