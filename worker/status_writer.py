"""How a worker records job statuses, including while Redis is down.

A write goes straight to Redis. When Redis does not answer, the update is published to
the PIXQ_STATUS stream instead (a durable outbox) and the job goes on; ``OutboxDrainer``
writes those updates once Redis is back. The status store's ordering by
(generation, attempt, phase) makes the late, out-of-order writes safe.

Every write Redis applied is then announced (pixq.lifecycle: its event, and a batch's
completion). An announcement that fails is reported (Written.UNANNOUNCED), so the caller
can keep the job's message and announce again when it is redelivered.
"""

import asyncio
import json
from enum import IntEnum
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from pixq import events, lifecycle, names, queue
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import PHASE_OF, JobMessage, JobStatus
from pixq.status import StatusStore

log = structlog.get_logger("pixq.worker")


class Written(IntEnum):
    """Outcome of a status write; only REFUSED is false."""

    REFUSED = 0
    """The stored status is ahead (a later attempt, or terminal in this generation)."""
    APPLIED = 1
    """Written to Redis and announced."""
    DEFERRED = 2
    """Redis is down: kept in the outbox, announced once the drainer writes it."""
    UNANNOUNCED = 3
    """Written to Redis, but its event could not be published (NATS down)."""


async def announce_logged(js: JetStreamContext, status: StatusStore, record: dict[str, Any]) -> bool:
    """lifecycle.announce, logging (not raising) a failure; False when it failed."""
    try:
        await lifecycle.announce(js, status, record)
        return True
    except PixqError as exc:
        log.warning("event_not_published", job_id=record.get("job_id"), request_id=record.get("request_id", ""),
                    tenant=record.get("tenant", ""), status=record.get("status"), error=exc.message)
        return False


async def reannounce(js: JetStreamContext, status: StatusStore, job_id: str,
                     at: tuple[int, int, int]) -> bool:
    """Announce the stored status again if it stands exactly at ``at`` (a write that was applied
    before but whose announcement may have failed). True when there was nothing to do or it worked."""
    record = await status.get(job_id)
    if record is None or events.position(record) != at:
        return True
    return await announce_logged(js, status, record)


class StatusWriter:
    def __init__(self, status: StatusStore, js: JetStreamContext, nc: NATS) -> None:
        self.status = status
        self.js = js
        self.nc = nc
        """The connection under ``js``: ``processing`` events are sent on it unconfirmed."""

    async def write(self, job: JobMessage, attempt: int, status: JobStatus, **fields: Any) -> Written:
        """Record the update in Redis, or durably in the outbox; raises only if both are down.

        The job's identity is written too, so a status lost from Redis (flushed, restarted
        without persistence) is rebuilt from the message."""
        written, _ = await self.write_or_stored(job, attempt, status, **fields)
        return written

    async def write_or_stored(self, job: JobMessage, attempt: int, status: JobStatus,
                              **fields: Any) -> tuple[Written, dict[str, Any] | None]:
        """write, plus the stored record that refused it (REFUSED), else None: read by the same
        script, so a worker's duplicate check costs no round trip of its own."""
        update = {"job_id": job.job_id, "type": job.type.value, "tenant": job.tenant,
                  "created_at": job.metadata.created_at, "request_id": job.metadata.request_id,
                  **{name: value for name, value in (("callback_url", job.callback_url), ("batch_id", job.batch_id))
                     if value},
                  **fields}
        try:
            applied, record = await self.status.advance_or_stored(job.job_id, job.metadata.generation, attempt,
                                                                  status, **update)
        except PixqError:
            await self._to_outbox(job.job_id, job.metadata.generation, attempt, status, update)
            return Written.DEFERRED, None
        if not applied:
            return Written.REFUSED, record
        if status is JobStatus.PROCESSING:  # best-effort, unconfirmed (events.send_job_event)
            return Written.APPLIED if await events.send_job_event(self.nc, record) else Written.UNANNOUNCED, None
        announced = await announce_logged(self.js, self.status, record)
        return Written.APPLIED if announced else Written.UNANNOUNCED, None

    async def _to_outbox(self, job_id: str, generation: int, attempt: int, status: JobStatus,
                         fields: dict[str, Any]) -> None:
        event = {"job_id": job_id, "generation": generation, "attempt": attempt, "status": status.value,
                 "fields": fields}
        try:
            await self.js.publish(names.status_subject(job_id), json.dumps(event).encode(),
                                  stream=names.STATUS_STREAM, timeout=5)
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, f"status outbox unavailable: {exc}") from None
        log.warning("status_deferred", job_id=job_id, request_id=fields.get("request_id", ""),
                    tenant=fields.get("tenant", ""),
                    status=status.value, reason="redis unavailable")


class OutboxDrainer:
    """Writes deferred status updates to Redis once it answers again."""

    RETRY_DELAY_SECONDS = 1.0

    def __init__(self, js: JetStreamContext, status: StatusStore) -> None:
        self.js = js
        self.status = status

    async def run(self, stop: asyncio.Event) -> None:
        puller = await queue.Puller(self.js, names.STATUS_STREAM, names.STATUS_CONSUMER).start()
        while not stop.is_set():
            for event in await puller.fetch(50, 1.0):
                try:
                    body = json.loads(event.data)
                    status = JobStatus(body["status"])
                    record = await self.status.advance(body["job_id"], body["generation"], body["attempt"],
                                                       status, **body["fields"])
                    announced = (await announce_logged(self.js, self.status, record) if record is not None else
                                 await reannounce(self.js, self.status, body["job_id"],
                                                  (body["generation"], body["attempt"], int(PHASE_OF[status]))))
                    if not announced:
                        raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, "event not published")
                except PixqError:
                    await queue.settle(event.nak(delay=self.RETRY_DELAY_SECONDS))
                    continue
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("outbox_event_invalid", error=str(exc))
                await queue.settle(event.ack())
