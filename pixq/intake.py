"""Queueing a job again until it is surely queued: status → queued event → publish.

The same order as api.submission.accept_job, without its rollbacks. Three callers:

* bucket events (worker.ingest), which have no client to answer: instead of undoing a
  half-created job they simply run ``enqueue`` again with the same job id;
* a replayed submit (an Idempotency-Key seen before, or /img's content-derived job id): the
  API that served the first request may have died after recording the job and before
  publishing it, leaving a record queued with no message behind it (api.submission);
* every API, every REQUEUE_CHECK_INTERVAL, for the jobs nobody replays
  (``requeue_unpublished``): the API keeps each job's message in Redis from its status record
  until a worker writes the job's status (pixq.status), and publishes again those still
  waiting after REQUEUE_CHECK_AFTER. JetStream's duplicate window (2 min) drops the publish
  when the first one landed, and says so (``PubAck.duplicate``): the round both checks and
  repairs. Hand-rolled: it is pixq's own submit protocol.

Every step is idempotent for one job id: the status store keeps the first record (same
generation, attempt and phase), the queued event and the job message carry fixed
Nats-Msg-Ids, and a job a worker has begun, or that is terminal, is not published again.
"""

import json
import time
from dataclasses import dataclass
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from redis.exceptions import RedisError

from pixq import events, names
from pixq.errors import status_unavailable
from pixq.jobs import JobInput, JobMessage, JobMetadata, JobStatus, JobType, Priority, utc_now
from pixq.queue import publish_job
from pixq.quotas import TenantQuota
from pixq.spec import PipelineSpec
from pixq.status import StatusStore

log = structlog.get_logger("pixq.intake")


def may_be_unpublished(record: dict[str, Any] | None) -> bool:
    """Could this job's message be missing from PIXQ_JOBS? Yes while no record exists yet or
    it is still queued in its first generation: no worker has begun it (a worker's first step
    is its processing write) and no DLQ replay has published it again."""
    return record is None or (JobStatus(record["status"]) is JobStatus.QUEUED
                              and int(record.get("generation") or 0) == 0)


async def enqueue(nc: NATS, js: JetStreamContext, status: StatusStore, *, job_id: str, job_type: JobType,
                  tenant: str, spec: PipelineSpec, job_input: JobInput, request_id: str,
                  preset: dict[str, Any] | None = None, quota: TenantQuota | None = None,
                  **extra: str | None) -> dict[str, Any]:
    """Create (or find) the job's status and make sure its message is in PIXQ_JOBS.

    ``quota`` and ``extra`` (``callback_url``, ``batch_id``, ``priority``) go into a record
    created here; the message takes them from the stored record, so a replay publishes what
    the first request recorded. Within JetStream's duplicate window (2 min) a second publish
    is dropped; after it, a job still waiting in the queue gets a second message, which a
    worker skips once the first one has finished the job.

    Returns the job's status record. Raises PixqError (QUEUE_UNAVAILABLE, STATUS_UNAVAILABLE,
    QuotaExceeded, or PublishUnconfirmed) when NATS or Redis is down or the tenant is at its
    cap: call again with the same arguments."""
    def message_of(fields: dict[str, Any]) -> JobMessage:
        return JobMessage(job_id=job_id, type=job_type, tenant=tenant, spec=spec, input=job_input, preset=preset,
                          callback_url=fields.get("callback_url"), batch_id=fields.get("batch_id"),
                          priority=fields.get("priority") or Priority.INTERACTIVE,
                          metadata=JobMetadata(created_at=fields["created_at"],
                                               request_id=fields.get("request_id") or request_id))

    record = await status.get(job_id)
    message, data = None, None
    if record is None:
        # Kept with the record, as the API's own submit does: if this process dies before its
        # publish, another API's round publishes the job (requeue_unpublished).
        created_at = utc_now()
        message = message_of({**extra, "created_at": created_at, "request_id": request_id})
        data = message.model_dump_json().encode()
        record = await status.create(job_id, job_type.value, tenant, request_id, quota=quota,
                                     preset=json.dumps(preset) if preset else None,
                                     message=data, created_at=created_at, **extra)
    if not may_be_unpublished(record):
        return record  # a worker has it, it ran, or the DLQ replayed it: never queue it again
    await events.publish_queued_event(nc, js, record)
    if message is None:
        message = message_of(record)  # from the stored record: what the first request recorded
    await publish_job(js, message, data)
    return record


@dataclass(frozen=True)
class Requeued:
    """One ``requeue_unpublished`` round: jobs looked at, and those of them that were missing
    from PIXQ_JOBS (published now)."""

    checked: int
    published: int


REQUEUE_BATCH = 100
"""Jobs looked at per round (the next round takes the rest)."""


async def requeue_unpublished(nc: NATS, js: JetStreamContext, status: StatusStore, older_than: float,
                              now: float | None = None) -> Requeued:
    """Publish again every job recorded more than ``older_than`` seconds ago that no worker has
    begun, with the message its API kept; then forget the message (the job is surely queued).

    ``older_than`` must exceed the longest a live API spends publishing (15 s: pixq.publish),
    so that the first request has published, marked the job failed, or rolled it back. A job
    recorded longer ago than the duplicate window (no round ran for 2 min: every API down, or
    Redis) gets a second message if its first is still queued: a worker skips it once the job
    is finished, or two run it at once and write the same outputs. Raises PixqError when Redis
    or NATS is down (the round is tried again later)."""
    client = status.client
    cutoff = int(((time.time() if now is None else now) - older_than) * 1000)
    try:
        job_ids = await client.zrangebyscore(names.UNPUBLISHED_KEY, "-inf", cutoff, start=0, num=REQUEUE_BATCH)
    except (RedisError, OSError) as exc:
        raise status_unavailable(exc) from None
    published = 0
    for job_id in job_ids:
        record = await status.get(job_id)
        try:
            data = await client.get(names.unpublished_message_key(job_id))
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None
        if record is not None and data is not None and may_be_unpublished(record):
            await events.publish_queued_event(nc, js, record)  # first: it precedes every worker's event
            ack = await publish_job(js, JobMessage.model_validate_json(data), data.encode())
            if not ack.duplicate:
                published += 1
                log.warning("unpublished_job_published", job_id=job_id, tenant=record.get("tenant"),
                            request_id=record.get("request_id"), recorded_at=record.get("created_at"))
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.zrem(names.UNPUBLISHED_KEY, job_id)
                pipe.delete(names.unpublished_message_key(job_id))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None
    return Requeued(len(job_ids), published)
