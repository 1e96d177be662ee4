"""The input fetcher's connections: opened only to addresses its guard allows.

httpx connects to whatever the URL's host resolves to when it opens a connection. This
transport's network backend asks for the addresses instead (`InputGuard.addresses`, which
resolves the name and checks every address) and connects to exactly one of them. Requests
keep the URL's host name, so TLS verifies the certificate for it and the pool keys
connections by it: a connection is reused only for the name its certificate was verified for,
and never reaches an address that was not checked.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Awaitable, Callable, Iterable

import httpcore
import httpx

from .addresses import IPAddress

# httpx's own defaults: the pool below is built by hand and would otherwise get httpcore's.
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)

AddressLookup = Callable[[str, int], Awaitable[list[IPAddress]]]
"""(host, port) -> the addresses a connection may go to; raises to refuse the connection."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to the addresses `lookup` gives."""

    def __init__(self, lookup: AddressLookup) -> None:
        self.lookup = lookup
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        *others, last = await self.lookup(host, port)
        # The first address that accepts a connection answers, as a browser tries them.
        for address in others:
            with contextlib.suppress(httpcore.ConnectError):
                return await self._backend.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
        return await self._backend.connect_tcp(
            str(last), port, timeout, local_address, socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on a pool whose connections `GuardedBackend` opens. No proxy from
    the environment: it would connect for us, to an address we never checked."""

    def __init__(self, lookup: AddressLookup, verify: ssl.SSLContext | None = None) -> None:
        context = verify or httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=context, trust_env=False, limits=LIMITS)
        # httpx 0.28 cannot be given a network backend (encode/httpx#3749): the pool it just
        # built, unused, gives way to one built alike with ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=LIMITS.max_connections,
            max_keepalive_connections=LIMITS.max_keepalive_connections,
            keepalive_expiry=LIMITS.keepalive_expiry,
            network_backend=GuardedBackend(lookup),
        )
