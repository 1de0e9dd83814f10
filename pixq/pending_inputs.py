"""Uploaded inputs whose submit has not finished, so that an API killed mid-submit leaves no
input behind for good.

A multipart submit stores the upload (``inputs/<tenant>/<job_id>``) before it records the job;
a SIGKILL between the two, or in the middle of a rollback, used to leave an object that no job
names and that nothing deleted (the chaos run's "left by a killed API"). Now the submit marks
the key in PENDING_INPUTS_KEY (a sorted set scored by time) before storing it and unmarks it
once the job is published or the upload rolled back. Every API sweeps marks older than
PENDING_INPUT_GRACE: an input whose job has no status record is deleted; one whose job exists
(the unmark was lost) is kept. The work is proportional to submits that died, never to the
size of the bucket (no listing). Hand-rolled: it is pixq's own submit protocol.

A mark lost with a Redis failover before it replicated leaves that one input unswept, as
before; the mark is one ZADD per upload (~0.1 ms of API CPU).
"""

import asyncio
import time

import redis.asyncio as redis
import structlog
from redis.exceptions import RedisError

from pixq import housekeeping, names
from pixq.errors import PixqError, status_unavailable
from pixq.status import StatusStore
from pixq.storage import Storage

log = structlog.get_logger("pixq.inputs")

SWEEP_BATCH = 100
"""Marks handled per sweep round (the next round takes the rest)."""


async def mark(client: redis.Redis, key: str) -> None:
    """Before the upload is stored. STATUS_UNAVAILABLE when Redis does not answer: the submit
    then fails before anything is stored."""
    try:
        await client.zadd(names.PENDING_INPUTS_KEY, {key: time.time()})
    except (RedisError, OSError) as exc:
        raise status_unavailable(exc) from None


async def unmark(client: redis.Redis, key: str) -> None:
    """Once the job is published or its upload deleted. Best effort: a mark left over is
    swept later, and kept input of an existing job is never deleted."""
    try:
        await client.zrem(names.PENDING_INPUTS_KEY, key)
    except (RedisError, OSError):
        pass


async def sweep(status: StatusStore, storage: Storage, grace: float, now: float | None = None) -> int:
    """One round: marks older than ``grace`` seconds; deletes the inputs no job names. Returns
    how many inputs were deleted. Another API sweeping at once is harmless (deletes are idempotent)."""
    cutoff = (time.time() if now is None else now) - grace
    client = status.client
    keys = await client.zrangebyscore(names.PENDING_INPUTS_KEY, "-inf", cutoff, start=0, num=SWEEP_BATCH)
    deleted = 0
    for key in keys:
        job_id = key.rsplit("/", 1)[-1]
        if await status.get(job_id) is None:
            await storage.delete(key)
            deleted += 1
            log.warning("pending_input_deleted", storage_key=key, job_id=job_id, reason="submit never finished")
        await client.zrem(names.PENDING_INPUTS_KEY, key)
    return deleted


async def run_sweeper(status: StatusStore, storage: Storage, grace: float, interval: float,
                      stop: asyncio.Event) -> None:
    """Sweep every ``interval`` seconds until ``stop`` (pixq.housekeeping); an outage is logged
    and tried again next time."""
    await housekeeping.every(interval, stop, lambda: sweep(status, storage, grace), "pending_input_sweep",
                             (PixqError, RedisError, OSError))
