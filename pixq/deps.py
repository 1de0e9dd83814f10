"""Opening, checking and closing what both the API and a worker depend on: storage, Redis, NATS."""

import asyncio
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from pixq import queue
from pixq.settings import Settings
from pixq.status import StatusStore
from pixq.storage import Storage, make_storage

CHECK_TIMEOUT_SECONDS = 2.0


@dataclass
class Dependencies:
    storage: Storage
    status: StatusStore
    nc: NATS
    js: JetStreamContext

    @classmethod
    async def open(cls, settings: Settings, client_name: str) -> "Dependencies":
        """Storage ready (bucket or directory), Redis client, NATS connected, streams in place.

        Consumers are not touched here: they belong to the workers
        (pixq.queue.ensure_worker_consumers, called by worker.main), so an API process never
        imposes its own MAX_RETRIES or ACK_WAIT on them."""
        storage = make_storage(settings)
        await storage.ensure_ready()
        status = StatusStore.from_settings(settings)
        nc = await queue.connect(settings, name=client_name)
        js = nc.jetstream()
        await queue.ensure_streams(js, settings)
        return cls(storage=storage, status=status, nc=nc, js=js)

    async def check(self) -> dict[str, bool]:
        """Readiness: does each dependency answer now (each bounded by CHECK_TIMEOUT_SECONDS)?"""

        async def answers(probe) -> bool:
            try:
                return bool(await asyncio.wait_for(probe, CHECK_TIMEOUT_SECONDS))
            except Exception:
                return False

        redis_ok, storage_ok = await asyncio.gather(answers(self.status.ping()), answers(self.storage.ping()))
        return {"nats": self.nc.is_connected, "redis": redis_ok, "storage": storage_ok}

    async def close(self) -> None:
        await queue.close(self.nc)
        await self.status.close()
