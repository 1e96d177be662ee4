"""Download an input URL to a file: http(s) only, no private addresses, a size cap, a timeout.

The address check runs on what the name resolves to, and the connection goes to exactly that
address (the URL's host stays in the Host header and TLS SNI, so certificates still verify):
a name that resolves to a public address for the check and a private one for the connection
cannot slip through. Redirects are followed by hand so that every hop is checked the same way.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path

import httpx

from ..exceptions import InputFetchError, InvalidInputError
from ..streams import FileSink

MAX_REDIRECTS = 5
SCHEMES = ("http", "https")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress], bool]


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


class UrlFetcher:
    """One pooled httpx client for input downloads (not ComfyUI's: other timeouts, no proxy)."""

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout: float,
        allowed: AddressPolicy = public_only,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.allowed = allowed
        # trust_env off: an HTTP(S)_PROXY would connect for us, to an address we never checked.
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False
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
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send(name, url, await self._pinned_requests(name, url))
            try:
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

    async def _send(self, name: str, url: str, requests: list[httpx.Request]) -> httpx.Response:
        """The first address that accepts a connection answers, as a browser tries them."""
        for i, request in enumerate(requests):
            try:
                return await self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.ConnectError) and i + 1 < len(requests):
                    continue
                raise InputFetchError(
                    f"cannot download {shown(url)}: {type(exc).__name__}: {exc or 'no detail'}",
                    input_name=name,
                    rule="fetch",
                ) from exc
        raise AssertionError("a host resolves to at least one address")

    async def _pinned_requests(self, name: str, url: str) -> list[httpx.Request]:
        """GETs of `url`, one per checked address of its host, each connecting to it."""
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
        requests = []
        for address in await self._resolve(name, parsed):
            request = self._http.build_request("GET", parsed)  # Host header from the URL
            request.url = parsed.copy_with(host=str(address))
            request.extensions["sni_hostname"] = parsed.host
            requests.append(request)
        return requests

    async def _resolve(self, name: str, url: httpx.URL) -> list[IPAddress]:
        host = url.host
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host,
                    url.port or (443 if url.scheme == "https" else 80),
                    type=socket.SOCK_STREAM,
                )
            except OSError as exc:
                raise InputFetchError(
                    f"cannot resolve {host!r}: {exc}", input_name=name, rule="dns"
                ) from exc
            # Every address must pass: the connection may go to any of them.
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        for address in addresses:
            if not self.allowed(address):
                resolved = "" if str(address) == host else f" resolves to {address}, which"
                raise InvalidInputError(
                    f"URL host {host!r}{resolved} is a private, loopback or link-local "
                    "address; refused (COMFYUI_INPUT_ALLOW_PRIVATE_URLS=true allows it)",
                    input_name=name,
                    rule="private-address",
                )
        return addresses

    async def _save(
        self, name: str, url: str, response: httpx.Response, dest: Path
    ) -> tuple[int, str]:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _too_large(name, url, int(declared), self.max_bytes)
        async with FileSink(dest) as sink:
            try:
                async for chunk in response.aiter_bytes():
                    if sink.size + len(chunk) > self.max_bytes:
                        raise _too_large(name, url, sink.size + len(chunk), self.max_bytes)
                    await sink.write(chunk)
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
