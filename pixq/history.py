"""Job history: each tenant's jobs (and all jobs, for admins), newest first, in stable pages.

Two Redis sorted sets (keys in pixq.names) hold job ids scored by creation time in
milliseconds. Redis orders equal scores by member, so the order (score desc, job_id desc) is
total, and a cursor naming the last item seen, ``(score, job_id)``, continues strictly after
it: a job created while a client pages sits before its first page and never shifts later
pages, so every job appears exactly once. Entries older than the status TTL are trimmed on
write, as their status hashes have expired too.
"""

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timezone

import redis.asyncio as redis
from redis.exceptions import RedisError

from pixq import names
from pixq.errors import ErrorCode, PixqError, status_unavailable


@dataclass(frozen=True)
class Cursor:
    score: int
    job_id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"{self.score}:{self.job_id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        """An opaque cursor from a previous page; INVALID_PARAMETERS for anything else."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            score, _, job_id = raw.partition(":")
            if not (score.isascii() and score.isdigit() and len(score) <= 16 and names.is_job_id(job_id)):
                raise ValueError(raw)
            return cls(int(score), job_id)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise PixqError(ErrorCode.INVALID_PARAMETERS, "cursor is not one this API returned") from None


def millis(iso_timestamp: str) -> int:
    """Score of an ISO 8601 timestamp (pixq.jobs.utc_now's format, or any with a zone)."""
    moment = datetime.fromisoformat(iso_timestamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def entry(tenant: str, created_at: str, ttl_seconds: int) -> dict[str, object]:
    """The status script's options that index a new job in its tenant's history and the admin's
    and trim their expired entries (pixq.status ``_ADVANCE``), in the same round trip that
    records the job: ``history`` (the two keys), ``score``, ``trim_below`` (exclusive)."""
    score = millis(created_at)
    return {"history": [names.tenant_jobs_key(tenant), names.ALL_JOBS_KEY], "score": str(score),
            "trim_below": f"({score - ttl_seconds * 1000}"}


async def forget(client: redis.Redis, tenant: str, job_id: str) -> None:
    """Remove a job rolled back at submit (best effort, as the status delete is)."""
    try:
        async with client.pipeline(transaction=True) as pipe:
            pipe.zrem(names.tenant_jobs_key(tenant), job_id)
            pipe.zrem(names.ALL_JOBS_KEY, job_id)
            await pipe.execute()
    except (RedisError, OSError):
        pass


async def newest_first(client: redis.Redis, key: str, after: Cursor | None, created_after: int | None,
                       created_before: int | None, batch_size: int):
    """Yield batches of up to ``batch_size`` ``(score, job_id)``, newest first, strictly after the
    cursor, within the creation range (created_after inclusive, created_before exclusive, in ms).
    Each batch is one round trip; no batch is empty."""
    top: int | float = float("inf") if created_before is None else created_before - 1
    if after is not None:
        top = min(top, after.score)
    bottom = "-inf" if created_after is None else created_after
    offset = 0
    while True:
        try:
            read = await client.zrange(key, "+inf" if top == float("inf") else int(top), bottom, desc=True,
                                       byscore=True, offset=offset, num=batch_size, withscores=True)
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None
        batch = []
        for member, score in read:
            job_id = member.decode() if isinstance(member, bytes) else member
            score = int(score)
            if after is not None and score == after.score and job_id >= after.job_id:
                continue  # at or before the cursor within the same millisecond
            batch.append((score, job_id))
        if batch:
            yield batch
        if len(read) < batch_size:
            return
        offset += batch_size
