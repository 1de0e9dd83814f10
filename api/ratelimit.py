"""Request rate limits per client IP and per tenant, counted in Redis by the ``limits`` library.

What is limited (docs/api.md, "Rate limits"):

- every route except /health/*, /metrics, /docs and /api/v1/openapi.json, per client IP
  (RATE_LIMIT_PER_IP), checked BEFORE authentication, so key guessing and unauthenticated
  floods are limited too (``limit_by_ip``, placed before ``api.middleware.authenticate``);
- /api/v1/* also per tenant (the tenant's ``settings.rate_limit`` in TENANTS_FILE, else
  RATE_LIMIT), checked after authentication (``limit_by_tenant``, placed after it).

Over a limit, the request is refused with 429 RATE_LIMITED and ``Retry-After`` (whole seconds);
nothing else runs. Counters live in Redis (REDIS_URL, with its credentials and TLS), so every API
replica shares one budget per tenant and per IP.

Strategy: ``limits``' sliding window counter. Per limit it keeps two integers (this window's and
the last one's count) and admits a request when ``last * (time left of it) / window + this``
stays under the amount: one Lua script (one round trip) to hit, one to read what the headers
report. The fixed window costs the same round trips but admits up to twice the amount across
a window boundary; the moving window is exact but stores one entry per request (a
``5000/minute`` limit keeps 5000 timestamps per key and scans them on every hit). A rejected
hit is not counted, so a client that waits ``Retry-After`` gets through. Per request: one round
trip per limited kind (IP, then tenant) with a single limit, the default shape (the hit and the
read pipelined); a kind with a ``;`` list of limits takes one per limit plus one for the reads.

Headers (draft-ietf-httpapi-ratelimit-headers-11, May 2026, structured fields): every limited
response — 2xx, errors and the 429 itself — carries ``RateLimit-Policy`` (the configured
quotas: ``"ip";q=200;w=1, "tenant";q=100;w=1``) and ``RateLimit`` (what is left:
``"ip";r=199;t=1, "tenant";r=57;t=1``; ``t`` is the seconds until some quota comes back).
A kind with several limits names each by its window (``"tenant-1s"``, ``"tenant-3600s"``).
Exempt routes carry neither; a limit set to ``off`` is left out.

Failing OPEN: each check is bounded by RATE_LIMIT_TIMEOUT. When Redis is slow or failing the
request goes through unlimited, and for COOL_OFF_SECONDS afterwards no check is tried at all
(a dead Redis adds RATE_LIMIT_TIMEOUT to one request per cool-off, not to every request); one
warning is logged per cool-off and pixq_api_rate_limit_unchecked_total counts every unchecked
request. Why open: rate limits protect capacity, they are not authentication; refusing every
submit because the limiter's store is down would turn a Redis hiccup into a full outage, while
the damage an unlimited client can do meanwhile is still bounded by the job quota
(MAX_JOBS_IN_FLIGHT), MAX_REQUEST_BYTES and the workers' capacity. An unchecked response carries
``RateLimit-Policy`` but no ``RateLimit`` item for the unchecked kind: the server does not know
what is left, and a client can tell.

Client IP: the peer address. ``X-Forwarded-For`` counts only when the peer is in
TRUSTED_PROXIES; then the client is the right-most address in it that is not a trusted proxy
(addresses left of it are whatever the client chose to send). IPv6 clients are counted per /64,
the block one subscriber usually holds, so rotating addresses inside it gains nothing.
"""

import asyncio
import functools
import ipaddress
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import redis.asyncio as redis
from redis.exceptions import NoScriptError
import structlog
from aiohttp import web
from limits import RateLimitItem
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from api.metrics import RATE_LIMIT_UNCHECKED, RATE_LIMITED_REQUESTS
from api.middleware import TENANT
from pixq import names
from pixq.errors import ErrorCode, PixqError
from pixq.settings import IpNetwork, Settings, parse_networks, parse_rate_limit
from pixq.transport import redis_client

log = structlog.get_logger("pixq.api")

IP, TENANT_KIND = "ip", "tenant"
"""The two limit kinds: names of their header items and values of the metrics' ``kind`` label."""
EXEMPT_PATHS = frozenset({"/metrics", "/docs", "/api/v1/openapi.json"})
EXEMPT_PREFIXES = ("/health/", "/docs/")
"""Never limited: probes and scrapes must not compete with clients for a budget, and the
contract and its docs page are static."""
COOL_OFF_SECONDS = 2.0
"""After a failed check, how long no check is tried (failing open without waiting on Redis)."""


@dataclass(frozen=True)
class Policy:
    """One configured limit: its header name and the ``limits`` item that counts it."""

    kind: str
    name: str
    item: RateLimitItem

    @property
    def window(self) -> int:
        return self.item.get_expiry()

    def header_item(self) -> str:
        return f'"{self.name}";q={self.item.amount};w={self.window}'


@functools.cache
def policies(kind: str, text: str) -> tuple[Policy, ...]:
    """The policies of a RATE_LIMIT-style value (validated at start, so this parse cannot fail
    on a running server); cached, since tenants share a few distinct values."""
    items = parse_rate_limit(text)
    single = len(items) == 1
    return tuple(Policy(kind, kind if single else f"{kind}-{item.get_expiry()}s", item) for item in items)


@dataclass(frozen=True)
class Remaining:
    """What is left of one policy after this request: the ``RateLimit`` item."""

    policy: Policy
    remaining: int
    reset_in: int
    """Whole seconds until some of the quota comes back."""

    def header_item(self) -> str:
        return f'"{self.policy.name}";r={self.remaining};t={self.reset_in}'


@dataclass
class RateState:
    """The request's limits so far, written into its response's headers by ``add_headers``."""

    policies: list[Policy] = field(default_factory=list)
    remaining: list[Remaining] = field(default_factory=list)


RATE_STATE = web.RequestKey("rate_limit_state", RateState)


@dataclass
class Verdict:
    """One kind's answer: admitted or not, what is left of each limit, and if not, which limit
    refused and when to retry."""

    allowed: bool
    remaining: list[Remaining]
    retry_after: int = 0
    over: Policy | None = None


class RateLimiter:
    """Checks limits in Redis, bounded in time, failing open with a cool-off."""

    def __init__(self, settings: Settings, client: redis.Redis, cool_off: float = COOL_OFF_SECONDS) -> None:
        self.settings = settings
        self.client = client
        self.timeout = settings.rate_limit_timeout
        self.cool_off = cool_off
        self.trusted = parse_networks(settings.trusted_proxies)
        self.ip_policies = policies(IP, settings.rate_limit_per_ip)
        # Its own pool (same URL, credentials and TLS as the status store, and with REDIS_SENTINELS
        # its own Sentinel client that follows a failover): during a Redis stall, connections
        # held by abandoned checks never take the slots job-status writes need.
        storage = RedisStorage(LIMITS_URI, implementation="redispy",
                               key_prefix=names.RATE_LIMIT_KEY_PREFIX, connection_pool=client.connection_pool)
        self.storage = storage
        self.strategy = SlidingWindowCounterRateLimiter(storage)
        self._skip_until = 0.0
        self._pipelined = all(hasattr(storage.bridge, name) for name in _BRIDGE_NEEDS) and all(
            hasattr(storage, name) for name in ("_previous_window_key", "_current_window_key"))
        """Whether this ``limits`` exposes what ``_hit_pipelined`` reuses (limits 5.x does);
        otherwise every check takes the two-round-trip path, which behaves the same."""

    @classmethod
    def from_settings(cls, settings: Settings) -> "RateLimiter":
        return cls(settings, redis_client(settings))

    async def close(self) -> None:
        await self.client.aclose()

    def tenant_policies(self, own: str | None) -> tuple[Policy, ...]:
        return policies(TENANT_KIND, self.settings.rate_limit if own is None else own)

    async def check(self, kind: str, key: str, limits: Sequence[Policy]) -> Verdict | None:
        """Count one request against ``limits`` for ``key``; None when it went unchecked (fail open)."""
        if time.monotonic() < self._skip_until:
            RATE_LIMIT_UNCHECKED.labels(kind, "cool_off").inc()
            return None
        try:
            async with asyncio.timeout(self.timeout):
                return await self._hit(key, limits)
        except Exception as exc:  # TimeoutError, RedisError, OSError: whatever it is, fail open
            reason = "timeout" if isinstance(exc, TimeoutError) else "error"
            RATE_LIMIT_UNCHECKED.labels(kind, reason).inc()
            if time.monotonic() >= self._skip_until:  # concurrent failures: one warning
                self._skip_until = time.monotonic() + self.cool_off
                log.warning("rate_limit_unchecked", reason=reason, error=str(exc) or type(exc).__name__,
                            kind=kind, cool_off_seconds=self.cool_off,
                            effect="requests pass without rate limits until Redis answers in time")
            return None

    async def _hit(self, key: str, limits: Sequence[Policy]) -> Verdict:
        if len(limits) == 1 and self._pipelined:
            return await self._hit_pipelined(key, limits[0])
        return await self._hit_each(key, limits)

    async def _hit_pipelined(self, key: str, policy: Policy) -> Verdict:
        """One limit (the defaults' shape): its hit and the read of its state for the headers
        in ONE round trip, a pipeline of ``limits``' own two Lua scripts (by SHA: redis-py's
        script pipelining would ask SCRIPT EXISTS first, a round trip more). Same keys, same
        counting and same state as ``_hit_each``; what differs is half the round trips (issue 16:
        the limiter was 4 of a submit's Redis round trips). A script the server does not have
        yet (first request, SCRIPT FLUSH, failover) ran nothing: that step is done the unpipelined
        way, which loads it, so no hit is counted twice or lost."""
        item, storage, bridge = policy.item, self.storage, self.storage.bridge
        identity = item.key_for(policy.kind, key)
        keys = (bridge.prefixed_key(storage._previous_window_key(identity)),
                bridge.prefixed_key(storage._current_window_key(identity)))
        expiry = item.get_expiry()
        pipe = self.client.pipeline(transaction=False)
        pipe.evalsha(bridge.lua_acquire_sliding_window.sha, 2, *keys, item.amount, expiry, 1)
        pipe.evalsha(bridge.lua_sliding_window.sha, 2, *keys, expiry)
        acquired, window = await pipe.execute(raise_on_error=False)
        if isinstance(acquired, NoScriptError):
            acquired = await self.strategy.hit(item, policy.kind, key)
        elif isinstance(acquired, Exception):
            raise acquired
        if isinstance(window, NoScriptError):
            stats = await self.strategy.get_window_stats(item, policy.kind, key)
            reset_at, remaining = stats.reset_time, stats.remaining
        elif isinstance(window, Exception):
            raise window
        else:
            reset_at, remaining = _window_stats(item, window)
        left = Remaining(policy, max(0, remaining), max(0, math.ceil(reset_at - time.time())))
        if acquired:
            return Verdict(True, [left])
        retry_after = max(1, left.reset_in)
        return Verdict(False, [Remaining(policy, 0, retry_after)], retry_after, policy)

    async def _hit_each(self, key: str, limits: Sequence[Policy]) -> Verdict:
        """Hit the limits shortest window first, stopping at the first one that refuses (so a
        refused request does not also eat the longer windows' budgets); then read every limit's
        state for the headers, in one concurrent round trip."""
        over: Policy | None = None
        for policy in limits:
            if not await self.strategy.hit(policy.item, policy.kind, key):
                over = policy
                break
        stats = await asyncio.gather(*(self.strategy.get_window_stats(p.item, p.kind, key) for p in limits))
        now = time.time()
        remaining = [Remaining(policy, max(0, stat.remaining), max(0, math.ceil(stat.reset_time - now)))
                     for policy, stat in zip(limits, stats)]
        if over is None:
            return Verdict(True, remaining)
        refused = next(item for item in remaining if item.policy is over)
        retry_after = max(1, refused.reset_in)
        remaining = [item if item is not refused else Remaining(over, 0, retry_after) for item in remaining]
        return Verdict(False, remaining, retry_after, over)


_BRIDGE_NEEDS = ("prefixed_key", "lua_acquire_sliding_window", "lua_sliding_window")


def _window_stats(item: RateLimitItem, window: list | None) -> tuple[float, int]:
    """``(reset time, remaining)`` from the sliding-window script's reply, computed exactly as
    ``limits``' SlidingWindowCounterRateLimiter.get_window_stats does (limits 5.x) from the same
    reply; tests/test_rate_limits.py holds the headers to it."""
    previous, previous_ttl, current, current_ttl = (
        (int(window[0] or 0), max(0, float(window[1] or 0)) / 1000,
         int(window[2] or 0), max(0, float(window[3] or 0)) / 1000) if window else (0, 0.0, 0, 0.0))
    expiry = item.get_expiry()
    remaining = max(0, item.amount - math.floor(previous * previous_ttl / expiry + current))
    now = time.time()
    if not (previous or current):
        return now, remaining
    previous_reset = previous_ttl % (expiry / previous) if previous else math.inf
    current_reset = current_ttl % expiry if current else math.inf
    return now + min(previous_reset, current_reset), remaining


LIMITS_URI = "async+redis://"
"""What ``limits`` is told: only that the server is Redis. The connections come from our pool,
so REDIS_URL is not handed over: ``limits`` would parse it and refuse a URL without a port
(``redis://redis.internal/0``, valid for redis-py) or Sentinel mode's unused host."""


RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)


def rate_limiter(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """The app's cleanup context holding the limiter and its Redis pool. The pool connects
    lazily, so a Redis down at start only means failing open until it is back."""

    async def open_limiter(app: web.Application) -> AsyncIterator[None]:
        limiter = RateLimiter.from_settings(settings)
        app[RATE_LIMITER] = limiter
        yield
        await limiter.close()

    return open_limiter


# --- Client IP -----------------------------------------------------------------------------


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as proxies write it: bare, ``[v6]``, ``[v6]:port`` or ``v4:port``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IpNetwork]) -> str:
    """Who the request is from: the peer, or — when the peer is a trusted proxy — the right-most
    address of X-Forwarded-For that is not a trusted proxy. A malformed entry ends the walk at
    the trusted proxy that passed it on (so garbage cannot mint fresh budgets); every hop
    trusted means the left-most one."""
    address = _address(peer or "")
    if address is None:
        return peer or "unknown"  # a unix socket: one bucket

    def is_trusted(candidate: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(candidate in network for network in trusted)

    if not is_trusted(address):
        return str(address)
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        hop_address = _address(hop)
        if hop_address is None:
            break
        address = hop_address
        if not is_trusted(address):
            break
    return str(address)


def ip_key(ip: str) -> str:
    """The counter an address spends from: itself for IPv4, its /64 for IPv6."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


# --- Middlewares and headers ---------------------------------------------------------------


def is_exempt(path: str) -> bool:
    return path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES)


def _refuse(verdict: Verdict, who: str) -> PixqError:
    over = verdict.over
    assert over is not None
    return PixqError(ErrorCode.RATE_LIMITED,
                     f"too many requests for this {who}: at most {over.item.amount} per {over.window} s; "
                     f"retry in {verdict.retry_after} s", retry_after=verdict.retry_after)


async def _enforce(request: web.Request, state: RateState, kind: str, key: str,
                   limits: Sequence[Policy], who: str, tenant: str) -> None:
    if not limits:
        return
    state.policies.extend(limits)
    verdict = await request.app[RATE_LIMITER].check(kind, key, limits)
    if verdict is None:
        return
    state.remaining.extend(verdict.remaining)
    if not verdict.allowed:
        RATE_LIMITED_REQUESTS.labels(kind, tenant).inc()
        raise _refuse(verdict, who)


@web.middleware
async def limit_by_ip(request: web.Request, handler) -> web.StreamResponse:
    """Before authentication: every non-exempt request counts against its client IP."""
    if is_exempt(request.path):
        return await handler(request)
    limiter = request.app[RATE_LIMITER]
    state = RateState()
    request[RATE_STATE] = state
    ip = client_ip(request.remote, request.headers.getall("X-Forwarded-For", []), limiter.trusted)
    await _enforce(request, state, IP, ip_key(ip), limiter.ip_policies, "client IP", "")
    return await handler(request)


@web.middleware
async def limit_by_tenant(request: web.Request, handler) -> web.StreamResponse:
    """After authentication: an authenticated (/api/v1) request counts against its tenant."""
    tenant = request.get(TENANT)
    state = request.get(RATE_STATE)
    if tenant is None or state is None:
        return await handler(request)
    limits = request.app[RATE_LIMITER].tenant_policies(tenant.settings.rate_limit)
    await _enforce(request, state, TENANT_KIND, tenant.name, limits, "tenant", tenant.name)
    return await handler(request)


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the limits' headers on whatever response the request ends with
    (a handler's, an error envelope rendered by api.middleware.observe, or the 429)."""
    state = request.get(RATE_STATE)
    if state is None:
        return
    if state.policies:
        response.headers["RateLimit-Policy"] = ", ".join(policy.header_item() for policy in state.policies)
    if state.remaining:
        response.headers["RateLimit"] = ", ".join(item.header_item() for item in state.remaining)
