"""Queueing a job again until it is surely queued: status → queued event → publish.

The same order as api.submission.accept_job, without its rollbacks. Two callers:

* bucket events (worker.ingest), which have no client to answer: instead of undoing a
  half-created job they simply run ``enqueue`` again with the same job id;
* a replayed submit (an Idempotency-Key seen before, or /img's content-derived job id): the
  API that served the first request may have died after recording the job and before
  publishing it, leaving a record queued with no message behind it (api.submission).

Every step is idempotent for one job id: the status store keeps the first record (same
generation, attempt and phase), the queued event and the job message carry fixed
Nats-Msg-Ids, and a job a worker has begun, or that is terminal, is not published again.
"""

import json
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from pixq import events
from pixq.jobs import JobInput, JobMessage, JobMetadata, JobStatus, JobType, Priority
from pixq.queue import publish_job
from pixq.quotas import TenantQuota
from pixq.spec import PipelineSpec
from pixq.status import StatusStore


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
    record = await status.get(job_id)
    if record is None:
        record = await status.create(job_id, job_type.value, tenant, request_id, quota=quota,
                                     preset=json.dumps(preset) if preset else None, **extra)
    if not may_be_unpublished(record):
        return record  # a worker has it, it ran, or the DLQ replayed it: never queue it again
    await events.publish_queued_event(nc, js, record)
    message = JobMessage(job_id=job_id, type=job_type, tenant=tenant, spec=spec, input=job_input, preset=preset,
                         callback_url=record.get("callback_url"), batch_id=record.get("batch_id"),
                         priority=record.get("priority") or Priority.INTERACTIVE,
                         metadata=JobMetadata(created_at=record["created_at"],
                                              request_id=record.get("request_id") or request_id))
    await publish_job(js, message)
    return record
