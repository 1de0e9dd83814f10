"""How a worker records job statuses, including while Redis is down.

A write goes straight to Redis. When Redis does not answer, the update is published to
the PIXQ_STATUS stream instead (a durable outbox) and the job goes on; ``OutboxDrainer``
writes those updates once Redis is back. The status store's ordering by
(generation, attempt, phase) makes the late, out-of-order writes safe.
"""

import asyncio
import json
from typing import Any

import structlog
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from pixq import names, queue
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobMessage, JobStatus
from pixq.status import StatusStore

log = structlog.get_logger("pixq.worker")


class StatusWriter:
    def __init__(self, status: StatusStore, js: JetStreamContext) -> None:
        self.status = status
        self.js = js

    async def write(self, job: JobMessage, attempt: int, status: JobStatus, **fields: Any) -> bool:
        """Record the update in Redis, or durably in the outbox; raises only if both are down.

        Returns False when Redis refused it because the stored status is ahead (a later attempt,
        or a terminal status of this generation); True when applied or deferred to the outbox.
        The job's identity is written too, so a status lost from Redis (flushed, restarted
        without persistence) is rebuilt from the message."""
        update = {"job_id": job.job_id, "type": job.type.value, "tenant": job.tenant,
                  "created_at": job.metadata.created_at,
                  "request_id": job.metadata.request_id, **fields}
        try:
            return await self.status.advance(job.job_id, job.metadata.generation, attempt, status, **update)
        except PixqError:
            await self._to_outbox(job.job_id, job.metadata.generation, attempt, status, update)
            return True

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
                    await self.status.advance(body["job_id"], body["generation"], body["attempt"],
                                              JobStatus(body["status"]), **body["fields"])
                except PixqError:
                    await queue.settle(event.nak(delay=self.RETRY_DELAY_SECONDS))
                    continue
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("outbox_event_invalid", error=str(exc))
                await queue.settle(event.ack())
