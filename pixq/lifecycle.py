"""What follows an applied status change: its event, and a batch's completion.

The job lifecycle's steps are the status store's ordered writes (pixq.status); this module
is the one place that says what happens once a write was applied, whoever wrote it (the
API at submit or DLQ replay, a worker, the outbox drainer):

1. the job's event is published to PIXQ_EVENTS (pixq.events);
2. if the status is terminal and the job belongs to a batch, the batch is settled, and
   when that was its last pending job, ``batch.completed`` is published.

Both publishes are idempotent (Nats-Msg-Id), so a caller that could not finish may simply
announce the same record again.
"""

from typing import Any

from nats.js import JetStreamContext

from pixq import events
from pixq.batches import public_batch
from pixq.jobs import TERMINAL_STATUSES, JobStatus, utc_now
from pixq.status import StatusStore


async def announce(js: JetStreamContext, status: StatusStore, record: dict[str, Any]) -> None:
    """Publish ``record``'s event and settle its batch; PixqError when NATS or Redis is down."""
    await events.publish_job_event(js, record)
    batch_id = record.get("batch_id")
    if batch_id and JobStatus(record["status"]) in TERMINAL_STATUSES:
        if await status.batches.job_finished(batch_id, record["job_id"]):
            await complete_batch(js, status, batch_id)


async def complete_batch(js: JetStreamContext, status: StatusStore, batch_id: str) -> None:
    """Publish the batch's ``batch.completed`` (its document as of now), then mark it completed."""
    batches = status.batches
    batch = await batches.get(batch_id)
    if batch is None:
        return
    completed_at = utc_now()
    records = await status.get_many(batch["job_ids"])
    document = public_batch({**batch, "completed_at": completed_at}, records)
    await events.publish_batch_completed(js, batch["tenant"], document)
    await batches.mark_completed(batch_id, completed_at)
