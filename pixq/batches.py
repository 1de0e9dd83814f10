"""Batches: up to 100 jobs submitted together, tracked until every accepted one is terminal.

Redis holds, per batch (keys in pixq.names): a hash (tenant, created_at, counts, flags), the
list of its job ids, and the set of job ids still pending. The API reserves every item's
job id in the pending set *before* accepting any item, so a job that finishes at once is
still counted; an item refused at submit is removed again. When the API has gone through
every item it seals the batch (``finish``: releases, job list and seal in one script, so a
Redis failure half-way can never leave a batch sealed without its jobs, and a retry of it
changes nothing). Whichever comes last, the seal or the last accepted job's terminal
status, finds the batch complete (one Lua script) and publishes its one
``batch.completed`` event (pixq.lifecycle); its Nats-Msg-Id makes a second publish a no-op.

An item whose Idempotency-Key replays an earlier job is listed with that job's id, but is
not tracked: it was accepted (and may have finished) before the batch existed.
"""

from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from pixq import names
from pixq.errors import status_unavailable
from pixq.jobs import JobStatus, utc_now

MAX_ITEMS = 100

# KEYS: batch hash, pending set. ARGV[1]: job id leaving the pending set, or "" to seal.
# Returns 1 while the batch is sealed, has nothing pending and has not been marked completed:
# the caller then publishes batch.completed and marks it (mark_completed). A caller whose
# publish failed leaves it unmarked, so the next settle (a redelivery) publishes it again.
_SETTLE = """
if ARGV[1] ~= '' then
  redis.call('SREM', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'sealed', '1')
end
if redis.call('HGET', KEYS[1], 'sealed') ~= '1' then return 0 end
if redis.call('SCARD', KEYS[2]) > 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'completed_at') == 1 then return 0 end
return 1
"""

# KEYS: batch hash, pending set, jobs list. ARGV[1]: TTL (s), ARGV[2]: n, ARGV[3..2+n]: job ids
# leaving the pending set (refused or replayed items), ARGV[3+n..]: the listed job ids in item
# order. Releases, records and seals once (a repeat only re-checks); then answers as _SETTLE.
_FINISH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'sealed') ~= '1' then
  local released = tonumber(ARGV[2])
  for i = 3, 2 + released do redis.call('SREM', KEYS[2], ARGV[i]) end
  for i = 3 + released, #ARGV do redis.call('RPUSH', KEYS[3], ARGV[i]) end
  redis.call('EXPIRE', KEYS[3], ARGV[1])
  redis.call('HSET', KEYS[1], 'sealed', '1')
end
if redis.call('SCARD', KEYS[2]) > 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'completed_at') == 1 then return 0 end
return 1
"""


class BatchStore:
    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self.client = client
        self.ttl = int(ttl_seconds)
        self._settle = client.register_script(_SETTLE)
        self._finish = client.register_script(_FINISH)

    async def reserve(self, batch_id: str, tenant: str, job_ids: list[str], callback_url: str | None) -> None:
        """Create the batch with every item's job id pending (before any item is accepted)."""
        batch = {"batch_id": batch_id, "tenant": tenant, "created_at": utc_now(), "items": len(job_ids),
                 "callback_url": callback_url or ""}
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(names.batch_key(batch_id), mapping=batch)
                if job_ids:  # a batch whose every item was refused before reserving has none
                    pipe.sadd(names.batch_pending_key(batch_id), *job_ids)
                for key in (names.batch_key(batch_id), names.batch_pending_key(batch_id)):
                    pipe.expire(key, self.ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None

    async def record_jobs(self, batch_id: str, job_ids: list[str]) -> None:
        """The batch's listed jobs, in item order (accepted and replayed items)."""
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                if job_ids:
                    pipe.rpush(names.batch_jobs_key(batch_id), *job_ids)
                pipe.expire(names.batch_jobs_key(batch_id), self.ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None

    async def release(self, batch_id: str, job_id: str) -> bool:
        """An item refused at submit (or a replayed one) leaves the pending set; True if that
        completed the batch."""
        return await self._run(batch_id, job_id)

    async def seal(self, batch_id: str) -> bool:
        """Every item has been through submit; True if the batch is complete already."""
        return await self._run(batch_id, "")

    async def finish(self, batch_id: str, listed: list[str], released: list[str]) -> bool:
        """Every item has been through submit: release ``released`` (refused and replayed items'
        reserved ids), record ``listed`` (the batch's job ids in item order) and seal, atomically.
        True when the batch is complete already. Safe to repeat (only the first call writes)."""
        keys = [names.batch_key(batch_id), names.batch_pending_key(batch_id), names.batch_jobs_key(batch_id)]
        try:
            return bool(await self._finish(keys=keys, args=[self.ttl, len(released), *released, *listed]))
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None

    async def job_finished(self, batch_id: str, job_id: str) -> bool:
        """A tracked job reached a terminal status; True when the batch is now complete."""
        return await self._run(batch_id, job_id)

    async def _run(self, batch_id: str, job_id: str) -> bool:
        try:
            return bool(await self._settle(keys=[names.batch_key(batch_id), names.batch_pending_key(batch_id)],
                                           args=[job_id]))
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None

    async def mark_completed(self, batch_id: str, completed_at: str) -> None:
        """Record that batch.completed was published (GET then reports the batch completed)."""
        try:
            await self.client.hsetnx(names.batch_key(batch_id), "completed_at", completed_at)
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None

    async def get(self, batch_id: str) -> dict[str, Any] | None:
        """The batch hash plus its job ids, or None."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(names.batch_key(batch_id))
                pipe.lrange(names.batch_jobs_key(batch_id), 0, -1)
                pipe.scard(names.batch_pending_key(batch_id))
                raw, job_ids, pending = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None
        if not raw:
            return None
        return {**raw, "job_ids": job_ids, "pending": int(pending)}

    @staticmethod
    def unannounced(batch: dict[str, Any]) -> bool:
        """Sealed with nothing pending, but batch.completed was never marked published (its
        publisher could not reach NATS): whoever sees this may complete it again (idempotent)."""
        return batch.get("sealed") == "1" and batch["pending"] == 0 and not batch.get("completed_at")


def public_batch(batch: dict[str, Any], records: list[dict | None]) -> dict[str, Any]:
    """``{batch_id, status, created_at, completed_at, total, counts, job_ids}``: what GET
    /api/v1/batches/{id} answers and ``batch.completed`` carries. ``counts`` are by the jobs'
    current statuses (an expired status counts as ``expired``)."""
    counts = {status.value: 0 for status in JobStatus}
    for record in records:
        key = record.get("status") if record else "expired"
        counts[key] = counts.get(key, 0) + 1
    return {"batch_id": batch["batch_id"], "status": "completed" if batch.get("completed_at") else "running",
            "created_at": batch.get("created_at"), "completed_at": batch.get("completed_at") or None,
            "total": len(batch["job_ids"]), "counts": counts, "job_ids": batch["job_ids"]}
