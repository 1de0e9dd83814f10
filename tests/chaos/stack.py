"""The processes of a chaos run: a 3-node JetStream cluster (every stream at 3 replicas), Redis
master + replica + 3 sentinels, S3 (moto, in this process) reached by the workers through a
ToggleProxy (the storage cut), two pixq-api processes on fixed ports (so a killed one comes back
where clients expect it) and three pixq-worker processes.

Why fixed API ports and a TMPDIR per API: a restarted API must be reachable at the same URL the
load uses, and the temp files a killed API leaves mid-upload must be countable (they are the
only trace a killed upload can leave; see tests/chaos/invariants.py).
"""

import asyncio
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from tests.faults.harness import FaultStack, wait_proc_http
from tests.faults.tcp_proxy import ToggleProxy
from tests.nats_cluster import PIXQ_STREAMS, NatsCluster
from tests.redis_sentinel import MASTER_NAME, SENTINEL_PASSWORD, SentinelGroup, start_group
from tests.servers import free_port
from tests.stack import BIN, Proc, stack_env

WORKERS = 3
APIS = 2
ACCESS_KEY = SECRET_KEY = "testing"

PROCESS_ENV = {"ACK_WAIT": "3s", "MAX_RETRIES": "3", "RETRY_BACKOFF": "1s,2s,4s", "JOB_TIMEOUT": "30s",
               "WORKER_SHUTDOWN_GRACE": "10s", "WORKER_CONCURRENCY": "2", "VIPS_CONCURRENCY": "1",
               "LOG_LEVEL": "info", "PENDING_INPUT_GRACE": "30s", "PENDING_INPUT_SWEEP_INTERVAL": "1s"}
"""The issue's retry policy (MAX_RETRIES=3, RETRY_BACKOFF=1s,2s,4s): an outage must not spend it.
PENDING_INPUT_GRACE=30s (longer than any storage cut, so no live submit's upload is swept; the
default is 10 min): a killed API's leftover input is swept before the orphan check, which waits
for the pending set to empty.
REDIS_WAIT_REPLICAS=1 (set in ``start``): the replica confirms every status write, so a master
SIGKILLed with a write not yet replicated cannot take it along (the worker's outbox re-applies
it on the new master); with one replica that means writes wait for the old master to re-attach."""

SENTINEL_DOWN_AFTER_MS = 5000
"""The sentinels' down-after-milliseconds in the chaos run. The sentinel tests use 1 s for speed;
under the chaos load a new master was once silent for 1 s right after its promotion, the
sentinels failed over again to the old master restarted from its stale data, and writes to the
promoted one were lost. 5 s is still shorter than the 30 s Redis ships with."""


@dataclass
class Api:
    """One pixq-api on a fixed port; ``proc`` is replaced on every restart."""

    index: int
    port: int
    tmpdir: Path
    proc: Proc | None = None
    up: bool = False
    """Whether the load may send to it (False from just before a kill until it answers again)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class ChaosStack:
    tmp: Path
    cluster: NatsCluster
    redis: SentinelGroup
    moto: object
    s3_endpoint: str
    bucket: str
    proxy: ToggleProxy
    procs: FaultStack
    apis: list[Api] = field(default_factory=list)
    restarts: int = 0

    @property
    def s3(self):
        return boto3.client("s3", endpoint_url=f"http://{self.s3_endpoint}", aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1")

    def live_apis(self) -> list[Api]:
        return [api for api in self.apis if api.up]

    def live_workers(self) -> list[Proc]:
        return [proc for proc in self.procs.workers if proc.process.poll() is None]

    def start_api(self, api: Api, timeout: float = 60.0) -> None:
        """Start (or restart) ``api`` on its port and wait until it is ready (process start-up)."""
        env = {**self.procs.env, "API_PORT": str(api.port), "TMPDIR": str(api.tmpdir)}
        self.restarts += api.proc is not None
        log = self.tmp / f"api-{api.index}.log"
        with open(log, "ab") as handle:
            process = subprocess.Popen([str(BIN / "pixq-api")], env=env, stdout=handle, stderr=subprocess.STDOUT)
        api.proc = Proc(f"api-{api.index}", process, log)
        wait_proc_http(api.proc, f"{api.url}/health/ready", timeout)
        api.up = True

    def start_worker(self, wait: str | None = "ready") -> Proc:
        """The workers reach S3 only through the proxy (cutting it is the storage outage); the
        APIs reach it directly, so uploads go on."""
        return self.procs.spawn_worker(wait=wait, STORAGE_ENDPOINT=self.proxy.endpoint)

    def stop(self) -> None:
        for api in self.apis:
            if api.proc:
                self.procs.apis.append(api.proc)
        self.procs.stop()
        self.proxy.stop()
        self.redis.stop()
        self.cluster.stop()
        self.moto.stop()


def seed_bucket(stack: ChaosStack, objects: dict[str, bytes]) -> None:
    client = stack.s3
    client.create_bucket(Bucket=stack.bucket)
    for key, data in objects.items():
        client.put_object(Bucket=stack.bucket, Key=key, Body=data)


def start(tmp: Path, seeds: dict[str, bytes]) -> ChaosStack:
    """Start every server and process (start-up: each waits for its own readiness)."""
    from moto.server import ThreadedMotoServer

    tmp.mkdir(parents=True, exist_ok=True)
    cluster = NatsCluster(tmp).start()
    started: list = [cluster]
    try:
        redis = start_group(tmp / "redis", down_after_ms=SENTINEL_DOWN_AFTER_MS)
        started.append(redis)
        moto_port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
        moto.start()
        started.append(moto)
        endpoint = f"127.0.0.1:{moto_port}"
        proxy = ToggleProxy("127.0.0.1", moto_port).start()
        started.append(proxy)
        bucket = f"pixq-chaos-{uuid.uuid4().hex[:10]}"
        env = stack_env(cluster.nodes[0].port, 0, tmp, **PROCESS_ENV)
        env.update({"NATS_URL": cluster.url, "NATS_STREAM_REPLICAS": "3",
                    "REDIS_URL": redis.redis_url, "REDIS_SENTINELS": redis.addresses, "REDIS_WAIT_REPLICAS": "1",
                    "REDIS_SENTINEL_MASTER": MASTER_NAME, "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
                    "STORAGE_TYPE": "minio", "STORAGE_ENDPOINT": endpoint, "BUCKET_NAME": bucket,
                    "MINIO_ACCESS_KEY": ACCESS_KEY, "MINIO_SECRET_KEY": SECRET_KEY})
        stack = ChaosStack(tmp, cluster, redis, moto, endpoint, bucket, proxy, FaultStack(env, tmp))
        seed_bucket(stack, seeds)  # before the APIs: they would create the bucket empty
        for index in range(1, APIS + 1):
            tmpdir = tmp / f"api-{index}-tmp"
            tmpdir.mkdir(exist_ok=True)
            stack.apis.append(Api(index, free_port(), tmpdir))
        stack.start_api(stack.apis[0])  # the first API creates the streams at 3 replicas
        for api in stack.apis[1:]:
            stack.start_api(api)
        workers = [stack.start_worker(wait=None) for _ in range(WORKERS)]
        for worker in workers:
            wait_proc_http(worker, f"{worker.metrics_url}/health/ready", 60)
        asyncio.run(cluster.wait_in_sync(PIXQ_STREAMS, timeout=60))
        return stack
    except BaseException:
        for thing in reversed(started):
            thing.stop()
        raise


def wait_ready(proc: Proc, timeout: float = 60.0) -> None:
    wait_proc_http(proc, f"{proc.metrics_url}/health/ready", timeout)
