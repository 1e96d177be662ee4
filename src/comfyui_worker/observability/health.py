"""`serve`'s health server: /healthz, /readyz, /metrics and /jobs on a small HTTP server.

It runs in a daemon thread (the stdlib's ThreadingHTTPServer: no web framework in `serve`'s
memory) and never touches the event loop's state except through thread-safe reads: the
readiness source's flags, the metrics registry and the jobs board. /healthz proves the loop
still answers by scheduling a no-op on it with a short timeout.

It binds IPv4, IPv6 or a host name, and idle or slow clients cannot lock probes out
(`http_server`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from ..exceptions import ConfigurationError
from ..settings import Settings
from . import metrics
from .http_server import (
    MAX_CONNECTIONS,
    REQUEST_TIMEOUT,
    CappedHTTPServer,
    CappedRequestHandler,
    url_host,
)
from .progress import JOBS, JobBoard

log = logging.getLogger(__name__)

# How long the event loop may take to run a no-op before /healthz calls it stuck. A blocking
# call on the loop is a bug; a loop this late is not serving tasks either.
LOOP_TIMEOUT = 2.0


class Readiness(Protocol):
    """What /readyz and the readiness metrics read: the LittleHorse supervisor's state.
    Read from the health server's thread, so plain attribute reads only."""

    @property
    def polling(self) -> bool: ...

    @property
    def draining(self) -> bool: ...

    @property
    def comfyui_ready(self) -> bool: ...

    @property
    def lh_reconnects(self) -> int: ...


def readiness_checks(source: Readiness) -> dict[str, bool]:
    return {
        "comfyui": source.comfyui_ready,
        "littlehorse_polling": source.polling,
        "not_draining": not source.draining,
    }


class ReadinessCollector(Collector):
    """The readiness source's state as metrics, read at scrape time: one source of truth."""

    def __init__(self, source: Readiness) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        source = self.source
        for name, help_text, on in (
            ("comfyui_up", "1 while ComfyUI answers its health check", source.comfyui_ready),
            ("littlehorse_polling", "1 while a poll stream to LittleHorse is open", source.polling),
            (
                "draining",
                "1 while the worker drains (no new tasks) before exiting",
                source.draining,
            ),
        ):
            yield GaugeMetricFamily(metrics.PREFIX + name, help_text, value=float(on))
        yield CounterMetricFamily(
            metrics.PREFIX + "littlehorse_reconnects",
            "Poll connections to LittleHorse replaced after they ended",
            value=float(source.lh_reconnects),
        )


class HealthServer:
    """Binds at construction (a port in use fails at once), serves after `start()`."""

    def __init__(
        self,
        host: str,
        port: int,
        readiness: Readiness,
        loop: asyncio.AbstractEventLoop,
        *,
        board: JobBoard = JOBS,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.readiness = readiness
        self.loop = loop
        self.board = board
        self.collector = ReadinessCollector(readiness)
        self._httpd = CappedHTTPServer(host, port, _Handler, max_connections, request_timeout)
        self._httpd.health = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="health-server", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{url_host(self._httpd.host)}:{self.port}"

    def start(self) -> None:
        metrics.REGISTRY.register(self.collector)
        self._thread.start()

    def close(self) -> None:
        """Stop serving; blocking for up to the server's poll interval (0.5 s)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            metrics.REGISTRY.unregister(self.collector)
        self._httpd.server_close()

    # -- answers (called on the server's threads) -------------------------------------

    def loop_answers(self) -> bool:
        answered = threading.Event()
        try:
            self.loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # the loop is closed
            return False
        return answered.wait(LOOP_TIMEOUT)

    def healthz(self) -> tuple[HTTPStatus, dict[str, Any]]:
        if self.loop_answers():
            return HTTPStatus.OK, {"status": "ok"}
        return HTTPStatus.SERVICE_UNAVAILABLE, {
            "status": "failing",
            "failed": ["event_loop"],
            "message": f"the event loop did not answer within {LOOP_TIMEOUT:g} s",
        }

    def readyz(self) -> tuple[HTTPStatus, dict[str, Any]]:
        checks = readiness_checks(self.readiness)
        checks["event_loop"] = self.loop_answers()
        failed = [name for name, ok in checks.items() if not ok]
        status = HTTPStatus.SERVICE_UNAVAILABLE if failed else HTTPStatus.OK
        return status, {"ready": not failed, "failed": failed, "checks": checks}


class _Handler(CappedRequestHandler):
    server_version = "comfyui-worker"

    def do_GET(self) -> None:
        health: HealthServer = self.server.health  # type: ignore[attr-defined]
        path = self.path.partition("?")[0]
        if path == "/metrics":
            # The classic text format every Prometheus (2.x and 3.x) scrapes; our names need
            # none of 1.0.0's escaping.
            self._send(HTTPStatus.OK, metrics.render(), CONTENT_TYPE_PLAIN_0_0_4)
        elif path == "/healthz":
            self._json(*health.healthz())
        elif path == "/readyz":
            self._json(*health.readyz())
        elif path == "/jobs":
            self._json(HTTPStatus.OK, health.board.snapshot())
        else:
            self._json(
                HTTPStatus.NOT_FOUND,
                {"error": f"no such path {path!r}; try /healthz, /readyz, /metrics or /jobs"},
            )

    def _json(self, status: HTTPStatus, body: object) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # One line per probe every few seconds would drown the job's log lines.
        log.debug("%s " + format, self.client_address[0], *args)


def open_health_server(
    settings: Settings, readiness: Readiness, loop: asyncio.AbstractEventLoop
) -> HealthServer | None:
    """The bound server, or None when COMFYUI_WORKER_HEALTH_PORT is 0. A port in use or an
    address that cannot be bound is a ConfigurationError naming both variables."""
    if settings.worker_health_port == 0:
        return None
    host, port = settings.worker_health_host, settings.worker_health_port
    try:
        return HealthServer(host, port, readiness, loop)
    except OSError as exc:
        raise ConfigurationError(
            f"COMFYUI_WORKER_HEALTH_PORT={port} / COMFYUI_WORKER_HEALTH_HOST={host}: cannot "
            f"listen on {url_host(host)}:{port} for the health server "
            f"({exc.strerror or exc}); choose a free port, or 0 to turn the health server off"
        ) from exc
