"""A threading HTTP server that idle or slow clients cannot exhaust, on any address family.

Each connection holds a thread (the stdlib's ThreadingHTTPServer), so their number is capped
and each must send its request within a deadline. At the cap, the connection that has waited
longest without sending its request is dropped to make room: a burst of idle sockets (a port
scan, a slowloris) delays a probe by nothing, and a connection answering a request is never
dropped. IPv6 addresses bind as such; `::` also takes IPv4 where the system allows it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

log = logging.getLogger(__name__)

# Connections served at once, one thread each.
MAX_CONNECTIONS = 32
# Seconds a client has to send its request, and for each read and write after: a probe
# takes milliseconds.
REQUEST_TIMEOUT = 5.0


def url_host(host: str) -> str:
    """`host` as a URL holds it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


class CappedHTTPServer(ThreadingHTTPServer):
    """The stdlib's threading server on any address family, with a cap on connections and
    a deadline for each to send its request (both enforced from the server's own thread)."""

    daemon_threads = True
    # socketserver's 5 would make the kernel drop connections beyond it until the accept loop
    # catches up, and a dropped probe retries its SYN only a second later.
    request_queue_size = socket.SOMAXCONN

    def __init__(
        self,
        host: str,
        port: int,
        handler: type[CappedRequestHandler],
        max_connections: int = MAX_CONNECTIONS,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self.address_family = family
        self.host = host
        self.max_connections = max_connections
        self.request_timeout = timeout
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        # Connections that have not sent their request yet, oldest first, with deadlines.
        self._waiting: dict[socket.socket, float] = {}
        super().__init__(cast("tuple[str, int] | tuple[str, int, int, int]", address), handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.host == "::":
            with contextlib.suppress(AttributeError, OSError):  # dual stack where allowed
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        # Not HTTPServer's, which looks the address up in DNS for a name nothing uses.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.host, self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            admitted = len(self._open) < self.max_connections or self._drop_oldest_waiting()
            if admitted:
                self._open.add(request)
                self._waiting[request] = time.monotonic() + self.request_timeout
        if not admitted:  # every slot is answering a request: this one waits for none
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def answering(self, request: socket.socket) -> None:
        """The request arrived: the connection is no longer one that may be dropped."""
        with self._lock:
            self._waiting.pop(request, None)

    def service_actions(self) -> None:
        # Called by serve_forever at least every poll interval (0.5 s).
        now = time.monotonic()
        with self._lock:
            late = [request for request, deadline in self._waiting.items() if deadline <= now]
            for request in late:
                self._drop(request)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.discard(request)
            self._waiting.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A dropped or vanished client, not a fault of ours: no traceback on stderr.
        log.debug("HTTP request from %s failed", client_address, exc_info=True)

    def _drop_oldest_waiting(self) -> bool:
        oldest = next(iter(self._waiting), None)
        if oldest is not None:
            self._drop(oldest)
        return oldest is not None

    def _drop(self, request: socket.socket) -> None:
        """End a connection's wait: its thread reads end-of-file and closes it."""
        del self._waiting[request]
        self._open.discard(request)
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_RDWR)


class CappedRequestHandler(BaseHTTPRequestHandler):
    """Tells its server when the request has arrived; reads and writes time out."""

    server: CappedHTTPServer

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout)

    def parse_request(self) -> bool:
        parsed = super().parse_request()  # reads the headers: still under the deadline
        self.server.answering(self.request)
        return parsed
