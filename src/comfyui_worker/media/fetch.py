"""Job inputs from the network: the guard every input fetch goes through, and the URL fetcher.

`InputGuard` decides what an input may reach. A `url`: http(s) only, and connections only to
addresses its policy allows (public ones unless the deployment allows private ones), checked
on every address a name resolves to when a connection is opened (`connections.py`), so no
request, redirect hop or retry reaches an address that was not checked, and a name that
resolves to a public address for the check and a private one for the connection cannot slip
through. Redirects are followed by hand so that every hop's URL is checked the same way.

A `uri`: only an object-store scheme, and only in a store the deployment configured (its
output store's bucket, or COMFYUI_INPUT_STORES). The object store's client is built for that
configured store, so the endpoint it connects to is the deployment's own (AWS_ENDPOINT_URL,
the cloud's default) and trusted as such: no part of a job's input ever chooses one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Iterable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

import httpx

from ..exceptions import InputError, InputFetchError, InvalidInputError
from ..settings import STORE_SCHEMES, Settings
from ..streams import FileSink
from .addresses import AddressPolicy, IPAddress, Resolver, any_address, public_only, system_resolver
from .connections import GuardedTransport
from .encoding import ACCEPT_ENCODING, ContentDecoder, DecodeError
from .location import Location

MAX_REDIRECTS = 5
SCHEMES = ("http", "https")


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
    """What job inputs may reach: URLs on addresses `allowed` passes, `resolver` saying what a
    host name stands for, and objects in `stores`."""

    def __init__(
        self,
        *,
        allowed: AddressPolicy = public_only,
        resolver: Resolver = system_resolver,
        stores: Iterable[Location] = (),
    ) -> None:
        self.allowed = allowed
        self.resolver = resolver
        self.stores = tuple(stores)

    @classmethod
    def from_settings(cls, settings: Settings) -> InputGuard:
        stores = [Location.parse(store) for store in settings.input_stores]
        if not stores and settings.output_store:
            output = Location.parse(settings.output_store)
            stores = [Location(output.scheme, output.bucket, "")]
        return cls(
            allowed=any_address if settings.input_allow_private_urls else public_only,
            stores=stores,
        )

    def store_location(self, name: str, uri: str) -> Location:
        """Where the object `uri` names, if it is in one of the allowed stores."""
        scheme = uri.partition(":")[0].lower() if ":" in uri else ""
        if scheme not in STORE_SCHEMES:
            raise InvalidInputError(
                f"URI scheme {scheme or '(none)'!r} is not an object store's; a uri input "
                f"takes {', '.join(STORE_SCHEMES)} (an http(s) URL goes in 'url')",
                input_name=name,
                rule="uri-scheme",
            )
        try:
            where = Location.parse(uri)
        except ValueError as exc:
            raise InvalidInputError(
                f"cannot use object-store URI {shown(uri)!r}: {exc}", input_name=name, rule="uri"
            ) from exc
        if not where.key or any(part in (".", "..") for part in where.key.split("/")):
            raise InvalidInputError(
                f"object-store URI {shown(uri)!r} names no object (an empty key, or '.' or "
                "'..' in it)",
                input_name=name,
                rule="uri",
            )
        if not any(store.holds(where) for store in self.stores):
            allowed = ", ".join(store.uri().rstrip("/") for store in self.stores) or "none"
            raise InvalidInputError(
                f"{shown(uri)} is not in a store this worker reads inputs from ({allowed}; "
                "COMFYUI_INPUT_STORES lists them, by default the bucket of COMFYUI_OUTPUT_STORE)",
                input_name=name,
                rule="uri-store",
            )
        return where

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
            transport=GuardedTransport(self.guard.addresses, verify),
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
