"""Accepting a job: validate, store the input, record the status, publish — or leave nothing behind.

The API answers 202 only after JetStream acknowledged the publish. When a later step fails,
the earlier ones are rolled back (uploaded input deleted, status removed, idempotency key
released), so a 503 never leaves a half-created job.
"""

import asyncio
import json
import uuid
from dataclasses import dataclass

import structlog
from nats.errors import Error as NatsError

from api import direct_uploads, presets
from api.context import ApiContext
from api.metrics import JOBS_SUBMITTED, QUOTA_REFUSALS
from api.params import is_utf8
from api.uploads import SubmitRequest
from pixq import events, intake, lifecycle, names, pending_inputs, quotas, sources
from pixq.errors import ErrorCode, PixqError, describe
from pixq.jobs import JobInput, JobMessage, JobMetadata, JobStatus, JobType, Priority, utc_now
from pixq.publish import PublishUnconfirmed
from pixq.queue import publish_job
from pixq.status import JobExists
from pixq.sniff import check_spec_fits, sniff
from pixq.spec import PipelineSpec
from pixq.tenants import Tenant

log = structlog.get_logger("pixq.api")

STORAGE_KEY_MAX = 1024
"""Longest ``input.storage_key`` (S3's key limit, and pixq.jobs.JobInput's)."""


@dataclass
class Accepted:
    job_id: str
    replayed: bool
    """True when an Idempotency-Key matched an earlier submission."""


def check_storage_key(tenant: Tenant, key: str) -> None:
    """A relative, plain key, under one of the tenant's prefixes (or any key for an admin).
    A key outside them answers like a missing object, so other tenants' keys never leak."""
    if len(key) > STORAGE_KEY_MAX or not is_utf8(key):
        # JSON's \ud800 escapes decode to lone surrogates, which no file name or S3 key can hold.
        raise PixqError(ErrorCode.INVALID_PARAMETERS,
                        f"storage_key must be valid UTF-8 of at most {STORAGE_KEY_MAX} characters")
    parts = key.split("/")
    if (key.startswith("/") or "\\" in key or any(part in ("", ".", "..") for part in parts)
            or any(ord(char) < 0x20 or ord(char) == 0x7F for char in key)):
        raise PixqError(ErrorCode.INVALID_PARAMETERS, "storage_key must be a relative key inside the bucket")
    if not tenant.may_read_object(key):
        raise PixqError(ErrorCode.INPUT_NOT_FOUND,
                        f"no object at storage_key {key!r} under this tenant's prefixes "
                        f"({', '.join(tenant.own_prefixes())})")


async def _validate_storage_key(ctx: ApiContext, tenant: Tenant, key: str, known_size: int | None) -> None:
    """``known_size``: the object's size when the caller has just read it (/img's miss, which
    stats its source for the cache key), so it is not read twice."""
    check_storage_key(tenant, key)
    size = known_size if known_size is not None else await ctx.deps.storage.size(key)
    if size is None:
        raise PixqError(ErrorCode.INPUT_NOT_FOUND, f"no object at storage_key {key!r}")
    if size > ctx.limits.max_input_bytes:
        raise PixqError(ErrorCode.PAYLOAD_TOO_LARGE,
                        f"object is {size} bytes, over MAX_INPUT_BYTES={ctx.limits.max_input_bytes}")


async def _store_upload(ctx: ApiContext, submit: SubmitRequest, spec: PipelineSpec, tenant: Tenant,
                        job_id: str) -> str:
    """Sniff the upload (magic bytes + header), check a crop box against its size, then store it."""
    assert submit.upload is not None
    info = await asyncio.to_thread(sniff, submit.upload, ctx.limits)
    check_spec_fits(spec, info)
    key = names.input_object_key(tenant.name, job_id)
    await pending_inputs.mark(ctx.deps.status.client, key)  # swept if this process dies before unmark
    try:
        await ctx.deps.storage.put_file(key, submit.upload, submit.content_type)
    except BaseException:
        await pending_inputs.unmark(ctx.deps.status.client, key)
        raise
    return key


async def accept_job(ctx: ApiContext, job_type: JobType, submit: SubmitRequest, tenant: Tenant, request_id: str,
                     idempotency_key: str | None, callback_url: str | None = None, batch_id: str | None = None,
                     job_id: str | None = None, priority: Priority = Priority.INTERACTIVE,
                     exclusive: bool = False, known_size: int | None = None) -> Accepted:
    """Run the whole submit for ``tenant``; raises PixqError (4xx for the client's mistakes, 503 for outages).

    A batch reserves its items' ``job_id`` before accepting them (pixq.batches). ``exclusive``
    (a ``job_id`` derived from content, /img's): when that job is recorded already, another
    request is submitting it or did; answer it as replayed and touch nothing, so a failure here
    can never roll back the other request's job. ``known_size``: the ``storage_key`` object's
    size, when the caller has just read it."""
    spec, preset = presets.compile_spec(ctx, tenant, job_type, submit)
    replay = _Replay(ctx, job_type, spec, preset, tenant, request_id, callback_url, batch_id, priority)
    if idempotency_key:
        existing = await ctx.deps.status.idempotent_job(tenant.name, idempotency_key)
        if existing:
            if intake.may_be_unpublished(await ctx.deps.status.get(existing)):
                job_input = await _resolve_input(ctx, submit, spec, tenant, existing, known_size)
                await replay.resume(existing, job_input)
                if submit.upload is not None:
                    await pending_inputs.unmark(ctx.deps.status.client, job_input.storage_key)  # its job exists
            return Accepted(existing, replayed=True)
    job_id = job_id or str(uuid.uuid4())
    job_log = log.bind(job_id=job_id, request_id=request_id, tenant=tenant.name)
    uploaded_key = None
    claimed = False
    created = False
    try:
        job_input = await _resolve_input(ctx, submit, spec, tenant, job_id, known_size)
        uploaded_key = job_input.storage_key if submit.upload is not None else None
        if idempotency_key:
            winner = await ctx.deps.status.claim_idempotency_key(tenant.name, idempotency_key, job_id,
                                                                 ctx.settings.idempotency_ttl)
            if winner:
                raise _LostRace(winner)
            claimed = True
        created_at = utc_now()
        message = JobMessage(job_id=job_id, type=job_type, tenant=tenant.name, spec=spec,
                             input=job_input, callback_url=callback_url,
                             batch_id=batch_id, preset=preset, priority=priority,
                             metadata=JobMetadata(created_at=created_at, request_id=request_id))
        data = message.model_dump_json().encode()
        # The message is kept with the record until a worker has it: if this process dies
        # before publishing it, another API does (pixq.intake.requeue_unpublished).
        record = await ctx.deps.status.create(job_id, job_type.value, tenant.name, request_id,
                                              quota=quotas.quota_of(ctx.settings, tenant),
                                              callback_url=callback_url, batch_id=batch_id,
                                              preset=json.dumps(preset) if preset else None,
                                              priority=priority.value, exclusive=exclusive,
                                              message=data, created_at=created_at)
        created = True
        # Stored before the job's message exists, so it precedes every worker's event.
        await events.publish_queued_event(ctx.deps.nc, ctx.deps.js, record)
        try:
            await publish_job(ctx.deps.js, message, data)
        except PublishUnconfirmed:
            if await _leave_unconfirmed(ctx, job_id):
                created = False  # keep that terminal status: it is what stops a late message
                raise
            job_log.info("publish_confirmed_by_worker")  # a worker already has it: it did land
    except (_LostRace, JobExists) as race:
        if claimed:
            await ctx.deps.status.release_idempotency_key(tenant.name, idempotency_key, job_id)
        if uploaded_key:
            await ctx.deps.storage.delete(uploaded_key)
            await pending_inputs.unmark(ctx.deps.status.client, uploaded_key)
        if isinstance(race, JobExists):  # enqueue reads the record and queues it only if still unbegun
            await replay.resume(job_id, job_input)  # same job id, so the same input
        return Accepted(race.job_id, replayed=True)
    except BaseException as exc:
        if created:
            await ctx.deps.status.delete(job_id, tenant.name)
            await _withdraw_queued_event(ctx, tenant.name, job_id)
        if claimed:
            await ctx.deps.status.release_idempotency_key(tenant.name, idempotency_key, job_id)
        if uploaded_key:
            await ctx.deps.storage.delete(uploaded_key)
            await pending_inputs.unmark(ctx.deps.status.client, uploaded_key)
        if isinstance(exc, PixqError) and exc.http_status >= 500:
            job_log.warning("submit_rolled_back", error_code=exc.code.value, error=exc.message)
        if isinstance(exc, quotas.QuotaExceeded):
            QUOTA_REFUSALS.labels(tenant.name, exc.quota).inc()
            job_log.info("quota_exceeded", quota=exc.quota)
        raise
    if uploaded_key:
        await pending_inputs.unmark(ctx.deps.status.client, uploaded_key)  # its job exists now
    JOBS_SUBMITTED.labels(job_type.value, tenant.name).inc()
    job_log.info("job_accepted", type=job_type.value, priority=priority.value, storage_key=job_input.storage_key,
                 source=sources.origin(job_input.url) if job_input.url else None)
    return Accepted(job_id, replayed=False)


async def _resolve_input(ctx: ApiContext, submit: SubmitRequest, spec: PipelineSpec, tenant: Tenant, job_id: str,
                         known_size: int | None) -> JobInput:
    """Where the job reads its input, checked: an upload stored under ``job_id``, a claimed
    direct upload, a source URL through the SSRF policy, or a storage_key that exists."""
    if submit.upload is not None:
        return JobInput(storage_key=await _store_upload(ctx, submit, spec, tenant, job_id))
    if submit.upload_id is not None:
        return JobInput(storage_key=await direct_uploads.claim(ctx, tenant, submit.upload_id, spec))
    if submit.source_url is not None:
        return JobInput(url=sources.check_source_url(submit.source_url, ctx.settings, tenant))
    assert submit.storage_key is not None
    await _validate_storage_key(ctx, tenant, submit.storage_key, known_size)
    return JobInput(storage_key=submit.storage_key)


@dataclass
class _Replay:
    """What a replayed submit needs to queue its job again (see ``resume``)."""

    ctx: ApiContext
    job_type: JobType
    spec: PipelineSpec
    preset: dict | None
    tenant: Tenant
    request_id: str
    callback_url: str | None
    batch_id: str | None
    priority: Priority

    async def resume(self, job_id: str, job_input: JobInput) -> None:
        """Finish queueing a job an earlier request recorded and may never have published.

        The API serving that request may have died after recording the job (and claiming its
        Idempotency-Key) and before JetStream acknowledged the message: the record then stays
        queued, with no message behind it, and without this every replay answered 202 for a
        job no worker would run (an /img URL waited out IMG_WAIT on every request until the
        status expired, 7 days). pixq.intake.enqueue publishes only while the job may be
        unpublished (pixq.intake.may_be_unpublished), idempotently. Raises
        PixqError (503) when NATS or Redis is down: the client retries, nothing is rolled
        back, since the record belongs to the first request."""
        ctx = self.ctx
        record = await intake.enqueue(
            ctx.deps.nc, ctx.deps.js, ctx.deps.status, job_id=job_id, job_type=self.job_type,
            tenant=self.tenant.name, spec=self.spec, job_input=job_input, request_id=self.request_id,
            preset=self.preset, quota=quotas.quota_of(ctx.settings, self.tenant), callback_url=self.callback_url,
            batch_id=self.batch_id, priority=self.priority.value)
        if intake.may_be_unpublished(record):  # enqueue published it (else a worker has it)
            log.info("replay_queued_again", job_id=job_id, request_id=self.request_id, tenant=self.tenant.name)


async def _leave_unconfirmed(ctx: ApiContext, job_id: str) -> bool:
    """The publish may have landed (or may still, from the client's buffer after a reconnect):
    mark the job failed rather than deleting it, so a worker receiving it skips it unrun.
    False when a worker's status is already ahead: the message did land, the job is running."""
    try:
        record = await ctx.deps.status.advance(
            job_id, 0, 0, JobStatus.FAILED, error_code=ErrorCode.QUEUE_UNAVAILABLE.value,
            error="not accepted: the queue did not confirm the submit (the client got 503)")
    except PixqError:
        return True  # Redis down as well: nothing can stop a late message (docs/reliability.md)
    if record is None:
        return False
    if ctx.deps.nc.is_connected:
        try:
            await lifecycle.announce(ctx.deps.js, ctx.deps.status, record)
        except PixqError:
            pass  # NATS is what failed: the queued event then stays the job's last one
    return True


WITHDRAW_TIMEOUT_SECONDS = 2.0
"""Bounds what withdrawing a refused submit's queued event adds to its 503 (a NATS user without
the ``$JS.API.STREAM.PURGE.PIXQ_EVENTS`` permission gets no answer at all)."""


async def _withdraw_queued_event(ctx: ApiContext, tenant: str, job_id: str) -> None:
    """Remove the queued event sent ahead of a publish that then failed (the job never existed).

    Without this, a 503 left that event in PIXQ_EVENTS: a tenant's event stream (SSE, long-poll,
    replay) showed a job nobody could look up. On a JetStream cluster it is common: during a
    PIXQ_JOBS leader election PIXQ_EVENTS (another Raft group) still stores the event while the
    job's publish is refused (tests/cluster/test_node_faults.py). The purge follows the event
    on the same connection, after at least the publish's round trip. Best effort: a reader
    tailing live may already have seen it, and while NATS is unreachable it stays (logged)."""
    if not ctx.deps.nc.is_connected:  # nats-py would buffer the request until its timeout
        log.warning("queued_event_not_withdrawn", job_id=job_id, error="not connected to NATS")
        return
    try:
        await asyncio.wait_for(ctx.deps.js.purge_stream(names.EVENTS_STREAM,
                                                        subject=names.job_event_subject(tenant, job_id, "queued")),
                               WITHDRAW_TIMEOUT_SECONDS)
    except (NatsError, OSError, asyncio.TimeoutError) as exc:  # never turn the 503 into a 500
        log.warning("queued_event_not_withdrawn", job_id=job_id, error=describe(exc))


class _LostRace(Exception):
    """Another request with the same Idempotency-Key created its job first."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
