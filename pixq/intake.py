"""Queueing a job that no API request carries (bucket events): status → queued event → publish.

The same order as api.submission.accept_job, without its rollbacks: a caller here has no
client to answer, so instead of undoing a half-created job it simply runs ``enqueue`` again
with the same job id. Every step is idempotent for one job id: the status store keeps the
first record (same generation, attempt and phase), the queued event and the job message
carry fixed Nats-Msg-Ids, and a job already terminal is not published again.
"""

import json
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from pixq import events
from pixq.jobs import JobInput, JobMessage, JobMetadata, JobStatus, JobType
from pixq.queue import publish_job
from pixq.spec import PipelineSpec
from pixq.status import StatusStore


async def enqueue(nc: NATS, js: JetStreamContext, status: StatusStore, *, job_id: str, job_type: JobType,
                  tenant: str, spec: PipelineSpec, job_input: JobInput, request_id: str,
                  preset: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create (or find) the job's status and make sure its message is in PIXQ_JOBS.

    Returns the job's status record. Raises PixqError (QUEUE_UNAVAILABLE, STATUS_UNAVAILABLE,
    or PublishUnconfirmed) when NATS or Redis is down: call again with the same arguments."""
    record = await status.get(job_id)
    if record is None:
        record = await status.create(job_id, job_type.value, tenant, request_id,
                                     preset=json.dumps(preset) if preset else None)
    if JobStatus(record["status"]) is not JobStatus.QUEUED or int(record.get("generation") or 0) > 0:
        return record  # a worker has it, it ran, or the DLQ replayed it: never queue it again
    await events.publish_queued_event(nc, js, record)
    message = JobMessage(job_id=job_id, type=job_type, tenant=tenant, spec=spec, input=job_input, preset=preset,
                         metadata=JobMetadata(created_at=record["created_at"], request_id=request_id))
    await publish_job(js, message)
    return record
