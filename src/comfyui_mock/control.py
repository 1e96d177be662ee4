"""Test-side knobs of the mock: timing, injected failures and counters.

Tests call these from their own thread while the server reads them on its event loop, so every
access goes through one lock. Nothing here touches the loop.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

# Operations the HTTP control endpoint (POST /mock/control) accepts, by method name.
CONTROL_OPS = (
    "set_job_delay",
    "set_node_delay",
    "set_progress_steps",
    "set_cache_enabled",
    "fail_next_validation",
    "fail_node",
    "fail_http",
    "drop_websockets",
    "set_response_delay",
    "reset_controls",
    "clear_cache",
    "restart",
    "cleanup_files",
    "executions",
    "request_count",
    "request_counts",
)


def normalise_path(path: str) -> str:
    """Counters and filters treat /api/x and /x as the same route, as ComfyUI serves both."""
    if path == "/api" or path.startswith("/api/"):
        path = path[4:] or "/"
    return path


@dataclass
class NodeFailure:
    node: str
    message: str
    exception_type: str
    remaining: int | None


@dataclass
class HttpFailure:
    path: str | None
    status: int
    remaining: int
    method: str | None = None  # None: any method


@dataclass
class DropRule:
    after_event: str | None
    remaining: int | None


class Controls:
    def __init__(self, job_delay: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._initial_job_delay = job_delay
        self._executions: Counter[str] = Counter()
        self._requests: Counter[str] = Counter()
        self.reset()

    def reset(self) -> None:
        """Back to no faults and the start-up timing; counters are kept."""
        with self._lock:
            self._job_delay = self._initial_job_delay
            self._node_delays: dict[str, float] = {}
            self._steps = 0
            self._node_steps: dict[str, int] = {}
            self._cache_enabled = True
            self._validation_failures = 0
            self._node_failures: list[NodeFailure] = []
            self._http_failures: list[HttpFailure] = []
            # (method or None for any, path or None for any) -> seconds
            self._response_delays: dict[tuple[str | None, str | None], float] = {}
            self._drop: DropRule | None = None

    # -- setters ---------------------------------------------------------------------------

    def set_job_delay(self, seconds: float) -> None:
        with self._lock:
            self._job_delay = max(0.0, float(seconds))

    def set_node_delay(self, node: str, seconds: float) -> None:
        with self._lock:
            self._node_delays[str(node)] = max(0.0, float(seconds))

    def set_progress_steps(self, steps: int, node: str | None = None) -> None:
        with self._lock:
            if node is None:
                self._steps = max(0, int(steps))
            else:
                self._node_steps[str(node)] = max(0, int(steps))

    def set_cache_enabled(self, enabled: bool) -> None:
        with self._lock:
            self._cache_enabled = bool(enabled)

    def fail_next_validation(self, count: int = 1) -> None:
        with self._lock:
            self._validation_failures += max(0, int(count))

    def fail_node(
        self,
        node: str,
        message: str = "Injected failure",
        exception_type: str = "RuntimeError",
        times: int | None = 1,
    ) -> None:
        with self._lock:
            self._node_failures.append(NodeFailure(str(node), message, exception_type, times))

    def fail_http(self, count: int = 1, path: str | None = None, status: int = 500) -> None:
        if not 400 <= int(status) <= 599:
            raise ValueError(f"status must be an HTTP error code, not {status}")
        # "POST /prompt": only that method's requests; "/prompt": every method's.
        method, _, bare = (path or "").rpartition(" ")
        with self._lock:
            target = normalise_path(bare) if path is not None else None
            self._http_failures.append(
                HttpFailure(target, int(status), max(0, int(count)), method.upper() or None)
            )

    def drop_websockets(
        self, after_event: str | None = None, after_events: int | None = None
    ) -> None:
        with self._lock:
            self._drop = DropRule(after_event, after_events)

    def set_response_delay(self, seconds: float, path: str | None = None) -> None:
        """`path` as `fail_http` takes it: "POST /prompt" delays that method only."""
        method, _, bare = (path or "").rpartition(" ")
        with self._lock:
            target = normalise_path(bare) if path is not None else None
            self._response_delays[(method.upper() or None, target)] = max(0.0, float(seconds))

    # -- read by the server -----------------------------------------------------------------

    @property
    def job_delay(self) -> float:
        with self._lock:
            return self._job_delay

    @property
    def cache_enabled(self) -> bool:
        with self._lock:
            return self._cache_enabled

    def node_delay(self, node_id: str, class_type: str) -> float:
        with self._lock:
            return self._node_delays.get(node_id, self._node_delays.get(class_type, 0.0))

    def progress_steps(self, node_id: str, class_type: str) -> int:
        with self._lock:
            return self._node_steps.get(node_id, self._node_steps.get(class_type, self._steps))

    def take_validation_failure(self) -> bool:
        with self._lock:
            if self._validation_failures > 0:
                self._validation_failures -= 1
                return True
            return False

    def take_node_failure(self, node_id: str, class_type: str) -> NodeFailure | None:
        with self._lock:
            for failure in self._node_failures:
                if failure.node in (node_id, class_type):
                    if failure.remaining is not None:
                        failure.remaining -= 1
                        if failure.remaining <= 0:
                            self._node_failures.remove(failure)
                    return failure
            return None

    def take_http_failure(self, path: str, method: str = "GET") -> int | None:
        path = normalise_path(path)
        with self._lock:
            for failure in self._http_failures:
                if (
                    failure.path in (None, path)
                    and failure.method in (None, method)
                    and failure.remaining > 0
                ):
                    failure.remaining -= 1
                    if failure.remaining == 0:
                        self._http_failures.remove(failure)
                    return failure.status
            return None

    def response_delay(self, path: str, method: str = "GET") -> float:
        path = normalise_path(path)
        with self._lock:
            for key in ((method, path), (None, path), (None, None)):
                if key in self._response_delays:
                    return self._response_delays[key]
            return 0.0

    def websocket_event_delivered(self, event: str) -> bool:
        """True when the armed drop rule says: close every socket now."""
        with self._lock:
            rule = self._drop
            if rule is None:
                return False
            if rule.after_event is not None and event != rule.after_event:
                return False
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining > 0:
                    return False
            self._drop = None
            return True

    # -- counters ---------------------------------------------------------------------------

    def count_request(self, method: str, path: str) -> None:
        with self._lock:
            self._requests[f"{method} {normalise_path(path)}"] += 1

    def count_execution(self, prompt_id: str) -> None:
        with self._lock:
            self._executions[prompt_id] += 1

    def executions(self, prompt_id: str) -> int:
        with self._lock:
            return self._executions[prompt_id]

    def all_executions(self) -> dict[str, int]:
        with self._lock:
            return dict(self._executions)

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._requests)

    def request_count(self, path: str, method: str | None = None) -> int:
        path = normalise_path(path)
        with self._lock:
            return sum(
                n
                for key, n in self._requests.items()
                if key.split(" ", 1)[1] == path
                and (method is None or key.split(" ", 1)[0] == method)
            )

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "job_delay": self._job_delay,
                "progress_steps": self._steps,
                "cache_enabled": self._cache_enabled,
                "pending_validation_failures": self._validation_failures,
                "node_failures": [vars(f).copy() for f in self._node_failures],
                "http_failures": [vars(f).copy() for f in self._http_failures],
                "drop_websockets": vars(self._drop).copy() if self._drop else None,
            }
