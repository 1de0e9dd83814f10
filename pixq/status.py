"""Job status in Redis: one hash per job, updated only forwards.

Every update carries its position ``(generation, attempt, phase)``; a Lua script applies
it only if it is ahead of the stored one, and never touches a terminal status of the
same generation. So a late or duplicate delivery can never move a completed job back,
whatever order workers write in. Only a DLQ replay starts a new generation.

The same script keeps each tenant's quotas (pixq.quotas): an applied non-terminal status
adds the job to the tenant's set of jobs in flight, a terminal one removes it, and an
applied completion adds the input's megapixels to the tenant's month; each in one atomic
step with the status itself, so no crash can leave a count apart from the statuses, and a
redelivered completion is never counted twice. ``create`` checks the tenant's cap and
budget in that step too (no extra round trip on the submit path). The set's key is formed
in the script from the job's stored tenant (a worker's write does not name it), other keys
travel in the script's options, and pruning reads other jobs' hashes: fine on one Redis or
Sentinel, not on Redis Cluster (whose scripts must name every key in KEYS).
"""

import json
from datetime import datetime, timezone
from typing import Any

import redis.asyncio as redis
from redis.exceptions import NoScriptError, RedisError

from pixq import history, names, quotas
from pixq.batches import BatchStore
from pixq.errors import ErrorCode, PixqError, status_unavailable
from pixq.jobs import PHASE_OF, JobStatus, utc_now
from pixq.quotas import TenantQuota
from pixq.settings import Settings
from pixq.transport import redis_client

# A tenant's in-flight set (pixq.quotas) holds the ids of its jobs in flight, and
# ``r:<job id>`` for a batch item reserved but not created yet. prune(set, ...) drops those
# of its ``limit`` oldest members that no longer count: a job whose status is terminal or
# gone (expired, deleted), a reservation older than ``stale_before`` (ms; its API died).
_PRUNE = """
local function prune(set, job_prefix, stale_before, limit)
  local oldest = redis.call('ZRANGE', set, 0, limit - 1, 'WITHSCORES')
  for i = 1, #oldest, 2 do
    local member, stale = oldest[i], false
    if string.sub(member, 1, 2) == 'r:' then
      stale = tonumber(oldest[i + 1]) < stale_before
    else
      local phase = redis.call('HGET', job_prefix .. member, 'phase')
      stale = (not phase) or phase == '3'
    end
    if stale then redis.call('ZREM', set, member) end
  end
end
"""

# KEYS[1] job hash. ARGV: generation, attempt, phase, ttl, options (JSON), then field/value
# pairs. Options, always: job_id, in_flight_prefix, now (ms); on create with a quota:
# in_flight (the tenant's set), cap, job_prefix, stale_before, prune_limit, and with a
# megapixel budget usage (this month's key) and budget; on a completion: usage, megapixels,
# usage_ttl; on create, history, score, trim_below (pixq.history.entry: the job's history
# entries, written with its status). A reserved job (a batch item: _RESERVE admitted it) is
# not checked again. On the API's create, unpublished, message_key and message: the job joins
# the unpublished set with its message (pixq.intake.requeue_unpublished); on a worker's write
# (attempt > 0), unpublished and message_key: the job leaves it, since a worker has its message.
# Returns the stored hash (HGETALL) if applied, {0, stored hash} if the stored status is ahead or
# terminal in this generation (a worker's duplicate check rides on its processing write: no
# separate read): the applied record is what the job's event announces (pixq.events);
# -1 (cap reached) or -2 (budget used) with nothing written. An applied non-terminal status
# adds the job to its tenant's in-flight set (score: now), a terminal one removes it; an
# applied completion adds its megapixels to the month's usage: each once, with the status.
_ADVANCE = _PRUNE + """
local o = cjson.decode(ARGV[5])
local cur = redis.call('HMGET', KEYS[1], 'generation', 'attempts', 'phase')
local g, a, p = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if cur[1] then
  local cg, ca, cp = tonumber(cur[1]), tonumber(cur[2]), tonumber(cur[3])
  if g < cg or (g == cg and (cp == 3 or a < ca or (a == ca and p <= cp))) then
    return {0, redis.call('HGETALL', KEYS[1])}
  end
end
if o.cap and redis.call('ZREM', o.in_flight, 'r:' .. o.job_id) == 0
   and not redis.call('ZSCORE', o.in_flight, o.job_id) then
  if o.budget and tonumber(redis.call('GET', o.usage) or '0') >= o.budget then return -2 end
  if redis.call('ZCARD', o.in_flight) >= o.cap then
    prune(o.in_flight, o.job_prefix, o.stale_before, o.prune_limit)
    if redis.call('ZCARD', o.in_flight) >= o.cap then return -1 end
  end
end
redis.call('HSET', KEYS[1], 'generation', ARGV[1], 'attempts', ARGV[2], 'phase', ARGV[3],
           unpack(ARGV, 6))
local ttl = tonumber(ARGV[4])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
if o.unpublished then
  if a == 0 then
    redis.call('SET', o.message_key, o.message)
    if ttl > 0 then redis.call('EXPIRE', o.message_key, ttl) end
    redis.call('ZADD', o.unpublished, o.now, o.job_id)
  elseif redis.call('ZREM', o.unpublished, o.job_id) == 1 then
    redis.call('DEL', o.message_key)
  end
end
local tenant = redis.call('HGET', KEYS[1], 'tenant')
if tenant then
  local in_flight = o.in_flight_prefix .. tenant
  if p == 3 then
    redis.call('ZREM', in_flight, o.job_id)
  else
    redis.call('ZADD', in_flight, o.now, o.job_id)
    if ttl > 0 then redis.call('EXPIRE', in_flight, ttl) end
  end
end
if o.history then
  for _, key in ipairs(o.history) do
    redis.call('ZADD', key, o.score, o.job_id)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', o.trim_below)
  end
end
if p == 3 and o.megapixels then
  redis.call('INCRBYFLOAT', o.usage, o.megapixels)
  redis.call('EXPIRE', o.usage, o.usage_ttl)
end
return redis.call('HGETALL', KEYS[1])
"""

# No KEYS. ARGV: options (JSON: in_flight, job_prefix, now, cap, stale_before, prune_limit,
# ttl, and with a budget usage and budget), then a batch's job ids. Reserves every id
# (``r:<id>``, score: now) if all fit under the cap and the budget is not used up, else
# none: returns 1, or -1 (cap) or -2 (budget).
_RESERVE = _PRUNE + """
local o = cjson.decode(ARGV[1])
if o.budget and tonumber(redis.call('GET', o.usage) or '0') >= o.budget then return -2 end
local wanted = #ARGV - 1
if redis.call('ZCARD', o.in_flight) + wanted > o.cap then
  prune(o.in_flight, o.job_prefix, o.stale_before, o.prune_limit)
  if redis.call('ZCARD', o.in_flight) + wanted > o.cap then return -1 end
end
for i = 2, #ARGV do redis.call('ZADD', o.in_flight, o.now, 'r:' .. ARGV[i]) end
redis.call('EXPIRE', o.in_flight, o.ttl)
return 1
"""

_JSON_FIELDS = ("result",)


def _encode(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _refused(answer: list) -> bool:
    """The status script's answer to a refused write, ``{0, stored hash}`` (an applied one is the
    hash itself, whose first element is a field name)."""
    return bool(answer) and answer[0] == 0


def _decode(raw: dict[str, str]) -> dict[str, Any]:
    """A stored hash as a status dict: JSON fields decoded, counters as ints, empty as None."""
    record: dict[str, Any] = {key: (value or None) for key, value in raw.items()}
    for name in _JSON_FIELDS:
        if record.get(name):
            record[name] = json.loads(record[name])
    for name in ("attempts", "generation", "phase"):
        record[name] = int(record.get(name) or 0)
    return record


class Unreplicated(PixqError):
    """An applied status write no replica confirmed within REDIS_WAIT_TIMEOUT: a failover now
    could lose it, so pixq treats it as not written (the same write again is harmless)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.STATUS_UNAVAILABLE, message)


class JobExists(Exception):
    """``create(exclusive=True)`` found the job already recorded: nothing was written."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class StatusStore:
    """Reads and writes job statuses; raises PixqError(STATUS_UNAVAILABLE) when Redis is down."""

    def __init__(self, client: redis.Redis, job_ttl: float = 7 * 86400, wait_replicas: int = 0,
                 wait_timeout: float = 0.1) -> None:
        self.client = client
        self.job_ttl = int(job_ttl)
        self.wait_replicas = wait_replicas
        """Replicas that must confirm each applied status write (Redis WAIT) before it counts:
        Redis replicates asynchronously, so a write the master acknowledged and then lost in a
        failover would otherwise be final for pixq. Unconfirmed, it is a failed write (the
        worker puts it in the outbox, the API answers 503), which is safe to repeat."""
        self.wait_timeout_ms = max(1, int(wait_timeout * 1000))
        self._advance = client.register_script(_ADVANCE)
        self._reserve = client.register_script(_RESERVE)
        self.batches = BatchStore(client, self.job_ttl)
        """Batches live beside their jobs' statuses, with the same TTL."""

    @classmethod
    def from_settings(cls, settings: Settings) -> "StatusStore":
        """On REDIS_URL, with credentials and TLS as pixq.transport sets them up; status writes
        wait for REDIS_WAIT_REPLICAS replicas (docs/reliability.md, "Redis high availability")."""
        return cls(redis_client(settings), wait_replicas=settings.redis_wait_replicas,
                   wait_timeout=settings.redis_wait_timeout)

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def create(self, job_id: str, job_type: str, tenant: str, request_id: str, generation: int = 0,
                     quota: TenantQuota | None = None, exclusive: bool = False, message: bytes | None = None,
                     created_at: str | None = None, **extra: Any) -> dict:
        """Record a new job as queued (attempt 0), owned by ``tenant``; ``extra`` holds optional
        fields (``callback_url``, ``batch_id``). Returns the stored record.

        ``message``: the job's message (made with ``created_at``, the record's time), kept
        until a worker writes the job's status, so that a job whose API dies before publishing
        it is published by another (pixq.intake.requeue_unpublished).

        With a ``quota``, raises QuotaExceeded (nothing written) when the tenant already has
        its cap of jobs in flight or has used its month's megapixels, checked in the same
        script that writes the status; a job reserved by ``reserve_in_flight`` (a batch item)
        is counted already. ``exclusive``: raise JobExists when a status for ``job_id`` is
        stored already (a job id derived from content, as /img's: another request made it)."""
        now = created_at or utc_now()
        record = {"job_id": job_id, "type": job_type, "tenant": tenant, "status": JobStatus.QUEUED.value,
                  "created_at": now, "updated_at": now, "request_id": request_id,
                  **{key: value for key, value in extra.items() if value}}
        applied, stored = await self._write(job_id, generation, 0, JobStatus.QUEUED, record, quota,
                                            history.entry(tenant, now, self.job_ttl), message)
        if exclusive and not applied:
            raise JobExists(job_id)
        return (stored if applied else None) or record

    async def advance(self, job_id: str, generation: int, attempt: int, status: JobStatus, /,
                      **fields: Any) -> dict | None:
        """Move a job forward to ``status`` at ``attempt``: the record as now stored, or None when
        the stored status is ahead (nothing changed, so there is nothing to announce)."""
        applied, record = await self._write(job_id, generation, attempt, status, fields, None)
        return record if applied else None

    async def advance_or_stored(self, job_id: str, generation: int, attempt: int, status: JobStatus, /,
                                **fields: Any) -> tuple[bool, dict]:
        """advance, and when it is refused, the record that stands ahead, read in the same script:
        (True, the record as now stored) or (False, the stored record). A worker's processing
        write is also its duplicate check this way, in one round trip."""
        applied, record = await self._write(job_id, generation, attempt, status, fields, None)
        assert record is not None
        return applied, record

    async def _write(self, job_id: str, generation: int, attempt: int, status: JobStatus, fields: dict[str, Any],
                     quota: TenantQuota | None, history_entry: dict[str, Any] | None = None,
                     message: bytes | None = None) -> tuple[bool, dict | None]:
        """advance, checking ``quota`` first when given (create): (applied, record), the record
        as stored now, or the one that refused the write. ``history_entry`` and ``message``
        (create): the job's history entries and its message (see create), written only if the
        status is."""
        moment = datetime.now(timezone.utc)
        options: dict[str, Any] = {"job_id": job_id, "in_flight_prefix": names.IN_FLIGHT_KEY_PREFIX,
                                   "now": int(moment.timestamp() * 1000), **(history_entry or {})}
        if message is not None or attempt > 0:
            options.update(unpublished=names.UNPUBLISHED_KEY, message_key=names.unpublished_message_key(job_id))
            if message is not None:
                options["message"] = message.decode()
        if quota is not None:
            options.update(self._admission(quota, moment))
        megapixels = quotas.input_megapixels(fields.get("result")) if status is JobStatus.COMPLETED else None
        if megapixels and fields.get("tenant"):
            options.update(usage=names.megapixels_key(fields["tenant"], quotas.month_of(moment)),
                           megapixels=megapixels, usage_ttl=quotas.USAGE_TTL_SECONDS)
        fields = {"status": status.value, "updated_at": utc_now(), **fields}
        for name in ("error", "error_code", "next_attempt_at"):
            fields.setdefault(name, "")
        if status is not JobStatus.COMPLETED:
            fields.setdefault("result", "")
        flat: list[str] = []
        for key, value in fields.items():
            flat += [key, _encode(value)]
        try:
            applied = await self._apply([names.job_key(job_id)],
                                        [generation, attempt, int(PHASE_OF[status]), self.job_ttl,
                                         json.dumps(options), *flat])
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None
        except Unreplicated:
            if quota is not None:  # a create: leave nothing behind on the master either
                await self.delete(job_id, fields.get("tenant") or "")
            raise
        if quota is not None and applied in (-1, -2):
            raise self._refusal(applied, quota, 1, moment)
        if not isinstance(applied, list):
            return False, None
        if _refused(applied):
            stored = applied[1]
            return False, _decode(dict(zip(stored[::2], stored[1::2]))) if stored else None
        return True, _decode(dict(zip(applied[::2], applied[1::2])))

    async def _apply(self, keys: list[str], args: list[Any]) -> Any:
        """Run the status script; with ``wait_replicas``, in one round trip with ``WAIT`` on the
        same connection (WAIT counts only that connection's writes), raising Unreplicated when
        an applied write was not confirmed in time."""
        if not self.wait_replicas:
            return await self._advance(keys=keys, args=args)
        for _ in range(2):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.evalsha(self._advance.sha, len(keys), *keys, *args)
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                applied, confirmed = await pipe.execute(raise_on_error=False)
            if isinstance(applied, NoScriptError):  # a new master after a failover: load it once
                await self.client.script_load(_ADVANCE)
                continue
            for answer in (applied, confirmed):
                if isinstance(answer, Exception):
                    raise answer
            if isinstance(applied, list) and not _refused(applied) and int(confirmed) < self.wait_replicas:
                raise Unreplicated(f"status write confirmed by {confirmed} of {self.wait_replicas} replicas "
                                   f"within {self.wait_timeout_ms} ms (REDIS_WAIT_REPLICAS)")
            return applied
        raise NoScriptError("status script not loaded")

    async def get(self, job_id: str) -> dict | None:
        """The stored status as a dict with JSON fields decoded, or None for an unknown job."""
        try:
            raw = await self.client.hgetall(names.job_key(job_id))
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None
        return _decode(raw) if raw else None

    async def delete(self, job_id: str, tenant: str) -> None:
        """Roll back a job that could not be published (nothing half-created, history included,
        nor its place among the tenant's jobs in flight)."""
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(names.job_key(job_id), names.unpublished_message_key(job_id))
                pipe.zrem(names.in_flight_key(tenant), job_id, f"r:{job_id}")
                pipe.zrem(names.UNPUBLISHED_KEY, job_id)
                await pipe.execute()
        except (RedisError, OSError):
            pass
        await history.forget(self.client, tenant, job_id)

    async def reserve_in_flight(self, quota: TenantQuota, job_ids: list[str]) -> None:
        """Count a batch's (new) jobs in flight before any is created, all or none:
        QuotaExceeded (nothing reserved) when they do not all fit under the tenant's cap, or
        its month's megapixels are used. ``create`` turns a reservation into its job; one
        never turned (refused item: release_in_flight; crashed API) stops counting after
        RESERVATION_GRACE_SECONDS."""
        if not job_ids:
            return
        moment = datetime.now(timezone.utc)
        options = {**self._admission(quota, moment), "ttl": self.job_ttl}
        try:
            reserved = await self._reserve(keys=[], args=[json.dumps(options), *job_ids])
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None
        if reserved in (-1, -2):
            raise self._refusal(reserved, quota, len(job_ids), moment)

    @staticmethod
    def _admission(quota: TenantQuota, moment: datetime) -> dict[str, Any]:
        """The scripts' options that check ``quota`` (see _ADVANCE)."""
        now_ms = int(moment.timestamp() * 1000)
        options: dict[str, Any] = {
            "in_flight": names.in_flight_key(quota.tenant), "cap": quota.max_jobs_in_flight,
            "job_prefix": names.JOB_KEY_PREFIX, "now": now_ms,
            "stale_before": now_ms - quotas.RESERVATION_GRACE_SECONDS * 1000, "prune_limit": quotas.PRUNE_LIMIT}
        if quota.megapixels_per_month is not None:
            options.update(usage=names.megapixels_key(quota.tenant, quotas.month_of(moment)),
                           budget=quota.megapixels_per_month)
        return options

    @staticmethod
    def _refusal(code: int, quota: TenantQuota, wanted: int, moment: datetime) -> quotas.QuotaExceeded:
        if code == -2:
            assert quota.megapixels_per_month is not None
            return quotas.megapixels_exceeded(quota.tenant, quota.megapixels_per_month, moment)
        return quotas.jobs_in_flight_exceeded(quota.tenant, quota.max_jobs_in_flight, wanted)

    async def release_in_flight(self, tenant: str, job_ids: list[str]) -> None:
        """Give back reservations that did not become jobs (refused or replayed batch items).
        Best effort: one missed is pruned later like a crashed API's."""
        if not job_ids:
            return
        try:
            await self.client.zrem(names.in_flight_key(tenant), *(f"r:{job_id}" for job_id in job_ids))
        except (RedisError, OSError):
            pass

    async def get_many(self, job_ids: list[str]) -> list[dict | None]:
        """Several statuses in one round trip (history pages), None for expired ones."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hgetall(names.job_key(job_id))
                raws = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None
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
            raise status_unavailable(exc) from None

    async def claim_idempotency_key(self, tenant: str, client_key: str, job_id: str, ttl: float) -> str | None:
        """Bind ``client_key`` to ``job_id``; return the job id it was already bound to, if any."""
        key = names.idempotency_key(tenant, client_key)
        try:
            if await self.client.set(key, job_id, nx=True, ex=max(1, int(ttl))):
                return None
            return await self.client.get(key)
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None

    async def release_idempotency_key(self, tenant: str, client_key: str, job_id: str) -> None:
        """Forget a binding whose job was rolled back, so the client's retry can succeed."""
        key = names.idempotency_key(tenant, client_key)
        try:
            if await self.client.get(key) == job_id:
                await self.client.delete(key)
        except (RedisError, OSError):
            pass
