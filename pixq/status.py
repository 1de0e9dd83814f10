"""Job status in Redis: one hash per job, updated only forwards.

Every update carries its position ``(generation, attempt, phase)``; a Lua script applies
it only if it is ahead of the stored one, and never touches a terminal status of the
same generation. So a late or duplicate delivery can never move a completed job back,
whatever order workers write in. Only a DLQ replay starts a new generation.
"""

import json
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from pixq import history, names
from pixq.batches import BatchStore
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import PHASE_OF, JobStatus, utc_now
from pixq.settings import Settings
from pixq.transport import redis_client

# KEYS[1] job hash. ARGV: generation, attempt, phase, ttl, then field/value pairs.
# Returns the stored hash (HGETALL) if applied, 0 if the stored status is ahead or terminal in
# this generation: the applied record is what the job's event announces (pixq.events).
_ADVANCE = """
local cur = redis.call('HMGET', KEYS[1], 'generation', 'attempts', 'phase')
local g, a, p = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if cur[1] then
  local cg, ca, cp = tonumber(cur[1]), tonumber(cur[2]), tonumber(cur[3])
  if g < cg then return 0 end
  if g == cg then
    if cp == 3 then return 0 end
    if a < ca or (a == ca and p <= cp) then return 0 end
  end
end
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'attempts', ARGV[2], 'phase', ARGV[3],
           unpack(ARGV, 5))
local ttl = tonumber(ARGV[4])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return redis.call('HGETALL', KEYS[1])
"""

_JSON_FIELDS = ("result",)


def _encode(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _decode(raw: dict[str, str]) -> dict[str, Any]:
    """A stored hash as a status dict: JSON fields decoded, counters as ints, empty as None."""
    record: dict[str, Any] = {key: (value or None) for key, value in raw.items()}
    for name in _JSON_FIELDS:
        if record.get(name):
            record[name] = json.loads(record[name])
    for name in ("attempts", "generation", "phase"):
        record[name] = int(record.get(name) or 0)
    return record


class StatusStore:
    """Reads and writes job statuses; raises PixqError(STATUS_UNAVAILABLE) when Redis is down."""

    def __init__(self, client: redis.Redis, job_ttl: float = 7 * 86400) -> None:
        self.client = client
        self.job_ttl = int(job_ttl)
        self._advance = client.register_script(_ADVANCE)
        self.batches = BatchStore(client, self.job_ttl)
        """Batches live beside their jobs' statuses, with the same TTL."""

    @classmethod
    def from_settings(cls, settings: Settings) -> "StatusStore":
        """On REDIS_URL, with credentials and TLS as pixq.transport sets them up."""
        return cls(redis_client(settings))

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def create(self, job_id: str, job_type: str, tenant: str, request_id: str, generation: int = 0,
                     **extra: Any) -> dict:
        """Record a new job as queued (attempt 0), owned by ``tenant``; ``extra`` holds optional
        fields (``callback_url``, ``batch_id``). Returns the stored record."""
        now = utc_now()
        record = {"job_id": job_id, "type": job_type, "tenant": tenant, "status": JobStatus.QUEUED.value,
                  "created_at": now, "updated_at": now, "request_id": request_id,
                  **{key: value for key, value in extra.items() if value}}
        stored = await self.advance(job_id, generation, 0, JobStatus.QUEUED, **record)
        await history.record(self.client, tenant, job_id, now, self.job_ttl)
        return stored or record

    async def advance(self, job_id: str, generation: int, attempt: int, status: JobStatus, /,
                      **fields: Any) -> dict | None:
        """Move a job forward to ``status`` at ``attempt``: the record as now stored, or None when
        the stored status is ahead (nothing changed, so there is nothing to announce)."""
        fields = {"status": status.value, "updated_at": utc_now(), **fields}
        for name in ("error", "error_code", "next_attempt_at"):
            fields.setdefault(name, "")
        if status is not JobStatus.COMPLETED:
            fields.setdefault("result", "")
        flat: list[str] = []
        for key, value in fields.items():
            flat += [key, _encode(value)]
        try:
            applied = await self._advance(keys=[names.job_key(job_id)],
                                          args=[generation, attempt, int(PHASE_OF[status]),
                                                self.job_ttl, *flat])
        except (RedisError, OSError) as exc:
            raise PixqError(ErrorCode.STATUS_UNAVAILABLE, f"status store unavailable: {exc}") from None
        if not isinstance(applied, list):
            return None
        return _decode(dict(zip(applied[::2], applied[1::2])))

    async def get(self, job_id: str) -> dict | None:
        """The stored status as a dict with JSON fields decoded, or None for an unknown job."""
        try:
            raw = await self.client.hgetall(names.job_key(job_id))
        except (RedisError, OSError) as exc:
            raise PixqError(ErrorCode.STATUS_UNAVAILABLE, f"status store unavailable: {exc}") from None
        return _decode(raw) if raw else None

    async def delete(self, job_id: str, tenant: str) -> None:
        """Roll back a job that could not be published (nothing half-created, history included)."""
        try:
            await self.client.delete(names.job_key(job_id))
        except (RedisError, OSError):
            pass
        await history.forget(self.client, tenant, job_id)

    async def get_many(self, job_ids: list[str]) -> list[dict | None]:
        """Several statuses in one round trip (history pages), None for expired ones."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hgetall(names.job_key(job_id))
                raws = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise PixqError(ErrorCode.STATUS_UNAVAILABLE, f"status store unavailable: {exc}") from None
        return [_decode(raw) if raw else None for raw in raws]

    async def restart(self, job_id: str, generation: int, job_type: str, tenant: str, created_at: str,
                      request_id: str) -> dict | None:
        """Start a new generation at queued (a DLQ replay): the one way back from a terminal status."""
        return await self.advance(job_id, generation, 0, JobStatus.QUEUED, job_id=job_id, type=job_type,
                                  tenant=tenant, created_at=created_at, request_id=request_id)

    async def idempotent_job(self, tenant: str, client_key: str) -> str | None:
        """The job this tenant's Idempotency-Key already created, if any (within IDEMPOTENCY_TTL)."""
        try:
            return await self.client.get(names.idempotency_key(tenant, client_key))
        except (RedisError, OSError) as exc:
            raise PixqError(ErrorCode.STATUS_UNAVAILABLE, f"status store unavailable: {exc}") from None

    async def claim_idempotency_key(self, tenant: str, client_key: str, job_id: str, ttl: float) -> str | None:
        """Bind ``client_key`` to ``job_id``; return the job id it was already bound to, if any."""
        key = names.idempotency_key(tenant, client_key)
        try:
            if await self.client.set(key, job_id, nx=True, ex=max(1, int(ttl))):
                return None
            return await self.client.get(key)
        except (RedisError, OSError) as exc:
            raise PixqError(ErrorCode.STATUS_UNAVAILABLE, f"status store unavailable: {exc}") from None

    async def release_idempotency_key(self, tenant: str, client_key: str, job_id: str) -> None:
        """Forget a binding whose job was rolled back, so the client's retry can succeed."""
        key = names.idempotency_key(tenant, client_key)
        try:
            if await self.client.get(key) == job_id:
                await self.client.delete(key)
        except (RedisError, OSError):
            pass
