"""pixq's Redis pool (pixq.transport.QuickBlockingPool) against a real redis-server: its fast path
for an idle connection must keep the blocking pool's promises — never more than max_connections
open, and a caller that has to wait is woken when a connection comes back (a missed wake-up
would surface as redis-py's "No connection available" after the pool timeout); and after a Redis
restart, an idle pooled connection is reopened before its next command, not failed with it."""

import asyncio

import pytest
import redis.asyncio as redis

from pixq.settings import Settings
from pixq.status import StatusStore
from pixq.transport import QuickBlockingPool

pytestmark = pytest.mark.timeout(60)


async def test_a_burst_beyond_the_pool_waits_and_is_served(redis_proc):
    url = f"redis://127.0.0.1:{redis_proc.port}/0"
    pool = QuickBlockingPool.from_url(url, max_connections=3, timeout=2, decode_responses=True)
    client = redis.Redis(connection_pool=pool)
    feeder = redis.Redis.from_url(url, decode_responses=True)
    opened: list[int] = []
    try:
        # 20 callers block server-side in BLPOP on 3 connections: 17 wait in the pool, each
        # served only when a popped caller hands its connection back.
        takers = [asyncio.create_task(client.blpop(["pool-test"], timeout=10)) for _ in range(20)]
        for value in range(20):
            await feeder.rpush("pool-test", value)
            opened.append(len(pool._available_connections) + len(pool._in_use_connections))
        got = await asyncio.wait_for(asyncio.gather(*takers), 20)
        assert sorted(int(item[1]) for item in got) == list(range(20))
        assert max(opened) <= 3
        # The fast path afterwards: idle connections reused, none opened.
        assert await asyncio.gather(*(client.ping() for _ in range(50))) == [True] * 50
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 3
    finally:
        await client.aclose()
        await feeder.aclose()


async def test_idle_pooled_connections_survive_a_redis_restart(redis_proc):
    """redis-py 8's "maintenance notifications" (on in "auto" mode) skip its pool's check that a
    pooled connection is still open; pixq turns them off (pixq.transport.NO_MAINT_NOTIFICATIONS).
    Before, the first command on each idle connection after a restart failed (a 503 for a
    request, STATUS_UNAVAILABLE, while Redis was back)."""
    store = StatusStore.from_settings(Settings(redis_url=f"redis://127.0.0.1:{redis_proc.port}/0"))
    try:
        await asyncio.gather(*(store.client.ping() for _ in range(4)))  # 4 connections, now idle
        assert len(store.client.connection_pool._available_connections) == 4
        # In a thread, so this process's event loop runs meanwhile and sees each connection closed.
        await asyncio.to_thread(redis_proc.stop)
        await asyncio.to_thread(redis_proc.start)
        for _ in range(4):
            assert await store.get("0f0e0d0c-0000-4000-8000-000000000009") is None
        assert await store.ping()
    finally:
        await store.close()
