"""Which network addresses job inputs may reach, and what a host name stands for."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence

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
