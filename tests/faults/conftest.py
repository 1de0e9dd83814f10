"""Fixtures of the fault tests: a FaultStack factory on this test's nats-server and redis-server."""

from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.faults.harness import FaultStack
from tests.faults.tcp_proxy import ToggleProxy
from tests.stack import stack_env

FAST = {"ACK_WAIT": "2s", "MAX_RETRIES": "3", "RETRY_BACKOFF": "0s,500ms,1s", "JOB_TIMEOUT": "20s",
        "WORKER_SHUTDOWN_GRACE": "10s", "WORKER_CONCURRENCY": "2", "VIPS_CONCURRENCY": "1",
        "LOG_LEVEL": "info"}
"""Short ACK_WAIT so redelivery after a crash is quick; every test overrides what it is about."""


def stack_factory(nats_port: int, redis_port: int, tmp_path: Path,
                  **base: str) -> Iterator[Callable[..., FaultStack]]:
    """The body of a ``make_stack`` fixture (``yield from`` it): builds FaultStacks on these
    servers with FAST, then ``base``, then the call's overrides, and stops them all at teardown."""
    stacks: list[FaultStack] = []

    def build(**overrides: str) -> FaultStack:
        stack = FaultStack(stack_env(nats_port, redis_port, tmp_path, **{**FAST, **base, **overrides}), tmp_path)
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()


@pytest.fixture
def make_stack(nats, redis_proc, tmp_path) -> Iterator[Callable[..., FaultStack]]:
    yield from stack_factory(nats.port, redis_proc.port, tmp_path)


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


@pytest.fixture
def proxy(s3_endpoint):
    """A cuttable TCP proxy in front of the S3 endpoint (workers reach storage through it)."""
    host, port = s3_endpoint.rsplit(":", 1)
    proxy = ToggleProxy(host, int(port)).start()
    yield proxy
    proxy.stop()


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.slow)
