"""The prompt worker: one prompt at a time, nodes in dependency order, ComfyUI's event sequence.

Which messages go where follows ComfyUI v0.3.64: execution_start/cached/success/error,
executing and executed reach only the submitting client_id (nothing at all when the prompt has
none), progress and progress_state go to that client or to everyone, execution_interrupted to
that client or to everyone. The final `executing {node: null}` is sent after the history entry
is written, and only when the prompt has a client_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyui_mock.cache import NodeCache
from comfyui_mock.control import Controls
from comfyui_mock.files import Dirs
from comfyui_mock.hub import SocketHub
from comfyui_mock.input_checks import full_type_name
from comfyui_mock.nodes import BEHAVIOURS, NodeContext, NodeResult
from comfyui_mock.state import PromptQueue, QueueItem

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """Raised at a node boundary after POST /interrupt."""


class InjectedFailure(Exception):
    """A failure a test asked for; reported under the exception type it named."""

    def __init__(self, message: str, type_name: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def _now_ms() -> int:
    return int(time.time() * 1000)


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool, str)):
        return value
    return str(value)


@dataclass
class _Run:
    item: QueueItem
    sigs: dict[str, str]
    messages: list[list[Any]] = field(default_factory=list)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    current_inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def cid(self) -> Any:
        return self.item.client_id

    @property
    def prompt_id(self) -> str:
        return self.item.prompt_id


class Executor:
    def __init__(
        self,
        queue: PromptQueue,
        hub: SocketHub,
        controls: Controls,
        dirs: Dirs,
        record_file: Callable[[Path], None],
    ) -> None:
        self.queue = queue
        self.hub = hub
        self.controls = controls
        self.dirs = dirs
        self.record_file = record_file
        self.cache = NodeCache(dirs)
        self.client_id: Any = None
        self.last_node_id: str | None = None
        self._interrupt = False
        self._free_pending = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.queue.abandon_running()
        self.last_node_id = None

    def interrupt(self, prompt_id: Any = None) -> None:
        """Targeted interrupts only hit the running prompt; others are silently ignored."""
        running = self.queue.running
        if prompt_id:
            if running is not None and running.prompt_id == prompt_id:
                self._interrupt = True
        else:
            self._interrupt = True

    def free_memory(self) -> None:
        """POST /free {"free_memory": true}: ComfyUI's prompt worker applies the flag between
        prompts, so a running prompt keeps its cache and the next one starts without."""
        if self.queue.running is None:
            self.cache.clear()
        else:
            self._free_pending = True

    async def _loop(self) -> None:
        while True:
            if self._free_pending:
                self._free_pending = False
                self.cache.clear()
            item = await self.queue.get()
            self.hub.send(
                "status", {"status": {"exec_info": {"queue_remaining": self.queue.remaining}}}
            )
            try:
                await self._execute(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # the worker must survive its own bugs like ComfyUI's does
                log.exception("mock executor failed on prompt %s", item.prompt_id)
                self.queue.task_done(
                    item,
                    {
                        "outputs": {},
                        "status": {"status_str": "error", "completed": False, "messages": []},
                        "meta": {},
                    },
                )

    def _add_message(self, run: _Run, event: str, data: dict[str, Any], broadcast: bool) -> None:
        data = {**data, "timestamp": _now_ms()}
        run.messages.append([event, data])
        if run.cid is not None or broadcast:
            self.hub.send(event, data, run.cid)

    def _progress_state(self, run: _Run, nid: str, state: str, value: float, max_: float) -> None:
        run.progress[nid] = {
            "value": value,
            "max": max_,
            "state": state,
            "node_id": nid,
            "prompt_id": run.prompt_id,
            "display_node_id": nid,
            "parent_node_id": None,
            "real_node_id": nid,
        }
        nodes = {k: dict(v) for k, v in run.progress.items()}
        self.hub.send("progress_state", {"prompt_id": run.prompt_id, "nodes": nodes}, run.cid)

    def _finish_progress(self, run: _Run, nid: str) -> None:
        current = run.progress.get(nid, {"max": 1.0})
        self._progress_state(run, nid, "finished", current["max"], current["max"])

    async def _execute(self, item: QueueItem) -> None:
        self._interrupt = False
        self.client_id = item.client_id
        self.controls.count_execution(item.prompt_id)
        prompt = item.prompt
        if not self.controls.cache_enabled:
            self.cache.clear()
        run = _Run(item, self.cache.set_prompt(prompt))
        self._add_message(run, "execution_start", {"prompt_id": run.prompt_id}, broadcast=False)
        cached = [nid for nid in prompt if self.cache.has(run.sigs[nid])]
        self._add_message(
            run, "execution_cached", {"nodes": cached, "prompt_id": run.prompt_id}, broadcast=False
        )
        order = self.cache.plan(prompt, item.outputs_to_execute, run.sigs)
        to_run = [nid for nid in order if not self.cache.has(run.sigs[nid])]
        share = self.controls.job_delay / len(to_run) if to_run else 0.0
        success = True
        for nid in order:
            try:
                await self._node(run, nid, share)
            except Interrupted:
                success = False
                self._add_message(run, "execution_interrupted", self._failure_base(run, nid), True)
                break
            except Exception as ex:
                success = False
                self._add_message(run, "execution_error", self._error(run, nid, ex), False)
                break
        else:
            self._add_message(run, "execution_success", {"prompt_id": run.prompt_id}, False)
        outputs, meta = self.cache.history_outputs(prompt, run.sigs)
        status = {
            "status_str": "success" if success else "error",
            "completed": success,
            "messages": run.messages,
        }
        self.last_node_id = None
        self.queue.task_done(item, {"outputs": outputs, "status": status, "meta": meta})
        self.hub.send(
            "status", {"status": {"exec_info": {"queue_remaining": self.queue.remaining}}}
        )
        if run.cid is not None:
            self.hub.send("executing", {"node": None, "prompt_id": run.prompt_id}, run.cid)

    async def _node(self, run: _Run, nid: str, share: float) -> None:
        node = run.item.prompt[nid]
        class_type: str = node["class_type"]
        entry = self.cache.get(run.sigs[nid])
        if entry is not None:
            if run.cid is not None:
                ui = entry.ui
                self.hub.send(
                    "executed",
                    {"node": nid, "display_node": nid, "output": ui, "prompt_id": run.prompt_id},
                    run.cid,
                )
            self._finish_progress(run, nid)
            return
        run.current_inputs = {}
        self._progress_state(run, nid, "running", 0.0, 1.0)
        self.last_node_id = nid
        if run.cid is not None:
            self.hub.send(
                "executing", {"node": nid, "display_node": nid, "prompt_id": run.prompt_id}, run.cid
            )
        self._check_interrupt()
        await self._simulate_work(run, nid, class_type, share)
        inputs = self.cache.resolve_inputs(run.item.prompt, nid, run.sigs)
        run.current_inputs = inputs
        failure = self.controls.take_node_failure(nid, class_type)
        if failure is not None:
            raise InjectedFailure(failure.message, failure.exception_type)
        ctx = NodeContext(nid, self.dirs, self.record_file, self._send_text)
        result: NodeResult = await BEHAVIOURS[class_type](ctx, inputs)
        self.cache.store(run.sigs[nid], result)
        run.executed.append(nid)
        if result.ui is not None and run.cid is not None:
            self.hub.send(
                "executed",
                {"node": nid, "display_node": nid, "output": result.ui, "prompt_id": run.prompt_id},
                run.cid,
            )
        self._finish_progress(run, nid)

    async def _simulate_work(self, run: _Run, nid: str, class_type: str, share: float) -> None:
        delay = share + self.controls.node_delay(nid, class_type)
        steps = self.controls.progress_steps(nid, class_type)
        if steps <= 0:
            if delay > 0:
                await asyncio.sleep(delay)
            return
        for value in range(1, steps + 1):
            if delay > 0:
                await asyncio.sleep(delay / steps)
            # Samplers check for an interrupt on every step, not only between nodes.
            self._check_interrupt()
            self._progress_state(run, nid, "running", value, steps)
            self.hub.send(
                "progress",
                {"value": value, "max": steps, "prompt_id": run.prompt_id, "node": nid},
                run.cid,
            )

    def _check_interrupt(self) -> None:
        if self._interrupt:
            self._interrupt = False
            raise Interrupted()

    def _send_text(self, node_id: str, text: str) -> None:
        self.hub.send_text_preview(node_id, text)

    def _failure_base(self, run: _Run, nid: str) -> dict[str, Any]:
        return {
            "prompt_id": run.prompt_id,
            "node_id": nid,
            "node_type": run.item.prompt[nid]["class_type"],
            "executed": list(run.executed),
        }

    def _error(self, run: _Run, nid: str, ex: Exception) -> dict[str, Any]:
        type_name = ex.type_name if isinstance(ex, InjectedFailure) else full_type_name(type(ex))
        inputs = run.current_inputs
        return {
            **self._failure_base(run, nid),
            "exception_message": f"{ex}\n",
            "exception_type": type_name,
            "traceback": traceback.format_tb(ex.__traceback__),
            "current_inputs": {k: [_format_value(v)] for k, v in inputs.items()},
            "current_outputs": list(run.item.prompt),
        }
