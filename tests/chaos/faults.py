"""The faults of a chaos run, injected one at a time at random (``random.Random(seed)``), each
followed by its repair as production would do it, and each awaited until the system is whole
again before the next (a fault's length is a chosen hold time; the recovery is awaited by
polling observable state with a deadline):

- ``worker_kill``: SIGKILL one pixq-worker, start a new one (as Kubernetes would);
- ``nats_kill`` / ``nats_freeze``: SIGKILL a random node (half the time the PIXQ_JOBS leader),
  or SIGSTOP it; after the hold, start / SIGCONT it and await every stream in sync at R3;
- ``redis_failover``: SIGKILL the Redis master, await the sentinels naming the replica, start
  the old master again as the new master's replica (as a production chart's start script does)
  and await it attached and seen by the sentinels (so the next failover has a replica to promote);
- ``storage_cut``: the workers' S3 proxy refuses every connection for the hold, then forwards;
- ``api_kill_upload``: a large multipart upload streams slowly to one API; once a quarter of it
  is sent, that API is SIGKILLed (the other keeps serving), then restarted on the same port.
  The load's other requests to it are in flight at the kill too (``api_kill_under_load``).

The first len(KINDS) faults are every kind once in a random order, so even a short run injects
each kind; after that kinds are drawn at random. ``Supervisor`` restarts any worker that exits
on its own (a worker exits 1 when a loop fails, docs/queue.md) and records it.
"""

import asyncio
import os
import random
import signal
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import redis
import redis.asyncio as aioredis

from tests.chaos.stack import WORKERS, Api, ChaosStack, wait_ready
from tests.faults.harness import BackgroundLoop, wait_until
from tests.redis_sentinel import DATA_PASSWORD, MASTER_NAME, SENTINEL_PASSWORD, restart_as_replica, wait_failover
from tests.servers import ServerProcess

KINDS = ("worker_kill", "nats_kill", "nats_freeze", "redis_failover", "storage_cut", "api_kill_upload")
RECOVERY = 90.0
"""Deadline for any recovery (a node back in sync, a replica attached, a process ready)."""
UPLOAD_BYTES = 16 * 1024 * 1024
UPLOAD_CHUNK = 64 * 1024


@dataclass
class Fault:
    kind: str
    at: float
    """Seconds since the run started."""
    detail: str = ""
    took: float = 0.0
    """Seconds from injection until the system was whole again."""
    error: str = ""
    """Set when the recovery itself failed (the run then reports it and goes on)."""


@dataclass
class Supervisor(BackgroundLoop):
    """Keeps WORKERS workers alive, like a Deployment's ReplicaSet."""

    stack: ChaosStack
    t0: float
    self_exits: list[tuple[float, str, int]] = field(default_factory=list)
    expected: set[int] = field(default_factory=set)
    """pids a fault killed on purpose (not reported as self exits)."""
    _seen: set[str] = field(default_factory=set)
    _task: asyncio.Task | None = None

    async def _loop(self) -> None:
        while True:
            for proc in list(self.stack.procs.workers):
                code = proc.process.poll()
                if code is not None and proc.process.pid not in self.expected and proc.name not in self._seen:
                    self._seen.add(proc.name)
                    self.self_exits.append((time.monotonic() - self.t0, proc.name, code))
            missing = WORKERS - len(self.stack.live_workers())
            for _ in range(max(0, missing)):
                await asyncio.to_thread(self.stack.start_worker, None)
            await asyncio.sleep(0.5)  # a controller's resync period, not synchronisation


class Injector:
    def __init__(self, stack: ChaosStack, rng: random.Random, http: aiohttp.ClientSession,
                 supervisor: Supervisor, t0: float, hold_scale: float = 1.0,
                 api_kill_under_load: bool = True) -> None:
        self.stack = stack
        self.api_kill_under_load = api_kill_under_load
        """False: the load stops sending to the victim API and its requests finish before the
        kill, so only the big upload is in flight (the short run: see run.run)."""
        self.load = None
        """The run's tests.chaos.load.Load (set once it exists), for its in-flight counts."""
        self.hold_scale = hold_scale
        """Multiplies every fault's hold time (0.5 in the 60 s run of `make test`)."""
        self.rng = rng
        self.http = http
        self.supervisor = supervisor
        self.t0 = t0
        self.faults: list[Fault] = []
        self.killed_uploads: list[dict] = []
        """Per api_kill_upload: the API, bytes sent before the kill, and what the client got."""
        self._order = list(KINDS)
        rng.shuffle(self._order)

    def first_round_left(self) -> bool:
        """Kinds not yet injected once."""
        return bool(self._order)

    def next_kind(self) -> str:
        if self._order:
            return self._order.pop(0)
        return self.rng.choice(KINDS)

    async def inject(self, kind: str) -> Fault:
        fault = Fault(kind, time.monotonic() - self.t0)
        self.faults.append(fault)
        started = time.monotonic()
        try:
            fault.detail = await getattr(self, kind)()
        except Exception as exc:  # noqa: BLE001 - a failed recovery is a finding to report, not a crash of the run
            fault.error = f"{type(exc).__name__}: {str(exc)[:500]}"
        fault.took = time.monotonic() - started
        return fault

    # --- the faults --------------------------------------------------------------------

    async def worker_kill(self) -> str:
        live = self.stack.live_workers()
        victim = self.rng.choice(live)
        self.supervisor.expected.add(victim.process.pid)
        os.kill(victim.process.pid, signal.SIGKILL)
        await asyncio.to_thread(victim.process.wait, 10)
        # The supervisor starts the replacement; await it ready.
        async def replaced():
            return len(self.stack.live_workers()) >= WORKERS
        await wait_until(replaced, RECOVERY, "a replacement worker")
        newest = self.stack.procs.workers[-1]
        await asyncio.to_thread(wait_ready, newest, RECOVERY)
        return f"{victim.name} SIGKILLed, {newest.name} started"

    async def _nats_victim(self):
        cluster = self.stack.cluster
        if self.rng.random() < 0.5:
            leader = await cluster.leader()
            if leader is not None:
                return leader, "PIXQ_JOBS leader "
        return self.rng.choice(cluster.nodes), ""

    async def nats_kill(self) -> str:
        cluster = self.stack.cluster
        node, role = await self._nats_victim()
        hold = self.rng.uniform(2, 6) * self.hold_scale
        await asyncio.to_thread(node.kill)
        await cluster.wait_leader(not_on=node, timeout=RECOVERY)
        await asyncio.sleep(hold)  # the fault's length
        await asyncio.to_thread(node.start)
        await cluster.wait_in_sync(timeout=RECOVERY)
        return f"{role}{node.name} SIGKILLed for {hold:.1f} s"

    async def nats_freeze(self) -> str:
        cluster = self.stack.cluster
        node, role = await self._nats_victim()
        hold = self.rng.uniform(3, 10) * self.hold_scale
        node.freeze()
        try:
            await asyncio.sleep(hold)  # the fault's length
        finally:
            node.thaw()
        await cluster.wait_in_sync(timeout=RECOVERY)
        return f"{role}{node.name} SIGSTOPped for {hold:.1f} s"

    def _data_node(self, port: int) -> ServerProcess:
        group = self.stack.redis
        return next(node for node in group.data_nodes() if node.port == port)

    async def redis_failover(self) -> str:
        group = self.stack.redis
        old_port = await group.master_port()
        assert old_port is not None, "no sentinel names a master"
        victim = self._data_node(old_port)
        killed = time.monotonic()
        await asyncio.to_thread(victim.stop, True)
        new_port = await wait_failover(group, old_port, timeout=RECOVERY)
        took = time.monotonic() - killed
        await asyncio.to_thread(restart_as_replica, victim, new_port)  # with its AOF, then a full resync
        await wait_until(lambda: self._attached(victim, new_port), RECOVERY,
                         f"redis :{victim.port} attached as a replica of :{new_port}", interval=0.2)
        return f"master :{old_port} SIGKILLed, :{new_port} promoted in {took:.1f} s, old master re-attached"

    async def _attached(self, node: ServerProcess, master_port: int) -> bool:
        """The restarted node replicates the new master, in sync, and the sentinels see it."""
        try:
            client = aioredis.Redis(port=node.port, password=DATA_PASSWORD, decode_responses=True, socket_timeout=2)
            try:
                info = await client.info("replication")
            finally:
                await client.aclose()
            if info.get("role") != "slave" or int(info.get("master_port", 0)) != master_port \
                    or info.get("master_link_status") != "up":
                return False
            for sentinel in self.stack.redis.sentinels:
                client = aioredis.Redis(port=sentinel.port, password=SENTINEL_PASSWORD, decode_responses=True,
                                        socket_timeout=2)
                try:
                    state = await client.sentinel_master(MASTER_NAME)
                finally:
                    await client.aclose()
                if state["is_sdown"] or state["num-slaves"] < 1 or int(state["port"]) != master_port:
                    return False
                replicas = await self._sentinel_replicas(sentinel.port)
                if not any(int(r["port"]) == node.port and not r["is_sdown"] for r in replicas):
                    return False
            return True
        except (redis.RedisError, OSError):
            return False

    @staticmethod
    async def _sentinel_replicas(port: int) -> list[dict]:
        client = aioredis.Redis(port=port, password=SENTINEL_PASSWORD, decode_responses=True, socket_timeout=2)
        try:
            return await client.sentinel_slaves(MASTER_NAME)
        finally:
            await client.aclose()

    async def storage_cut(self) -> str:
        hold = self.rng.uniform(4, 12) * self.hold_scale
        refused = self.stack.proxy.refused
        await asyncio.to_thread(self.stack.proxy.down)
        try:
            await asyncio.sleep(hold)  # the fault's length
        finally:
            await asyncio.to_thread(self.stack.proxy.up)
        for worker in self.stack.live_workers():
            await asyncio.to_thread(wait_ready, worker, RECOVERY)
        return f"workers' S3 cut for {hold:.1f} s ({self.stack.proxy.refused - refused} connections refused)"

    async def api_kill_upload(self) -> str:
        api: Api = self.rng.choice(self.stack.apis)
        sent = 0
        quarter_sent = asyncio.Event()
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"width\"\r\n\r\n64\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        payload = os.urandom(UPLOAD_CHUNK)

        async def body():
            nonlocal sent
            yield head
            for _ in range(UPLOAD_BYTES // UPLOAD_CHUNK):
                yield payload
                sent += len(payload)
                if sent >= UPLOAD_BYTES // 4:
                    quarter_sent.set()
                await asyncio.sleep(0.01)  # a slow client's pace, so the kill lands mid-upload
            yield tail

        async def upload() -> str:
            try:
                async with self.http.post(f"{api.url}/api/v1/resize", data=body(),
                                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                   "Idempotency-Key": os.urandom(12).hex()}) as response:
                    return f"HTTP {response.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                return f"no answer ({type(exc).__name__})"

        if not self.api_kill_under_load and self.load is not None:
            api.up = False  # the load sends elsewhere; its requests to this API finish first
            await wait_until(lambda: asyncio.sleep(0, self.load.in_flight.get(api.index, 0) == 0), 30,
                             f"api-{api.index}'s other requests to finish")
        task = asyncio.create_task(upload())
        await wait_until(lambda: asyncio.sleep(0, quarter_sent.is_set() or task.done()), 60, "the upload under way")
        assert not task.done(), f"the upload ended before the kill: {task.result()}"
        api.up = False
        at_kill, killed_at = sent, time.monotonic() - self.t0
        os.kill(api.proc.process.pid, signal.SIGKILL)
        await asyncio.to_thread(api.proc.process.wait, 10)
        answer = await task
        self.killed_uploads.append({"api": api.index, "sent": at_kill, "of": UPLOAD_BYTES, "answer": answer,
                                    "at": killed_at})
        await asyncio.to_thread(self.stack.start_api, api, RECOVERY)
        assert not answer.startswith("HTTP 2"), f"a killed upload was accepted: {answer}"
        return f"api-{api.index} SIGKILLed with {at_kill // 1024} KiB of {UPLOAD_BYTES // 1024} KiB sent; client got {answer}"
