"""How pixq reaches its dependencies securely: Settings in, connection options out.

One place turns the transport settings (credentials, CA files, client certificates, S3
server-side encryption) into what each client library wants, so the API, the workers and
the CLI all connect the same way and a review of "what is encrypted, how is it verified"
reads one file. docs/security-transport.md describes the configuration.

- NATS (nats-py): credentials from NATS_URL, a JWT ``.creds`` file or an nkey seed file;
  TLS (server verification, optionally a client certificate) from NATS_TLS_* files.
- Redis (redis-py): password or ACL user in REDIS_URL; ``rediss://`` for TLS, with
  REDIS_TLS_CA_FILE for a private CA. With REDIS_SENTINELS the master is found through
  Sentinel (REDIS_SENTINEL_PASSWORD for the sentinels themselves).
- S3 (minio SDK): STORAGE_CA_FILE for a private CA behind STORAGE_SECURE=true;
  STORAGE_SSE asks for encryption at rest on every write.
"""

import asyncio
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import redis.asyncio as redis
import urllib3
from minio.sse import Sse, SseKMS, SseS3
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.maint_notifications import MaintNotificationsConfig
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from pixq.settings import Settings

# --- NATS --------------------------------------------------------------------------------

NATS_PING_INTERVAL_SECONDS = 2.0
NATS_MAX_OUTSTANDING_PINGS = 2
"""A server that stops answering (frozen process, stalled VM, a half-open TCP connection) is
declared stale after about (MAX_OUTSTANDING_PINGS + 1) x PING_INTERVAL = 6 s, and the client
reconnects to another server of NATS_URL. nats-py's defaults (120 s x 2) kept a client on a
frozen cluster node for 4 minutes: every publish timed out and submits answered 503
(tests/cluster/test_node_faults.py freezes a node for 10 s). One PING every 2 s per connection."""


class NatsPlaintextRefused(NatsError):
    """TLS was configured but the server did not switch to TLS: credentials are withheld."""

    def __str__(self) -> str:
        return "nats: TLS is configured but the server offered a plaintext connection; credentials withheld"


def split_nats_credentials(url: str) -> tuple[list[str], str | None, str | None, str | None]:
    """Split NATS_URL into (server URLs without credentials, user, password, token).

    Why lift credentials out of the URLs: nats-py reads them per server URL and does not
    percent-decode them, and servers it discovers from the cluster's INFO carry none, so a
    reconnect to a discovered node would go unauthenticated. As connect options they are
    decoded (a password may contain ``@``, ``/`` or ``:`` written as %40, %2F, %3A) and apply
    to every server. ``nats://name:pass@host`` is a user and password, ``nats://tok@host`` a
    token, as in nats-py and the other NATS clients. Every URL that carries credentials must
    carry the same ones (one pixq identity per deployment).
    """
    servers: list[str] = []
    found: set[tuple[str, str | None]] = set()
    for raw in url.split(","):
        raw = raw.strip()
        if not raw:
            continue
        parts = urlsplit(raw)
        if parts.username is not None:
            password = None if parts.password is None else unquote(parts.password)
            found.add((unquote(parts.username), password))
            host = parts.netloc.rpartition("@")[2]
            raw = urlunsplit(parts._replace(netloc=host))
        servers.append(raw)
    if len(found) > 1:
        raise ValueError("NATS_URL: every server URL must carry the same credentials")
    if not found:
        return servers, None, None, None
    name, password = found.pop()
    if password is None:
        return servers, None, None, name
    return servers, name, password, None


def nats_tls_wanted(settings: Settings) -> bool:
    """TLS is required when a URL says so (tls://, wss://) or any NATS_TLS_* file is set."""
    schemes = {urlsplit(url.strip()).scheme for url in settings.nats_url.split(",") if url.strip()}
    return bool(schemes & {"tls", "wss"} or settings.nats_tls_ca_file or settings.nats_tls_cert_file)


def nats_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A verifying client context (certificate chain and host name): NATS_TLS_CA_FILE alone
    when set, else the system CAs; the client certificate and key for mutual TLS. None when
    TLS is not wanted (a server may still ask for it: nats-py then verifies against the
    system CAs)."""
    if not nats_tls_wanted(settings):
        return None
    context = ssl.create_default_context(cafile=str(settings.nats_tls_ca_file) if settings.nats_tls_ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.nats_tls_cert_file and settings.nats_tls_key_file:
        context.load_cert_chain(str(settings.nats_tls_cert_file), str(settings.nats_tls_key_file))
    return context


def nats_connection_is_tls(nc: NATS) -> bool:
    """Did the current connection switch to TLS? nats-py upgrades exactly when the server's
    INFO says ``tls_required`` (and wss:// is TLS from the first byte). Reads nats-py's
    private state: if a release renames it, this answers False and password/token logins
    over TLS fail closed (tests/test_transport_nats.py would show it)."""
    server = getattr(nc, "_current_server", None)
    if server is not None and server.uri.scheme == "wss":
        return True
    return bool((getattr(nc, "_server_info", None) or {}).get("tls_required"))


def _guarded(value: str, tls_in_use: Callable[[], bool]) -> Callable[[], str]:
    def give() -> str:
        if not tls_in_use():
            raise NatsPlaintextRefused()
        return value

    return give


def nats_connect_options(settings: Settings, tls_in_use: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``nats.aio.client.Client.connect``: servers, credentials, TLS.

    Why the guard (``tls_in_use``): nats-py switches to TLS only when the server's INFO asks
    for it, even for a tls:// URL, so something impersonating the server could offer
    plaintext and read a password or token. When TLS is wanted, the password and token are
    handed over as callbacks that refuse unless the connection did switch to TLS. (nkey and
    JWT authentication never send their secret seed, only a signature of the server's nonce.)
    """
    servers, user, password, token = split_nats_credentials(settings.nats_url)
    options: dict[str, Any] = {"servers": servers, "ping_interval": NATS_PING_INTERVAL_SECONDS,
                               "max_outstanding_pings": NATS_MAX_OUTSTANDING_PINGS}
    guard = tls_in_use if (tls_in_use is not None and nats_tls_wanted(settings)) else None

    def secret(value: str) -> str | Callable[[], str]:
        return _guarded(value, guard) if guard else value

    if user is not None:
        options.update(user=secret(user), password=secret(password or ""))
    elif token is not None:
        options["token"] = secret(token)
    if settings.nats_creds_file:
        options["user_credentials"] = str(settings.nats_creds_file)
    if settings.nats_nkey_seed_file:
        options["nkeys_seed"] = str(settings.nats_nkey_seed_file)
    context = nats_tls_context(settings)
    if context is not None:
        options["tls"] = context
    return options


# --- Redis -------------------------------------------------------------------------------


NO_MAINT_NOTIFICATIONS = MaintNotificationsConfig(enabled=False)
"""redis-py 8 turns "maintenance notifications" (a Redis Enterprise / Cloud feature) on in
"auto" mode, and while they are on its pool skips the check that a pooled connection is still
open (ConnectionPool.ensure_connection): after a Redis restart every idle pooled connection
failed its next command ("Connection closed by server"), a 503 for a request while Redis was
up again. Off, a connection the server closed is reopened before use."""

REDIS_MAX_CONNECTIONS = 100
"""Redis connections per process. A request beyond them waits for one (BlockingConnectionPool)
rather than failing at once: redis-py's plain pool raises "Too many connections", which a
burst of concurrent submits turned into 503s while Redis itself was idle."""
REDIS_POOL_WAIT_SECONDS = 5.0
"""How long a request waits for a free connection before it is STATUS_UNAVAILABLE (503)."""


def redis_client(settings: Settings) -> redis.Redis:
    """The Redis client of REDIS_URL (``redis://user:pass@host:port/db``; redis-py decodes
    percent-escapes in the credentials). ``rediss://`` turns on TLS with certificate and
    hostname verification against the system CAs plus REDIS_TLS_CA_FILE (redis-py always
    starts from the system store).

    Short timeouts: a Redis outage surfaces as STATUS_UNAVAILABLE (and readiness false)
    within seconds instead of hanging requests; a wrong password does the same.

    With REDIS_SENTINELS, the master of REDIS_SENTINEL_MASTER as the sentinels name it
    (``sentinel_master_client``); REDIS_URL then gives only credentials, db and TLS.
    """
    options: dict[str, Any] = dict(decode_responses=True, socket_connect_timeout=2, socket_timeout=5,
                                   health_check_interval=10)
    if settings.redis_url.startswith("rediss://"):
        options.update(ssl_cert_reqs="required", ssl_check_hostname=True, ssl_min_version=ssl.TLSVersion.TLSv1_2)
        if settings.redis_tls_ca_file:
            options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    if settings.redis_sentinels:
        return sentinel_master_client(settings, options)
    pool = QuickBlockingPool.from_url(settings.redis_url, max_connections=REDIS_MAX_CONNECTIONS,
                                      timeout=REDIS_POOL_WAIT_SECONDS, maint_notifications_config=NO_MAINT_NOTIFICATIONS,
                                      **options)
    return redis.Redis(connection_pool=pool)


class QuickBlockingPool(redis.BlockingConnectionPool):
    """redis-py's blocking pool with a fast path for the usual case, an idle connection free.

    Hand-rolled because redis-py has no such path: its blocking pool takes an asyncio.Condition,
    an async timeout, an async context manager and observability hooks for every command, which
    was a third of the CPU of a worker's status write (py-spy, issue 16). When a connection is
    idle, one is taken directly (still connected and checked by the pool's ensure_connection);
    otherwise, or while anyone waits, the blocking pool's own path runs. A release wakes a waiter
    whenever one may be waiting. Uses the base pool's get_available_connection and release;
    pinned to redis-py < 9 (pyproject.toml)."""

    _waiting = 0
    """Callers inside the blocking path (waiting for a connection, or about to)."""

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        if not self._available_connections or self._waiting or getattr(self, "_in_maintenance", False):
            self._waiting += 1
            try:
                return await super().get_connection()
            finally:
                self._waiting -= 1
        connection = redis.ConnectionPool.get_available_connection(self)
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: Any) -> None:
        if self._waiting or getattr(self, "_in_maintenance", False):
            await super().release(connection)
            return
        await redis.ConnectionPool.release(self, connection)
        if self._waiting:  # someone started waiting while the release awaited
            async with self._condition:
                self._condition.notify()


SENTINEL_RECHECK_SECONDS = 1.0
"""How often a Sentinel-mode process asks the sentinels where the master is. redis-py asks only
when it opens a connection, so a pooled connection kept writing to a node the sentinels had
already replaced: in the chaos run, two masters for seconds after a quick second failover, and
every write to the replaced one lost when it resynced from the new master. Checking once a second
(one small round trip per process) bounds that window to about a second; REDIS_WAIT_REPLICAS
closes it."""


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """redis-py's Sentinel pool (each new connection asks the sentinels where the master is;
    a connection that meets a demoted master, READONLY, is dropped) with the blocking pool's
    wait for a free connection, for the reason given at REDIS_MAX_CONNECTIONS. redis-py ships
    the Sentinel pool only on top of the plain, non-blocking pool.

    Added here: a background check of the master's address every SENTINEL_RECHECK_SECONDS
    (started with the first command), and a pooled connection to any other address is reopened
    before use, so no command goes to a node the sentinels no longer name as master."""

    _watcher: asyncio.Task | None = None

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch_master(), name="pixq-sentinel-recheck")
        return await super().get_connection(*args, **kwargs)

    async def ensure_connection(self, connection: Any) -> None:
        if (self.master_address is not None and connection.is_connected
                and (connection.host, connection.port) != tuple(self.master_address)):
            await connection.disconnect()  # reconnects below, to the address the sentinels give now
        await super().ensure_connection(connection)

    async def _watch_master(self) -> None:
        while True:
            await asyncio.sleep(SENTINEL_RECHECK_SECONDS)  # a period, not synchronisation
            try:
                await self.get_master_address()  # on a change, redis-py closes the idle connections
            except (redis.RedisError, OSError):
                pass  # no sentinel answers: open connections carry on, new ones fail as before

    async def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None


class SentinelMasterClient(redis.Redis):
    """The master's client that also closes its connections to the sentinels (redis-py leaves
    them to the ``Sentinel`` object, which nothing else in pixq keeps) and stops its pool's
    master check."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await self.connection_pool.stop_watching()
        await super().aclose(close_connection_pool)
        await self.connection_pool.sentinel_manager.aclose()


def sentinel_master_client(settings: Settings, options: dict[str, Any]) -> redis.Redis:
    """A client of the current master of REDIS_SENTINEL_MASTER, found through REDIS_SENTINELS.

    Failover is redis-py's: a new connection asks the sentinels (the first that answers and
    sees the master up) for the master's address, and idle connections to a former master are
    closed when the address changes. During the gap (down-after-milliseconds plus the
    election, seconds) commands fail as with a single Redis down: STATUS_UNAVAILABLE, and a
    worker's status writes go to its outbox (worker/status_writer.py).

    REDIS_URL's user, password, db and query options and its TLS (``rediss://``,
    REDIS_TLS_CA_FILE) apply to the master and replicas; its host and port are not used. The
    sentinels are reached with TLS too when REDIS_URL is ``rediss://`` (Redis serves both from
    one ``tls-port`` setup), and authenticate with REDIS_SENTINEL_PASSWORD if set: a sentinel's
    ``requirepass`` is its own, not the master's.
    """
    tls = settings.redis_url.startswith("rediss://")
    from_url = {name: value for name, value in parse_url(settings.redis_url).items()
                if name not in ("host", "port", "connection_class")}
    # One try per sentinel: discover_master moves on to the next one, so redis-py's default retry
    # (10 tries with backoff, ~4 s) would only delay that, on every new connection while a
    # sentinel is down or refuses the password.
    sentinel_options: dict[str, Any] = {name: value for name, value in options.items()
                                        if name.startswith(("socket_", "ssl_"))}
    sentinel_options["retry"] = Retry(NoBackoff(), 0)
    if tls:
        sentinel_options["ssl"] = True
    if settings.redis_sentinel_password:
        sentinel_options["password"] = settings.redis_sentinel_password
    sentinel = Sentinel(settings.redis_sentinels, sentinel_kwargs=sentinel_options)
    return sentinel.master_for(settings.redis_sentinel_master, redis_class=SentinelMasterClient,
                               connection_pool_class=BlockingSentinelPool, ssl=tls,
                               max_connections=REDIS_MAX_CONNECTIONS, timeout=REDIS_POOL_WAIT_SECONDS,
                               maint_notifications_config=NO_MAINT_NOTIFICATIONS,
                               **{**options, **from_url})  # the URL's options win, as in from_url


# --- S3 ----------------------------------------------------------------------------------


def s3_http_client(settings: Settings) -> urllib3.PoolManager:
    """The minio SDK's HTTP pool: short timeouts and one retry (an outage must surface quickly
    as STORAGE_UNAVAILABLE so a worker hands its job back for a delayed retry), and for
    STORAGE_SECURE=true certificate verification against the system CAs, or against
    STORAGE_CA_FILE alone when set (a private CA, e.g. an in-cluster MinIO)."""
    tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
    if settings.storage_ca_file:
        tls["ca_certs"] = str(settings.storage_ca_file)
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=3, read=30),
        retries=urllib3.Retry(total=1, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        maxsize=32,
        **tls,
    )


def s3_sse(settings: Settings) -> Sse | None:
    """Server-side encryption requested on every write: ``s3`` (SSE-S3, keys managed by the
    store) or ``kms:<key-id>`` (SSE-KMS with that key; the SDK sends it over HTTPS only).
    None leaves the bucket's default encryption in charge."""
    if settings.storage_sse == "s3":
        return SseS3()
    if settings.storage_sse.startswith("kms:"):
        return SseKMS(settings.storage_sse.removeprefix("kms:"), {})
    return None
