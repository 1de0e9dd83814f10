"""Source URLs: images the worker fetches from the web, behind the SSRF guard.

A source URL is chosen by a user, so every rule that keeps pixq out of its own network is
applied twice: ``check_source_url`` at submit (shape, scheme, credentials, host allowlist,
IP literals), so a refused URL never becomes a job, and again by ``SourceFetcher`` on
every hop of the fetch, because a queued or replayed message may meet changed settings and
a redirect may point anywhere. The connection itself goes through pixq.outbound, which
checks the address actually connected to (a name resolving to 127.0.0.1 is refused before
any byte is sent).

URLs may carry tokens in their path, query or userinfo (signed CDN links). Userinfo is
refused outright; logs and error messages name only ``scheme://host[:port]`` (``origin``),
never the path or query. The full URL lives only in the job's message (and so in a DLQ
entry, which only admins read); the status document does not show it.
"""

import asyncio
import re

import aiohttp
import structlog
import yarl
from aiohttp.abc import AbstractResolver

from pixq import outbound
from pixq.errors import ErrorCode, PixqError
from pixq.hostglobs import host_matches, parse_globs
from pixq.limits import Limits
from pixq.settings import Settings
from pixq.sniff import HEAD_BYTES, check_allowed, detect_format
from pixq.tenants import Tenant, TenantDirectory, load_directory

log = structlog.get_logger("pixq.sources")

SOURCE_URL_MAX = 2048
"""Longest source URL (pixq.jobs.JobInput.url's limit)."""
MAX_REDIRECTS = 3
"""Redirects followed per fetch; each target is checked like the first URL."""
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRYABLE_STATUSES = frozenset({408, 425, 429})
"""4xx answers that say "not now" rather than "never": retried like a 5xx."""
CHUNK_BYTES = 64 * 1024
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
REQUEST_HEADERS = {"User-Agent": "pixq-source-fetcher/1", "Accept": "image/*"}


def origin(url: str | yarl.URL) -> str:
    """``scheme://host[:port]`` of a URL: all that logs and error messages may show of it."""
    try:
        parsed = url if isinstance(url, yarl.URL) else yarl.URL(url)
        host = parsed.raw_host or "?"
        if ":" in host:
            host = f"[{host}]"
        port = f":{parsed.explicit_port}" if parsed.explicit_port is not None else ""
        return f"{parsed.scheme}://{host}{port}"
    except (ValueError, TypeError):
        return "<unparseable URL>"


def _refused(message: str) -> PixqError:
    return PixqError(ErrorCode.SOURCE_REFUSED, message)


def allowed_hosts(settings: Settings, tenant: Tenant) -> list[str]:
    """The globs a tenant's source URLs may name: SOURCE_ALLOWED_HOSTS plus its ``source_hosts``."""
    return [*parse_globs(settings.source_allowed_hosts), *tenant.settings.source_hosts]


def check_source_url(url: str, settings: Settings, tenant: Tenant) -> str:
    """The URL the job will carry (normalised, fragment dropped), or PixqError.

    INVALID_PARAMETERS for what is not a usable URL; SOURCE_REFUSED for a URL pixq will not
    fetch: a scheme other than https (or http with SOURCE_ALLOW_HTTP), credentials in it,
    a host outside both allowlists (both empty: no source URL is allowed at all), or an
    IP literal in a blocked range (unless OUTBOUND_ALLOW_PRIVATE_NETWORKS)."""
    if len(url) > SOURCE_URL_MAX:
        raise PixqError(ErrorCode.INVALID_PARAMETERS, f"input url is longer than {SOURCE_URL_MAX} characters")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise PixqError(ErrorCode.INVALID_PARAMETERS, "input url must not contain spaces or control characters")
    try:
        parsed = yarl.URL(url)
        host = parsed.raw_host
    except (ValueError, TypeError, UnicodeError):
        raise PixqError(ErrorCode.INVALID_PARAMETERS, "input url is not a valid URL") from None
    schemes = ("https", "http") if settings.source_allow_http else ("https",)
    if parsed.scheme and parsed.scheme not in schemes:
        raise _refused(f"source URL scheme {parsed.scheme!r} is not allowed (only "
                       f"{' or '.join(schemes)}; SOURCE_ALLOW_HTTP enables http)")
    if not parsed.absolute or not host:
        raise PixqError(ErrorCode.INVALID_PARAMETERS, "input url must be absolute: https://host/path")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise _refused("source URL must not carry credentials (user:password@)")
    if outbound.parse_ip(host) is None and _NUMERIC_LABEL.match(host.rstrip(".").rsplit(".", 1)[-1]):
        # 2130706433, 0x7f.1, 127.1: no DNS name ends in a number, but getaddrinfo reads these
        # as IPv4 addresses. Refused rather than left to the connect-time guard alone.
        raise _refused(f"source host {host!r} is neither a host name nor a canonical IP address")
    globs = allowed_hosts(settings, tenant)
    if not globs:
        raise _refused("source URLs are not enabled: SOURCE_ALLOWED_HOSTS and the tenant's "
                       "source_hosts are both empty")
    if not host_matches(host, globs):
        raise _refused(f"source host {host!r} is not in SOURCE_ALLOWED_HOSTS or the tenant's source_hosts")
    try:
        outbound.check_host(host, settings.outbound_allow_private_networks)
    except outbound.OutboundRefused as exc:
        raise _refused(f"source host {host!r} is refused: {exc.reason}") from None
    normal = str(parsed.with_fragment(None))
    if len(normal) > SOURCE_URL_MAX:  # percent-encoding can lengthen it past JobInput's limit
        raise PixqError(ErrorCode.INVALID_PARAMETERS, f"input url is longer than {SOURCE_URL_MAX} characters "
                                                      "once percent-encoded")
    return normal


class SourceFetcher:
    """Fetches a job's source URL: guarded connections, SOURCE_TIMEOUT for the whole fetch
    (every redirect included), redirects followed by hand and checked again, MAX_INPUT_BYTES
    enforced while streaming, magic bytes checked as soon as the first bytes arrive.

    A fresh session per fetch: sources are many unrelated hosts, so a shared pool would
    buy little, and nothing (connection, cookie) can carry over from one tenant's fetch to
    another's."""

    def __init__(self, settings: Settings, limits: Limits, directory: TenantDirectory | None = None,
                 resolver: AbstractResolver | None = None) -> None:
        self.settings = settings
        self.limits = limits
        self.directory = directory if directory is not None else load_directory(settings)
        self.resolver = resolver
        """For tests: a resolver that answers chosen names (the guard still filters its answers)."""

    def tenant(self, name: str) -> Tenant:
        """The tenant's settings as the API saw them (an unknown or open-mode tenant has none)."""
        return self.directory.tenants.get(name) or Tenant(name=name)

    async def fetch(self, url: str, tenant: str, job_id: str = "") -> bytes:
        """The image's bytes; PixqError SOURCE_REFUSED / SOURCE_REJECTED / UNSUPPORTED_MEDIA_TYPE /
        PAYLOAD_TOO_LARGE (permanent) or SOURCE_UNAVAILABLE (transient: 5xx, 408/425/429,
        timeout, connection failure)."""
        fetch_log = log.bind(job_id=job_id, tenant=tenant, source=origin(url))
        try:
            async with asyncio.timeout(self.settings.source_timeout):
                async with outbound.session(self.settings.outbound_allow_private_networks, self.resolver,
                                            limit=4) as session:
                    data, hops = await self._follow(session, url, self.tenant(tenant))
        except TimeoutError:
            error = PixqError(ErrorCode.SOURCE_UNAVAILABLE,
                              f"source {origin(url)} did not answer within SOURCE_TIMEOUT="
                              f"{self.settings.source_timeout:g}s")
            fetch_log.warning("source_failed", error_code=error.code.value, error=error.message)
            raise error from None
        except PixqError as error:
            fetch_log.warning("source_failed", error_code=error.code.value, error=error.message)
            raise
        fetch_log.info("source_fetched", bytes=len(data), redirects=hops)
        return data

    async def _follow(self, session: aiohttp.ClientSession, url: str, tenant: Tenant) -> tuple[bytes, int]:
        current = url
        for hop in range(MAX_REDIRECTS + 1):
            current = check_source_url(current, self.settings, tenant)
            try:
                response = await session.get(current, allow_redirects=False, headers=REQUEST_HEADERS)
            except (aiohttp.ClientError, OSError) as exc:
                raise self._connection_error(current, exc) from None
            async with response:
                if response.status in REDIRECT_STATUSES:
                    current = self._redirect_target(current, response)
                    continue
                self._check_status(current, response.status)
                return await self._read(current, response), hop
        raise _refused(f"source {origin(url)} redirected more than {MAX_REDIRECTS} times")

    @staticmethod
    def _connection_error(url: str, exc: BaseException) -> PixqError:
        refused = outbound.refusal(exc)
        if refused is not None:
            return _refused(f"source host {refused.host!r} is refused: {refused.reason}")
        if isinstance(exc, aiohttp.InvalidURL):
            return _refused(f"source URL at {origin(url)} is not a valid URL")
        return PixqError(ErrorCode.SOURCE_UNAVAILABLE, f"cannot connect to source {origin(url)}: "
                                                       f"{type(exc).__name__}")

    @staticmethod
    def _redirect_target(url: str, response: aiohttp.ClientResponse) -> str:
        location = response.headers.get("Location")
        if not location:
            raise PixqError(ErrorCode.SOURCE_REJECTED,
                            f"source {origin(url)} answered {response.status} without a Location")
        try:
            return str(yarl.URL(url).join(yarl.URL(location)))
        except (ValueError, TypeError, UnicodeError):
            raise _refused(f"source {origin(url)} redirected to an invalid URL") from None

    @staticmethod
    def _check_status(url: str, status: int) -> None:
        if status in (200, 203):
            return
        if status >= 500 or status in RETRYABLE_STATUSES:
            raise PixqError(ErrorCode.SOURCE_UNAVAILABLE, f"source {origin(url)} answered HTTP {status}")
        raise PixqError(ErrorCode.SOURCE_REJECTED, f"source {origin(url)} answered HTTP {status}")

    async def _read(self, url: str, response: aiohttp.ClientResponse) -> bytes:
        """The body, refused as soon as it is too large or its first bytes are not an image."""
        limit = self.limits.max_input_bytes
        declared = response.content_length
        if declared is not None and declared > limit:
            raise PixqError(ErrorCode.PAYLOAD_TOO_LARGE,
                            f"source {origin(url)} declares {declared} bytes, over MAX_INPUT_BYTES={limit}")
        body = bytearray()
        sniffed = False
        try:
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                body += chunk
                if len(body) > limit:
                    raise PixqError(ErrorCode.PAYLOAD_TOO_LARGE,
                                    f"source {origin(url)} sent more than MAX_INPUT_BYTES={limit} bytes")
                if not sniffed and len(body) >= HEAD_BYTES:
                    check_allowed(detect_format(bytes(body[:HEAD_BYTES])), self.limits)
                    sniffed = True
        except (aiohttp.ClientError, OSError) as exc:
            raise PixqError(ErrorCode.SOURCE_UNAVAILABLE,
                            f"source {origin(url)} broke off the body ({type(exc).__name__})") from None
        if not sniffed:
            check_allowed(detect_format(bytes(body)), self.limits)
        return bytes(body)
