"""Outbound HTTP to addresses that users choose: the SSRF guard.

Webhook receivers (and, later, source URLs) are named by tenants, so pixq must never be
talked into connecting to its own cluster: loopback, private and CGNAT ranges, link-local
(with cloud metadata at 169.254.169.254 and fd00:ec2::254), multicast, reserved and
unspecified addresses, IPv6 ULA and link-local, and any IPv6 form that embeds such an IPv4
address (IPv4-mapped, IPv4-compatible, 6to4, NAT64) are all refused.

The check is made on the addresses actually connected to, not on the URL: a hostname is
resolved once, by ``GuardedResolver``, which drops every blocked address from the answer,
and the connection is made only to what is left. So a name that resolves to a public
address when checked and to 127.0.0.1 when connected (DNS rebinding) cannot pass: there is
no second lookup. aiohttp never calls the resolver for an IP literal, so ``check_host``
checks literals before a request, and the connector's socket factory checks every address
once more just before ``connect()`` (defence in depth, whatever path an address took).

``OUTBOUND_ALLOW_PRIVATE_NETWORKS=true`` lifts all of this, for tests and for on-premise
receivers on private networks.
"""

import inspect
import ipaddress
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200"))
"""Cloud instance-metadata endpoints (AWS, AWS IPv6, ECS task metadata, Alibaba): each lies in
a blocked range anyway, and is named here so a refusal says what it protected."""

_EXTRA_BLOCKED = tuple(ipaddress.ip_network(n) for n in (
    "192.0.0.0/24",      # IETF protocol assignments (Python counts parts of it as global)
    "192.88.99.0/24",    # 6to4 relay anycast (deprecated)
    "::/96",             # IPv4-compatible IPv6 (deprecated): ::127.0.0.1
))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class OutboundRefused(OSError):
    """A connection pixq refuses to make: the host is (or resolves only to) a blocked address.

    An OSError, so aiohttp passes it up from its resolver and socket factory; ``refusal``
    finds it again in the exception a request raised."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"refused outbound connection to {host}: {reason}")
        self.host = host
        self.reason = reason


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def blocked_reason(address: IPAddress) -> str | None:
    """Why pixq must not connect to ``address``, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = blocked_reason(embedded)
            return f"{reason} (embedded in {address})" if reason else None
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
    if address in METADATA_ADDRESSES:
        return "cloud metadata address"
    if address.is_loopback:
        return "loopback address"
    if address.is_unspecified:
        return "unspecified address"
    if address.is_link_local:
        return "link-local address"
    if address.is_multicast:
        return "multicast address"
    if address in _CGNAT:
        return "shared (CGNAT) address"
    if address.is_private or any(address in network for network in _EXTRA_BLOCKED):
        return "private or reserved address"
    if address.is_reserved or not address.is_global:
        return "reserved or non-public address"
    return None


def parse_ip(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is a literal (brackets and an IPv6 zone allowed)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_address(host: str, address: str, allow_private: bool) -> None:
    """Raise OutboundRefused unless connecting to ``address`` (resolved from ``host``) is allowed."""
    if allow_private:
        return
    parsed = parse_ip(address)
    reason = "not an IP address" if parsed is None else blocked_reason(parsed)
    if reason:
        raise OutboundRefused(host, f"{address} is a {reason}" if parsed is not None else reason)


def check_host(host: str, allow_private: bool) -> None:
    """Before a request: refuse an IP-literal host in a blocked range (names are checked when
    resolved, by GuardedResolver)."""
    if parse_ip(host) is not None:
        check_address(host, host, allow_private)


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` (aiohttp's default) and keeps only addresses that may be connected to.

    When nothing is left, raises OutboundRefused naming the first blocked address, so the
    caller can record a permanent refusal rather than retry a connection error."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self.inner = inner if inner is not None else DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        first_refusal: OutboundRefused | None = None
        for answer in answers:
            try:
                check_address(host, answer["host"], allow_private=False)
            except OutboundRefused as exc:
                first_refusal = first_refusal or exc
                continue
            allowed.append(answer)
        if not allowed:
            raise first_refusal or OutboundRefused(host, "no address")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


def _guarded_socket(addr_info: Any) -> socket.socket:
    """aiohttp's socket factory: the last check, on the exact address about to be connected to."""
    family, sock_type, proto, _, sockaddr = addr_info
    check_address(str(sockaddr[0]), str(sockaddr[0]), allow_private=False)
    return socket.socket(family=family, type=sock_type, proto=proto)


def connector(allow_private: bool, resolver: AbstractResolver | None = None,
              limit: int = 100) -> aiohttp.TCPConnector:
    """A TCPConnector that connects only to allowed addresses (anything, with ``allow_private``)."""
    if allow_private:
        return aiohttp.TCPConnector(limit=limit, resolver=resolver)
    options: dict[str, Any] = {}
    if "socket_factory" in inspect.signature(aiohttp.TCPConnector).parameters:  # aiohttp >= 3.12
        options["socket_factory"] = _guarded_socket
    return aiohttp.TCPConnector(limit=limit, resolver=GuardedResolver(resolver), **options)


def session(allow_private: bool, resolver: AbstractResolver | None = None, limit: int = 100,
            **options: Any) -> aiohttp.ClientSession:
    """A client session for user-chosen URLs: guarded connector, no proxy or netrc from the
    environment (trust_env=False), no cookie jar shared between receivers."""
    return aiohttp.ClientSession(connector=connector(allow_private, resolver, limit), trust_env=False,
                                 cookie_jar=aiohttp.DummyCookieJar(), **options)


def refusal(exc: BaseException) -> OutboundRefused | None:
    """The OutboundRefused behind a failed request (aiohttp wraps it in a connector error)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OutboundRefused):
            return current
        inner = getattr(current, "os_error", None)
        if isinstance(inner, OutboundRefused):
            return inner
        current = current.__cause__ or current.__context__
    return None
