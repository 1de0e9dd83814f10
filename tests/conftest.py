"""Fixtures: real nats-server and redis-server per test, one moto S3 server per session,
the real API app and worker running against them, for both storage backends."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from api.app import create_app
from pixq.settings import Settings
from tests.servers import ServerProcess, free_port, nats_server, redis_server
from worker.main import serve as serve_worker

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def nats(tmp_path: Path) -> ServerProcess:
    server = nats_server(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def redis_proc(tmp_path: Path) -> ServerProcess:
    server = redis_server(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A private CA with server and client certificates for 127.0.0.1 (TLS tests)."""
    from tests.tls import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory):
    """A second CA: its certificates must not be trusted by a client of the first."""
    from tests.tls import make_pki

    return make_pki(tmp_path_factory.mktemp("other-pki"), name="intruder")


@pytest.fixture(params=["local", "minio"])
def storage_type(request) -> str:
    return request.param


@pytest.fixture
def make_settings(nats: ServerProcess, redis_proc: ServerProcess, tmp_path: Path,
                  request) -> Callable[..., Settings]:
    """Settings pointing at this test's servers; ``storage_type='minio'`` uses the moto endpoint."""

    def build(storage_type: str = "local", **overrides) -> Settings:
        values = dict(nats_url=f"nats://127.0.0.1:{nats.port}", redis_url=f"redis://127.0.0.1:{redis_proc.port}/0",
                      storage_type=storage_type, storage_dir=tmp_path / "storage", metrics_port=0,
                      url_signing_key="test-signing-key", max_retries=2, retry_backoff=[0.0, 0.2],
                      ack_wait=5.0, job_timeout=20.0, worker_shutdown_grace=5.0, log_level="warning",
                      # Tests poll and submit faster than a client would: tests/test_rate_limits.py
                      # sets its own limits.
                      rate_limit="off", rate_limit_per_ip="off",
                      # Tests submit the same generated images again and again and expect them
                      # processed; tests/test_reuse.py turns reuse on.
                      reuse_outputs=False)
        if storage_type == "minio":
            endpoint = request.getfixturevalue("s3_endpoint")
            values.update(storage_endpoint=endpoint, bucket_name=f"pixq-{uuid.uuid4().hex[:12]}",
                          minio_access_key="testing", minio_secret_key="testing")
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def settings(make_settings, storage_type: str) -> Settings:
    return make_settings(storage_type)


@contextlib.asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[TestClient]:
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[asyncio.Task]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve_worker(settings, stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[TestClient]:
    async with running_api(settings) as client:
        yield client


@pytest.fixture
async def worker(settings: Settings, api) -> AsyncIterator[asyncio.Task]:
    async with running_worker(settings) as task:
        yield task
