"""The process's Prometheus metrics (prefix `comfyui_worker_`), in one registry of our own.

This module sits on the bottom floor: the HTTP client, the executor and the task record into
it directly, and the health server's `/metrics` renders it. prometheus-client's metrics are
thread-safe, so the health server's thread reads them while the event loop writes.
"""

from __future__ import annotations

import platform
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

from .. import __version__
from ..constants import JobOutcome

REGISTRY = CollectorRegistry()
# process_resident_memory_bytes and friends: the first thing to watch on a long-lived sidecar.
ProcessCollector(registry=REGISTRY)

PREFIX = "comfyui_worker_"
# Seconds: milliseconds of overhead up to the job deadline's scale (30 min by default).
_LONG_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
_SHORT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

BUILD_INFO = Gauge(
    PREFIX + "build_info",
    "Always 1: the worker's version and the Python it runs on",
    ["version", "python"],
    registry=REGISTRY,
)
BUILD_INFO.labels(version=__version__, python=platform.python_version()).set(1)
# Both bounded: `task` is a TaskDef this worker serves, `template` a name from the template
# store's manifest (empty for jobs without a template, or whose template did not bind).
JOB_LABELS = ("task", "template")
JOBS_FINISHED = Counter(
    PREFIX + "jobs_finished",
    "Jobs finished, by TaskDef, template, outcome (success, business_exception, failed, "
    "cancelled) and exception (the LittleHorse exception name, or the error type of a "
    "retryable failure)",
    [*JOB_LABELS, "outcome", "exception"],
    registry=REGISTRY,
)
JOBS_IN_FLIGHT = Gauge(
    PREFIX + "jobs_in_flight",
    "Jobs this process holds: waiting for a slot, queued or running in ComfyUI",
    registry=REGISTRY,
)
SLOT_WAIT = Histogram(
    PREFIX + "slot_wait_seconds",
    "Time a job waited here for one of COMFYUI_MAX_IN_FLIGHT slots",
    buckets=_LONG_BUCKETS,
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    PREFIX + "comfyui_queue_wait_seconds",
    "Time from submitting a prompt to ComfyUI starting it (ComfyUI's execution_start)",
    buckets=_LONG_BUCKETS,
    registry=REGISTRY,
)
EXECUTION = Histogram(
    PREFIX + "execution_seconds",
    "ComfyUI's own execution time: execution_start to its end event, by ComfyUI's clock",
    buckets=_LONG_BUCKETS,
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    PREFIX + "job_duration_seconds",
    "End to end, by TaskDef and template: from the task starting here to its result or failure",
    JOB_LABELS,
    buckets=_LONG_BUCKETS,
    registry=REGISTRY,
)
COMFYUI_QUEUE = Gauge(
    PREFIX + "comfyui_queue_remaining",
    "Prompts ComfyUI holds, running and pending, from every client (its exec_info), as last "
    "read by the readiness check (every few seconds); an autoscaler's measure of backlog",
    registry=REGISTRY,
)
COMPLETION_LATENCY = Histogram(
    PREFIX + "completion_detection_seconds",
    "From ComfyUI's execution_success timestamp to this worker holding the result",
    buckets=_SHORT_BUCKETS,
    registry=REGISTRY,
)
WS_RECONNECTS = Counter(
    PREFIX + "websocket_reconnects",
    "ComfyUI websockets reopened after a drop during a job",
    registry=REGISTRY,
)
WS_FALLBACKS = Counter(
    PREFIX + "websocket_fallbacks",
    "Jobs that fell back to polling because the websocket could not be (re)opened",
    registry=REGISTRY,
)
HTTP_RETRIES = Counter(
    PREFIX + "http_retries",
    "Retried HTTP requests to ComfyUI, by endpoint",
    ["endpoint"],
    registry=REGISTRY,
)
COMFYUI_RESTARTS = Counter(
    PREFIX + "comfyui_restarts",
    "Times ComfyUI answered again after being unreachable",
    registry=REGISTRY,
)
OUTPUTS_DELIVERED = Counter(
    PREFIX + "outputs_delivered",
    "Output files delivered by successful jobs",
    registry=REGISTRY,
)
OUTPUT_BYTES = Counter(
    PREFIX + "output_bytes_delivered",
    "Bytes of the output files delivered by successful jobs",
    registry=REGISTRY,
)


def endpoint_label(what: str) -> str:
    """`GET /history/<id>` -> `GET /history/{id}`: one label per endpoint, not per prompt."""
    method, _, path = what.partition(" ")
    head, sep, _rest = path.lstrip("/").partition("/")
    return f"{method} /{head}" + ("/{id}" if sep else "")


def record_http_retry(what: str) -> None:
    HTTP_RETRIES.labels(endpoint=endpoint_label(what)).inc()


def record_finished(
    outcome: JobOutcome, exception: str, started: float, *, task: str = "", template: str = ""
) -> None:
    """`started` is a `time.monotonic()` reading from when the task began; `task` the TaskDef
    (empty for `run`), `template` the bound template's name."""
    JOBS_FINISHED.labels(
        task=task, template=template, outcome=outcome.value, exception=exception
    ).inc()
    JOB_DURATION.labels(task=task, template=template).observe(max(0.0, time.monotonic() - started))


def record_delivered(count: int, size: int) -> None:
    OUTPUTS_DELIVERED.inc(count)
    OUTPUT_BYTES.inc(size)


def render() -> bytes:
    """The Prometheus text exposition of everything above."""
    return generate_latest(REGISTRY)
