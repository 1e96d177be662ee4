"""Input URLs: downloads from a loopback server, and every rule that refuses one."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

import pytest

from comfyui_worker.exceptions import InputFetchError, InvalidInputError
from comfyui_worker.media.addresses import IPAddress, any_address, public_only
from comfyui_worker.media.fetch import InputGuard, UrlFetcher
from http_files import FileServer

PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 1000


def fetcher(**kwargs: object) -> UrlFetcher:
    options: dict[str, object] = {
        "max_bytes": 100_000,
        "timeout": 10,
        "guard": InputGuard(allowed=any_address),
    }
    options.update(kwargs)
    return UrlFetcher(**options)  # type: ignore[arg-type]


async def test_downloads_to_the_file_with_size_and_sha256(
    file_server: FileServer, tmp_path: Path
) -> None:
    file_server.files["a.png"] = PNG
    f = fetcher()
    size, sha = await f.fetch("photo.png", file_server.file_url("a.png"), tmp_path / "x")
    await f.aclose()
    assert (tmp_path / "x").read_bytes() == PNG
    assert (size, sha) == (len(PNG), hashlib.sha256(PNG).hexdigest())


async def test_follows_redirects_checking_each_hop(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files["a.png"] = PNG
    target = file_server.file_url("a.png")
    f = fetcher()
    await f.fetch("p", f"{file_server.url}/redirect?to={target}", tmp_path / "x")
    assert (tmp_path / "x").read_bytes() == PNG
    # A policy that allows the first address but not where the redirect leads.
    only_first = fetcher(guard=InputGuard(allowed=lambda a: a == ipaddress.ip_address("127.0.0.1")))
    elsewhere = file_server.file_url("a.png", host="127.0.0.2")
    with pytest.raises(InvalidInputError) as err:
        await only_first.fetch(
            "mask.png", f"{file_server.url}/redirect?to={elsewhere}", tmp_path / "y"
        )
    assert err.value.rule == "private-address" and "127.0.0.2" in str(err.value)
    assert "input 'mask.png'" in str(err.value)
    await f.aclose()
    await only_first.aclose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:9/x.png", "URL host '127.0.0.1' is a private, loopback"),
        ("http://localhost:9/x.png", "'localhost' resolves to"),
        ("http://[::1]:9/x.png", "loopback or link-local"),
        ("http://169.254.169.254/latest/meta-data", "'169.254.169.254' is a private"),
        ("http://10.0.0.1/x", "'10.0.0.1' is a private"),
        ("http://[::ffff:192.168.0.1]/x", "is a private"),
    ],
)
async def test_private_addresses_are_refused_by_default(
    url: str, says: str, tmp_path: Path
) -> None:
    f = UrlFetcher(max_bytes=1000, timeout=5)
    with pytest.raises(InvalidInputError) as err:
        await f.fetch("photo.png", url, tmp_path / "x")
    await f.aclose()
    assert err.value.rule == "private-address"
    assert says in str(err.value) and "COMFYUI_INPUT_ALLOW_PRIVATE_URLS" in str(err.value)


def test_public_only_policy() -> None:
    def ok(text: str) -> bool:
        address: IPAddress = ipaddress.ip_address(text)
        return public_only(address)

    assert ok("93.184.216.34") and ok("2606:2800:220:1::1")
    for private in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1",
                    "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::1", "224.0.0.1",
                    "::ffff:127.0.0.1"):  # fmt: skip
        assert not ok(private), private


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254 (cloud metadata)
        "64:ff9b:1::a00:1",  # local-use NAT64
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "::127.0.0.1",  # IPv4-compatible
        "::ffff:0:a9fe:a9fe",  # IPv4-translated
    ],
)
async def test_ipv6_forms_of_private_ipv4_addresses_are_refused(
    address: str, tmp_path: Path
) -> None:
    # Python calls these global; each reaches the private IPv4 address inside it.
    assert not public_only(ipaddress.ip_address(address))
    f = UrlFetcher(max_bytes=1000, timeout=5)
    with pytest.raises(InvalidInputError) as err:
        await f.fetch("photo.png", f"http://[{address}]/x.png", tmp_path / "x")
    await f.aclose()
    assert err.value.rule == "private-address" and address in str(err.value)


def test_ipv6_forms_of_public_ipv4_addresses_stay_allowed() -> None:
    for public in ("64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"):
        assert public_only(ipaddress.ip_address(public)), public


@pytest.mark.parametrize(
    ("url", "rule", "says"),
    [
        ("ftp://example.com/x.png", "url-scheme", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "url-scheme", "scheme 'file' is not allowed"),
        ("/relative.png", "url-scheme", "scheme '(none)'"),
    ],
)
async def test_other_schemes_are_refused(url: str, rule: str, says: str, tmp_path: Path) -> None:
    f = fetcher()
    with pytest.raises(InvalidInputError) as err:
        await f.fetch("x.png", url, tmp_path / "x")
    await f.aclose()
    assert err.value.rule == rule and says in str(err.value)


async def test_http_errors(file_server: FileServer, tmp_path: Path) -> None:
    f = fetcher()
    with pytest.raises(InvalidInputError) as missing:
        await f.fetch("x.png", file_server.file_url("nope.png"), tmp_path / "x")
    assert missing.value.rule == "url-status" and "answered HTTP 404" in str(missing.value)
    with pytest.raises(InputFetchError) as unavailable:  # retryable
        await f.fetch("x.png", f"{file_server.url}/status/503", tmp_path / "x")
    assert "HTTP 503" in str(unavailable.value)
    with pytest.raises(InputFetchError) as refused:
        await f.fetch("x.png", "http://127.0.0.1:9/x.png", tmp_path / "x")
    assert "cannot download" in str(refused.value)
    await f.aclose()


async def test_size_cap_while_streaming(file_server: FileServer, tmp_path: Path) -> None:
    file_server.files["big.png"] = b"x" * 100_001
    f = fetcher()
    with pytest.raises(InvalidInputError) as declared:
        await f.fetch("big.png", file_server.file_url("big.png"), tmp_path / "x")
    assert declared.value.rule == "max-bytes" and "100001 > 100000" in str(declared.value)
    with pytest.raises(InvalidInputError) as streamed:  # no Content-Length to go by
        await f.fetch("big.png", f"{file_server.url}/endless", tmp_path / "x")
    assert streamed.value.rule == "max-bytes"
    assert (tmp_path / "x").stat().st_size <= 100_000
    await f.aclose()


async def test_a_body_cut_short_is_retryable_and_names_the_input(
    file_server: FileServer, tmp_path: Path
) -> None:
    f = fetcher(max_bytes=1_000_000)
    with pytest.raises(InputFetchError) as err:
        await f.fetch("photo.png", f"{file_server.url}/truncated", tmp_path / "x")
    await f.aclose()
    assert err.value.rule == "fetch" and "input 'photo.png'" in str(err.value)
    assert f"downloading {file_server.url}/truncated broke off" in str(err.value)


async def test_timeout_is_retryable(file_server: FileServer, tmp_path: Path) -> None:
    f = fetcher(timeout=0.5)
    with pytest.raises(InputFetchError) as err:
        await f.fetch("x.png", f"{file_server.url}/slow", tmp_path / "x")
    await f.aclose()
    assert err.value.rule == "timeout" and "0.5 s" in str(err.value)


async def test_redirect_loops_end(file_server: FileServer, tmp_path: Path) -> None:
    f = fetcher()
    with pytest.raises(InvalidInputError) as err:
        await f.fetch("x.png", f"{file_server.url}/loop", tmp_path / "x")
    await f.aclose()
    assert err.value.rule == "redirects" and "more than 5 redirects" in str(err.value)


async def test_a_name_with_several_addresses_tries_each(
    file_server: FileServer, tmp_path: Path
) -> None:
    # localhost may resolve to ::1 as well as 127.0.0.1; only 127.0.0.1 listens.
    file_server.files["a.png"] = PNG
    f = fetcher()
    size, _ = await f.fetch(
        "a.png", file_server.file_url("a.png", host="localhost"), tmp_path / "x"
    )
    await f.aclose()
    assert size == len(PNG) and file_server.requests == ["/files/a.png"]


async def test_errors_never_show_a_password_or_a_presigned_signature(
    file_server: FileServer, tmp_path: Path
) -> None:
    file_server.files["big.png"] = b"x" * 100_001
    secret = "?X-Amz-Signature=s3cr3tsig&X-Amz-Security-Token=t0ken"
    f = fetcher()
    errors = []
    for url in (
        file_server.file_url("nope.png") + secret,  # 404
        file_server.file_url("big.png") + secret,  # over the cap
        "http://alice:pa55word@127.0.0.1:9/x.png" + secret,  # unreachable
    ):
        with pytest.raises((InvalidInputError, InputFetchError)) as err:
            await f.fetch("x.png", url, tmp_path / "x")
        errors.append(str(err.value))
    await f.aclose()
    for message in errors:
        assert not any(s in message for s in ("s3cr3tsig", "t0ken", "pa55word")), message
    assert "/files/nope.png?... answered HTTP 404" in errors[0]
    assert "/files/big.png?... is larger than" in errors[1]
    assert "cannot download http://127.0.0.1:9/x.png?..." in errors[2]
