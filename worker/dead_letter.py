"""Dead-lettering: the worker's own final failures, and jobs whose worker died on the final delivery.

Each DLQ entry is one message on ``pixq.dlq.<job_id>`` in the PIXQ_DLQ stream holding the
original job message, the last error and the attempts, so an operator can inspect and
replay it (see pixq.dlq).
"""

import asyncio
import json
from typing import Any

import structlog
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from pixq import names, queue
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import TERMINAL_STATUSES, JobMessage, JobStatus, utc_now
from worker.metrics import JOBS
from worker.status_writer import StatusWriter, Written, announce_logged

log = structlog.get_logger("pixq.worker")

CRASHED_ON_FINAL_DELIVERY = "the worker did not finish the final delivery (crash, OOM kill or lost connection)"


def dlq_entry(message: dict[str, Any], error_code: str, error: str, attempts: int, reason: str) -> dict[str, Any]:
    return {"job_id": message.get("job_id"), "type": message.get("type"), "tenant": message.get("tenant"),
            "message": message,
            "error_code": error_code, "error": error, "attempts": attempts, "reason": reason,
            "dead_lettered_at": utc_now()}


async def publish_dead(js: JetStreamContext, entry: dict[str, Any]) -> None:
    """Store a DLQ entry; QUEUE_UNAVAILABLE when JetStream does not acknowledge it."""
    generation = entry["message"].get("metadata", {}).get("generation", 0)
    try:
        await js.publish(names.dlq_subject(entry["job_id"]), json.dumps(entry).encode(),
                         headers={"Nats-Msg-Id": f"dlq:{entry['job_id']}:{generation}"},
                         stream=names.DLQ_STREAM, timeout=5)
    except (NatsError, OSError, asyncio.TimeoutError) as exc:
        raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, f"cannot publish to the DLQ: {exc}") from None


async def dead_letter(js: JetStreamContext, writer: StatusWriter, job: JobMessage, attempts: int,
                      last_error: PixqError, reason: str) -> Written:
    """Move a job to the DLQ and mark it failed with DEAD_LETTERED (the last error in the message)."""
    entry = dlq_entry(job.model_dump(mode="json"), last_error.code.value, last_error.message, attempts, reason)
    await publish_dead(js, entry)
    written = await writer.write(job, attempts, JobStatus.FAILED, error_code=ErrorCode.DEAD_LETTERED.value,
                                 error=f"dead-lettered after {attempts} attempts: {last_error.code.value}: "
                                       f"{last_error.message}")
    JOBS.labels(job.type.value, "dead_lettered").inc()
    log.warning("job_dead_lettered", job_id=job.job_id, request_id=job.metadata.request_id, tenant=job.tenant,
                attempts=attempts, error_code=last_error.code.value, reason=reason)
    return written


class AdvisoryMover:
    """Consumes MAX_DELIVERIES advisories (captured durably by PIXQ_ADVISORIES) and dead-letters their job.

    This covers a worker that crashed or was OOM-killed on a job's final delivery: nobody was
    left to dead-letter it, and JetStream will not deliver it again.
    """

    def __init__(self, js: JetStreamContext, writer: StatusWriter) -> None:
        self.js = js
        self.writer = writer

    async def run(self, stop: asyncio.Event) -> None:
        puller = await queue.Puller(self.js, names.ADVISORY_STREAM, names.ADVISORY_CONSUMER).start()
        while not stop.is_set():
            for advisory in await puller.fetch(10, 1.0):
                try:
                    await self.move(json.loads(advisory.data))
                except (PixqError, NatsError, OSError, asyncio.TimeoutError) as exc:
                    log.warning("advisory_retry", error=str(exc))
                    await queue.settle(advisory.nak(delay=2))
                    continue
                except (ValueError, KeyError, TypeError) as exc:
                    # Not an advisory we can read: drop it rather than fail the loop on it forever.
                    log.error("advisory_invalid", error=str(exc))
                await queue.settle(advisory.ack())

    async def move(self, advisory: dict[str, Any]) -> None:
        sequence = int(advisory["stream_seq"])
        try:
            raw = await self.js.get_msg(names.JOBS_STREAM, sequence)
        except NotFoundError:
            return  # acked or dead-lettered by its worker in the meantime
        try:
            job = JobMessage.model_validate_json(raw.data)
        except ValueError:
            log.error("advisory_unparseable_job", stream_seq=sequence)
            await self.js.delete_msg(names.JOBS_STREAM, sequence)
            return
        attempts = int(advisory.get("deliveries") or 0)
        record = await self.writer.status.get(job.job_id)
        if (record is not None and record["generation"] == job.metadata.generation
                and record["status"] in TERMINAL_STATUSES):
            # Finished on the final delivery, but not acked (a crash after the status write, or an
            # event that could not be published): nothing to dead-letter; make sure it was announced.
            if not await announce_logged(self.js, self.writer.status, record):
                raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, "event not published")
        else:
            last = PixqError(ErrorCode.DEAD_LETTERED, CRASHED_ON_FINAL_DELIVERY)
            if await dead_letter(self.js, self.writer, job, attempts, last,
                                 reason="max_deliveries") is Written.UNANNOUNCED:
                raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, "event not published")
        await self.js.delete_msg(names.JOBS_STREAM, sequence)
