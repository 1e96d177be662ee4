"""Download an input URL to a file: http(s) only, no private addresses, a size cap, a timeout.

`InputGuard` decides what an input may reach. The fetcher's connections are opened by a
network backend that asks it: the host name is resolved there, every address it resolves to
is checked, and the socket goes to exactly a checked address. So no request, redirect hop or
retry reaches an address that was not checked, and a name that resolves to a public address
for the check and a private one for the connection cannot slip through. Requests keep the
URL's host name, so TLS verifies the certificate for it and the pool keys connections by it:
a connection is reused only for the name its certificate was verified for. Redirects are
followed by hand so that every hop's URL is checked the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

import httpcore
import httpx

from ..exceptions import InputError, InputFetchError, InvalidInputError
from ..settings import Settings
from ..streams import FileSink
from .encoding import ACCEPT_ENCODING, ContentDecoder, DecodeError

MAX_REDIRECTS = 5
SCHEMES = ("http", "https")
# httpx's own defaults: the pool below is built by hand and would otherwise get httpcore's.
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress], bool]
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
"""(host, port) -> the addresses a connection to it may go to."""


# IPv6 prefixes whose last 32 bits are an IPv4 address they reach: NAT64's well-known prefix
# and the deprecated IPv4-compatible and IPv4-translated forms. `is_global` calls
# 64:ff9b::a9fe:a9fe global, yet behind NAT64 it is 169.254.169.254.
EMBEDDING_V4 = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "::/96", "::ffff:0:0:0/96"))
# NAT64's local-use prefix: the operator chooses where the IPv4 address sits, and no public
# host lives there (Python 3.11 still calls it global).
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def public_only(address: IPAddress) -> bool:
    """True for globally routable unicast addresses (no private, loopback, link-local...),
    judged also by the IPv4 address an IPv6 one carries (mapped, 6to4, NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in LOCAL_NAT64:
            return False
        if (inner := embedded_v4(address)) is not None and not public_only(inner):
            return False
    return address.is_global and not address.is_multicast


def embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in net for net in EMBEDDING_V4):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def any_address(address: IPAddress) -> bool:
    return True


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


class Refused(Exception):
    """A connection the guard does not allow. It is raised where connections are opened,
    which knows no input: the fetcher turns it into the input's error."""

    def __init__(self, message: str, *, rule: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.rule = rule
        self.retryable = retryable

    def for_input(self, name: str) -> InputError:
        error = InputFetchError if self.retryable else InvalidInputError
        return error(str(self), input_name=name, rule=self.rule)


class InputGuard:
    """What job inputs may reach: URLs on addresses `allowed` passes (public ones unless the
    deployment allows private ones), `resolver` saying what a host name stands for."""

    def __init__(
        self, *, allowed: AddressPolicy = public_only, resolver: Resolver = system_resolver
    ) -> None:
        self.allowed = allowed
        self.resolver = resolver

    @classmethod
    def from_settings(cls, settings: Settings) -> InputGuard:
        return cls(allowed=any_address if settings.input_allow_private_urls else public_only)

    def url(self, name: str, url: str) -> httpx.URL:
        """`url` parsed, if inputs may be fetched from such a URL; its host's addresses are
        checked when a connection to it is opened (`addresses`)."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise InvalidInputError(
                f"invalid URL {shown(url)!r}: {exc}", input_name=name, rule="url"
            ) from exc
        if parsed.scheme not in SCHEMES:
            raise InvalidInputError(
                f"URL scheme {parsed.scheme or '(none)'!r} is not allowed, only http and https",
                input_name=name,
                rule="url-scheme",
            )
        if not parsed.host:
            raise InvalidInputError(f"URL {shown(url)!r} has no host", input_name=name, rule="url")
        return parsed

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """Where a connection to `host` may go; raises Refused unless every address of it is
        allowed (the connection may go to any of them)."""
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                addresses = list(dict.fromkeys(await self.resolver(host, port)))
                if not addresses:
                    raise OSError("no address")
            except OSError as exc:
                why = f"cannot resolve {host!r}: {exc}"
                raise Refused(why, rule="dns", retryable=True) from exc
        for address in addresses:
            if not self.allowed(address):
                resolved = "" if str(address) == host else f" resolves to {address}, which"
                raise Refused(
                    f"URL host {host!r}{resolved} is a private, loopback or link-local "
                    "address; refused (COMFYUI_INPUT_ALLOW_PRIVATE_URLS=true allows it)",
                    rule="private-address",
                )
        return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the guard allows."""

    def __init__(self, guard: InputGuard) -> None:
        self.guard = guard
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        *others, last = await self.guard.addresses(host, port)
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

    def __init__(self, guard: InputGuard, verify: ssl.SSLContext | None = None) -> None:
        context = verify or httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=context, trust_env=False, limits=LIMITS)
        # httpx 0.28 cannot be given a network backend (encode/httpx#3749): the pool it just
        # built, unused, gives way to one built alike with ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=LIMITS.max_connections,
            max_keepalive_connections=LIMITS.max_keepalive_connections,
            keepalive_expiry=LIMITS.keepalive_expiry,
            network_backend=GuardedBackend(guard),
        )


class UrlFetcher:
    """One pooled httpx client for input downloads (not ComfyUI's: other timeouts, no proxy,
    no cookies kept from one fetch to another).

    `verify` is the TLS context input connections verify servers with (default: certifi's
    authorities).
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout: float,
        guard: InputGuard | None = None,
        verify: ssl.SSLContext | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.guard = guard or InputGuard()
        self._http = httpx.AsyncClient(
            transport=GuardedTransport(self.guard, verify),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            # A jar that takes no cookie: one job's input server must not set what another
            # job's fetch sends. A fetch's own redirect hops share its own jar (`_fetch`).
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            # Only codings `_save` decodes in bounded steps (not whatever httpx could decode).
            headers={"Accept-Encoding": ACCEPT_ENCODING},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def fetch(self, name: str, url: str, dest: Path) -> tuple[int, str]:
        """Stream `url` into `dest`: (size, sha256).

        Raises InvalidInputError, or InputFetchError when a later attempt may succeed.
        """
        try:
            async with asyncio.timeout(self.timeout):
                return await self._fetch(name, url, dest)
        except TimeoutError as exc:
            raise InputFetchError(
                f"downloading {shown(url)} took longer than {self.timeout:g} s",
                input_name=name,
                rule="timeout",
            ) from exc

    async def _fetch(self, name: str, url: str, dest: Path) -> tuple[int, str]:
        cookies = httpx.Cookies()
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send(name, url, cookies)
            try:
                cookies.extract_cookies(response)
                if response.is_redirect and "location" in response.headers:
                    url = str(httpx.URL(url).join(response.headers["location"]))
                    continue
                _check_status(name, url, response)
                return await self._save(name, url, response, dest)
            finally:
                await response.aclose()
        raise InvalidInputError(
            f"more than {MAX_REDIRECTS} redirects from {shown(url)}",
            input_name=name,
            rule="redirects",
        )

    async def _send(self, name: str, url: str, cookies: httpx.Cookies) -> httpx.Response:
        request = self._http.build_request("GET", self.guard.url(name, url), cookies=cookies)
        try:
            return await self._http.send(request, stream=True)
        except Refused as exc:
            raise exc.for_input(name) from exc
        except httpx.TransportError as exc:
            raise InputFetchError(
                f"cannot download {shown(url)}: {type(exc).__name__}: {exc or 'no detail'}",
                input_name=name,
                rule="fetch",
            ) from exc

    async def _save(
        self, name: str, url: str, response: httpx.Response, dest: Path
    ) -> tuple[int, str]:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _too_large(name, url, int(declared), self.max_bytes)
        async with FileSink(dest) as sink:
            try:
                decoder = ContentDecoder(response.headers.get("content-encoding", ""))
                # Raw bytes, decoded here so that the cap counts decoded bytes as they are
                # produced: a small body may inflate without end.
                async for raw in response.aiter_raw():
                    for chunk in decoder.decode(raw):
                        if sink.size + len(chunk) > self.max_bytes:
                            raise _too_large(name, url, sink.size + len(chunk), self.max_bytes)
                        await sink.write(chunk)
                decoder.finish()
            except DecodeError as exc:
                raise InvalidInputError(
                    f"{shown(url)} {exc}", input_name=name, rule="content-encoding"
                ) from exc
            except httpx.TransportError as exc:  # the body broke off: another try may work
                raise InputFetchError(
                    f"downloading {shown(url)} broke off after {sink.size} bytes: "
                    f"{type(exc).__name__}: {exc or 'no detail'}",
                    input_name=name,
                    rule="fetch",
                ) from exc
        return sink.size, sink.sha256


def shown(url: str) -> str:
    """`url` as errors (and so logs and LittleHorse) show it: without a password in it or
    its query, where presigned URLs carry their signature and token."""
    try:
        parsed = httpx.URL(url)
        bare = parsed.copy_with(username=None, password=None, query=None, fragment=None)
    except (httpx.InvalidURL, TypeError, ValueError):
        # Not a URL we can take apart: show its start, never a possible query.
        return url.split("?", 1)[0].rsplit("@", 1)[-1][:200]
    return str(bare) + ("?..." if parsed.query else "")


def _check_status(name: str, url: str, response: httpx.Response) -> None:
    if response.status_code < 300:
        return
    what = f"{shown(url)} answered HTTP {response.status_code}"
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise InputFetchError(what, input_name=name, rule="fetch")
    raise InvalidInputError(what, input_name=name, rule="url-status")


def _too_large(name: str, url: str, size: int, limit: int) -> InvalidInputError:
    return InvalidInputError(
        f"{shown(url)} is larger than COMFYUI_MAX_INPUT_BYTES ({size} > {limit} bytes)",
        input_name=name,
        rule="max-bytes",
    )
