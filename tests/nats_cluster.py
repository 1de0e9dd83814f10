"""A 3-node nats-server JetStream cluster on loopback, for tests that fault one node at a time.

Why a module of its own: the cluster tests (tests/cluster) and the chaos run need the same
launcher, and both need more than tests/servers.py's single server: each node has a name,
cluster routes to the other two, its own store directory, and a monitoring port (``/connz``
says which node a pixq process is connected to). Nodes can be stopped, SIGKILLed, frozen with
SIGSTOP, thawed with SIGCONT and restarted on the same ports and store.

Waits poll server state with a deadline (a stream's leader and replicas from the JetStream
API, ``stream_info(...).cluster``), never a fixed sleep. Queries go to one node at a time over
a fresh connection, skipping nodes that are down or frozen, so a frozen node never stalls them.
"""

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.api import StreamInfo
from nats.js.errors import NotFoundError

from pixq import names
from tests.servers import free_port, wait_for_port

PIXQ_STREAMS = (names.JOBS_STREAM, names.DLQ_STREAM, names.ADVISORY_STREAM, names.STATUS_STREAM,
                names.EVENTS_STREAM, names.INGEST_STREAM)
"""Every stream pixq creates (pixq.queue.ensure_streams)."""

QUERY_TIMEOUT = 1.0
"""One JetStream API request; during an election it goes unanswered, and the poll asks again."""


@dataclass
class NatsNode:
    """One nats-server of the cluster; ports and store survive restarts."""

    name: str
    port: int
    cluster_port: int
    monitor_port: int
    store: Path
    conf: Path
    log: Path
    process: subprocess.Popen | None = field(default=None, repr=False)
    frozen: bool = False

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def answering(self) -> bool:
        """Running and not frozen: a request to it can be answered."""
        return self.running and not self.frozen

    def start(self) -> "NatsNode":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(["nats-server", "-c", str(self.conf)], stdout=log,
                                            stderr=subprocess.STDOUT)
        self.frozen = False
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        """SIGTERM (nats-server shuts down cleanly, flushing its store) and wait."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: nothing flushed, no goodbye to the peers."""
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        if self.process and self.process.poll() is None:
            if self.frozen:
                self.process.send_signal(signal.SIGCONT)  # a stopped process never handles SIGTERM
            self.process.send_signal(sig)
            self.process.wait(timeout=30)
        self.process = None
        self.frozen = False

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets open but answers nothing (a stalled VM, a GC pause)."""
        assert self.running, f"{self.name} is not running"
        os.kill(self.process.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.running, f"{self.name} is not running"
        os.kill(self.process.pid, signal.SIGCONT)
        self.frozen = False

    def monitor(self, path: str) -> dict:
        """A monitoring endpoint's JSON (``/connz``, ``/jsz``, ``/healthz``)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}{path}", timeout=2) as response:
            return json.loads(response.read())


def _config(node: NatsNode, routes: list[int], cluster_name: str) -> str:
    route_list = ", ".join(f'"nats://127.0.0.1:{port}"' for port in routes)
    return (f'server_name: "{node.name}"\n'
            f"listen: 127.0.0.1:{node.port}\n"
            f"http: 127.0.0.1:{node.monitor_port}\n"
            f'jetstream {{ store_dir: "{node.store}" }}\n'
            f'cluster {{ name: "{cluster_name}"\n  listen: 127.0.0.1:{node.cluster_port}\n'
            f"  routes: [{route_list}]\n}}\n")


class NatsCluster:
    """Three (or ``size``) nats-server nodes with JetStream, routed to each other on loopback."""

    def __init__(self, tmp: Path, size: int = 3, cluster_name: str = "pixq-test") -> None:
        self.nodes: list[NatsNode] = []
        for index in range(1, size + 1):
            name = f"n{index}"
            store = tmp / f"nats-{name}"
            store.mkdir(parents=True, exist_ok=True)
            self.nodes.append(NatsNode(name, free_port(), free_port(), free_port(), store,
                                       tmp / f"nats-{name}.conf", tmp / f"nats-{name}.log"))
        for node in self.nodes:
            routes = [other.cluster_port for other in self.nodes if other is not node]
            node.conf.write_text(_config(node, routes, cluster_name))

    @property
    def url(self) -> str:
        """NATS_URL for pixq: every node, comma-separated."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> NatsNode:
        return next(node for node in self.nodes if node.name == name)

    def start(self, timeout: float = 30.0) -> "NatsCluster":
        """Start every node and wait until JetStream is up with a meta leader (process start-up)."""
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.meta_leader() and all(self._healthy(node) for node in self.nodes):
                return self
            time.sleep(0.1)
        raise TimeoutError(f"cluster not ready after {timeout}s:\n{self.log_tails()}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def meta_leader(self) -> str | None:
        """The JetStream meta leader, as the first answering node sees it."""
        for node in self.nodes:
            if node.answering:
                try:
                    leader = node.monitor("/jsz").get("meta_cluster", {}).get("leader")
                except OSError:
                    continue
                if leader:
                    return leader
        return None

    @staticmethod
    def _healthy(node: NatsNode) -> bool:
        try:
            return node.monitor("/healthz").get("status") == "ok"
        except OSError:
            return False  # /healthz answers 503 until this node's JetStream is current

    def clients(self, node: NatsNode) -> list[str]:
        """Names of the client connections on ``node`` (pixq's processes name theirs)."""
        return [conn.get("name", "") for conn in node.monitor("/connz?limit=1024").get("connections", [])]

    def log_tails(self, lines: int = 15) -> str:
        out = []
        for node in self.nodes:
            text = node.log.read_text(errors="replace") if node.log.exists() else ""
            out.append(f"--- nats {node.name} ---\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(out)

    # --- JetStream state (async: tests keep submitting while these wait) -------------------

    async def _first_answer(self, ask: Callable[[NATS], Awaitable[Any]],
                            via: Iterable[NatsNode] | None = None) -> Any:
        """``ask`` on a fresh connection to each answering node in turn until one answers; None
        when none does (NotFoundError is an answer: raised)."""
        for node in via if via is not None else self.nodes:
            if not node.answering:
                continue
            try:
                nc = await nats.connect(node.url, allow_reconnect=False, connect_timeout=QUERY_TIMEOUT)
            except (NatsError, OSError, asyncio.TimeoutError):
                continue
            try:
                return await ask(nc)
            except NotFoundError:
                raise
            except (NatsError, OSError, asyncio.TimeoutError):
                continue
            finally:
                try:
                    await nc.close()
                except (NatsError, OSError, asyncio.TimeoutError):
                    pass
        return None

    async def stream_info(self, stream: str, via: Iterable[NatsNode] | None = None) -> StreamInfo | None:
        """The stream's info from the first node that answers within QUERY_TIMEOUT, else None."""
        return await self._first_answer(lambda nc: nc.jetstream(timeout=QUERY_TIMEOUT).stream_info(stream), via)

    async def leader(self, stream: str = names.JOBS_STREAM) -> NatsNode | None:
        info = await self.stream_info(stream)
        leader = info.cluster.leader if info and info.cluster else None
        return self.node(leader) if leader else None

    async def wait_leader(self, stream: str = names.JOBS_STREAM, timeout: float = 30.0,
                          not_on: NatsNode | None = None) -> NatsNode:
        """Poll until ``stream`` has a leader (other than ``not_on``, e.g. a node just killed)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = await self.leader(stream)
            if last is not None and last is not not_on and last.answering:
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"no leader for {stream} (other than {not_on and not_on.name}) after {timeout}s; "
                             f"last: {last and last.name}\n{self.log_tails()}")

    async def in_sync(self, stream: str) -> bool:
        """A leader, and every other node a current replica: all peers have caught up."""
        info = await self.stream_info(stream)
        if not info or not info.cluster or not info.cluster.leader:
            return False
        replicas = info.cluster.replicas or []
        return len(replicas) == len(self.nodes) - 1 and all(peer.current and not peer.offline for peer in replicas)

    async def wait_in_sync(self, streams: Iterable[str] = PIXQ_STREAMS, timeout: float = 60.0) -> None:
        """Poll until every stream has a leader and all its replicas are current (a node rejoined)."""
        deadline = time.monotonic() + timeout
        pending = list(streams)
        while pending:
            pending = [stream for stream in pending if not await self.in_sync(stream)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"streams not in sync after {timeout}s: {pending}\n{self.log_tails()}")
            await asyncio.sleep(0.1)

    async def step_down(self, stream: str = names.JOBS_STREAM) -> None:
        """Ask the stream's leader to hand over (JetStream API STREAM.LEADER.STEPDOWN)."""
        await self._first_answer(lambda nc: nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"",
                                                       timeout=QUERY_TIMEOUT * 3))

    async def move_leader(self, to: NatsNode, stream: str = names.JOBS_STREAM, attempts: int = 12) -> None:
        """Step the leader down until ``to`` leads ``stream`` (a stepdown picks the next leader at random)."""
        for _ in range(attempts):
            leader = await self.wait_leader(stream)
            if leader is to:
                return
            await self.step_down(stream)
            await self.wait_leader(stream, not_on=leader)
        raise AssertionError(f"{to.name} did not become {stream}'s leader after {attempts} stepdowns")

    async def restart(self, node: NatsNode, timeout: float = 60.0) -> None:
        """Stop (SIGTERM), start on the same ports and store, and wait until every stream is in sync."""
        await asyncio.to_thread(node.stop)
        await asyncio.to_thread(node.start)
        await self.wait_in_sync(timeout=timeout)
