"""Fixtures of the cluster tests: a 3-node JetStream cluster, a redis-server, and a FaultStack
factory whose processes reach NATS through all three nodes with every stream at 3 replicas."""

from collections.abc import Callable, Iterator

import aiohttp
import pytest

from tests.faults.conftest import stack_factory
from tests.faults.harness import FaultStack
from tests.nats_cluster import NatsCluster


@pytest.fixture
def nats_cluster(tmp_path) -> NatsCluster:
    cluster = NatsCluster(tmp_path).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def make_stack(nats_cluster, redis_proc, tmp_path) -> Iterator[Callable[..., FaultStack]]:
    """FaultStacks whose processes list all three nodes in NATS_URL, every stream at R3."""
    yield from stack_factory(nats_cluster.nodes[0].port, redis_proc.port, tmp_path,
                             NATS_URL=nats_cluster.url, NATS_STREAM_REPLICAS="3")


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/cluster/" in str(item.fspath):
            item.add_marker(pytest.mark.slow)
