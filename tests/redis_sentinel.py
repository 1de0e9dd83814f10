"""A Redis master, one replica and three sentinels as real processes on free loopback ports.

The shape production uses for Redis high availability (REDIS_SENTINELS): quorum 2 of 3
sentinels, so one sentinel may be lost and a failover still happens. Each process keeps its
data and configuration in its own directory under the test's tmp dir (a sentinel rewrites its
configuration file as it learns the topology, so the file must be writable).

Passwords on every node, different for the data nodes and for the sentinels, so a test also
shows that REDIS_URL's password goes to the master and REDIS_SENTINEL_PASSWORD to the sentinels.

Timings: a sentinel thinks the master down after DOWN_AFTER_MS without a valid reply; with the
quorum agreeing, one sentinel is elected and promotes the replica. On loopback the whole
failover takes a few seconds.
"""

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import redis
import redis.asyncio as aioredis

from tests.faults.tcp_proxy import ToggleProxy
from tests.servers import ServerProcess, free_port
from tests.tls import Pki

MASTER_NAME = "pixq-main"
DATA_PASSWORD = "data-node-pw"
SENTINEL_PASSWORD = "sentinel-pw"
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10_000


def sentinel_argv(conf: Path) -> list[str]:
    """Debian's redis-sentinel package installs ``redis-sentinel`` (the redis-server binary
    under another name); without it, ``redis-server <conf> --sentinel`` is the same thing."""
    if shutil.which("redis-sentinel"):
        return ["redis-sentinel", str(conf)]
    return ["redis-server", str(conf), "--sentinel"]


def tls_lines(port: int, tls: Pki | None) -> list[str]:
    """Listening configuration: plain ``port``, or with ``tls`` only a TLS port, and TLS for the
    connections the node makes itself (a replica to its master, a sentinel to everything)."""
    if tls is None:
        return [f"port {port}"]
    return ["port 0", f"tls-port {port}", f"tls-cert-file {tls.server_cert}", f"tls-key-file {tls.server_key}",
            f"tls-ca-cert-file {tls.ca}", "tls-auth-clients no", "tls-replication yes"]


def data_node(tmp: Path, name: str, *extra: str, tls: Pki | None = None) -> ServerProcess:
    """A password-protected redis-server (AOF on, like tests/servers.redis_server)."""
    port = free_port()
    data = tmp / name
    data.mkdir(parents=True, exist_ok=True)
    conf = tmp / f"{name}.conf"
    conf.write_text("\n".join([*tls_lines(port, tls), "bind 127.0.0.1", f"dir {data}", 'save ""',
                               "appendonly yes", f"requirepass {DATA_PASSWORD}", f"masterauth {DATA_PASSWORD}",
                               *extra, ""]))
    return ServerProcess(name, ["redis-server", str(conf)], port, tmp / f"{name}.log").start()


def restart_as_replica(node: ServerProcess, master_port: int) -> None:
    """Start a stopped data node again as the replica of ``master_port``, as production Redis
    charts do (their start script asks the sentinels for the master first). Restarted as it was,
    a former master comes back a master of its own stale data and takes writes until the
    sentinels demote it, which they do only after it has reported the wrong role for 8 s."""
    node.argv = [*node.argv[:2], "--replicaof", "127.0.0.1", str(master_port)]
    node.start()


def sentinel_node(tmp: Path, name: str, master_port: int, tls: Pki | None = None,
                  down_after_ms: int = DOWN_AFTER_MS) -> ServerProcess:
    port = free_port()
    home = tmp / name
    home.mkdir(parents=True, exist_ok=True)
    conf = home / "sentinel.conf"
    conf.write_text("\n".join([
        *tls_lines(port, tls), "bind 127.0.0.1", f"dir {home}", f"requirepass {SENTINEL_PASSWORD}",
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}",
        f"sentinel auth-pass {MASTER_NAME} {DATA_PASSWORD}",
        f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}",
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
        f"sentinel parallel-syncs {MASTER_NAME} 1", ""]))
    return ServerProcess(name, sentinel_argv(conf), port, tmp / f"{name}.log").start()


@dataclass
class SentinelGroup:
    master: ServerProcess
    replica: ServerProcess
    sentinels: list[ServerProcess]
    replication: ToggleProxy | None = None
    """With ``start_group(proxied_replication=True)``: the proxy the replica reaches the master
    through, to hold back the replication stream (``swallow_replies``)."""
    tls: Pki | None = None

    def client_options(self, password: str) -> dict:
        options: dict = dict(password=password, decode_responses=True, socket_timeout=2)
        if self.tls:
            options.update(ssl=True, ssl_ca_certs=str(self.tls.ca))
        return options

    @property
    def addresses(self) -> str:
        """REDIS_SENTINELS for this group."""
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    @property
    def redis_url(self) -> str:
        """REDIS_URL in Sentinel mode: credentials, db and TLS only (the host is not used)."""
        return f"{'rediss' if self.tls else 'redis'}://:{DATA_PASSWORD}@sentinel-managed/0"

    def data_nodes(self) -> list[ServerProcess]:
        return [self.master, self.replica]

    def ready(self) -> bool:
        """Every sentinel sees the master up, its replica, and the two other sentinels (only
        then can a failover happen), and the replica is in sync with the master."""
        for sentinel in self.sentinels:
            with redis.Redis(port=sentinel.port, **self.client_options(SENTINEL_PASSWORD)) as client:
                state = client.sentinel_master(MASTER_NAME)
                if (state["is_sdown"] or state["num-slaves"] < 1 or state["num-other-sentinels"] < 2):
                    return False
        with redis.Redis(port=self.replica.port, **self.client_options(DATA_PASSWORD)) as client:
            return client.info("replication")["master_link_status"] == "up"

    async def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it (None if none answers)."""
        for sentinel in self.sentinels:
            if sentinel.process is None:
                continue
            client = aioredis.Redis(port=sentinel.port, **self.client_options(SENTINEL_PASSWORD))
            try:
                address = await client.sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(address[1]) if address else None
            except (redis.RedisError, OSError):
                continue
            finally:
                await client.aclose()
        return None

    def stop(self) -> None:
        for process in [*self.sentinels, self.replica, self.master]:
            process.stop(kill=True)
        if self.replication is not None:
            self.replication.stop()


def start_group(tmp: Path, ready_timeout: float = 30.0, proxied_replication: bool = False,
                tls: Pki | None = None, down_after_ms: int = DOWN_AFTER_MS) -> SentinelGroup:
    """Start the five processes and wait (start-up, polling observable state) until a failover
    is possible. Stops what it started if that does not happen within ``ready_timeout``.

    ``proxied_replication``: the replica connects to the master through a ToggleProxy (the
    sentinels still reach both directly: the master reports the replica's own port). ``tls``:
    every node listens on TLS only, with the certificate of tests/tls.make_pki (127.0.0.1).
    ``down_after_ms``: the sentinels' down-after-milliseconds (the chaos run uses a longer one:
    under its load 1 s of silence is not a dead master)."""
    master = data_node(tmp, "redis-master", tls=tls)
    proxy = ToggleProxy("127.0.0.1", master.port).start() if proxied_replication else None
    upstream = proxy.port if proxy else master.port
    try:
        replica = data_node(tmp, "redis-replica", f"replicaof 127.0.0.1 {upstream}", tls=tls)
    except BaseException:
        master.stop(kill=True)
        if proxy:
            proxy.stop()
        raise
    group = SentinelGroup(master, replica, [], proxy, tls)
    try:
        group.sentinels = [sentinel_node(tmp, f"sentinel-{n}", master.port, tls, down_after_ms) for n in range(1, 4)]
        deadline = time.monotonic() + ready_timeout
        while not group.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"sentinel group not ready after {ready_timeout}s; logs in {tmp}")
            time.sleep(0.1)
    except BaseException:
        group.stop()
        raise
    return group


async def wait_failover(group: SentinelGroup, old_port: int, timeout: float = 30.0) -> int:
    """Await the sentinels naming a new master; returns its port."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        port = await group.master_port()
        if port is not None and port != old_port:
            return port
        await asyncio.sleep(0.05)
    raise AssertionError(f"no failover from port {old_port} within {timeout}s")
