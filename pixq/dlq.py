"""Dead-letter queue operations: list, show, replay and purge entries of PIXQ_DLQ.

Each dead job is the single message on ``pixq.dlq.<job_id>``. A replay republishes the
original message with ``metadata.generation`` + 1: JetStream counts deliveries afresh
(a fresh retry budget) and the job keeps its id; the status store restarts it at queued.
"""

import asyncio
import json
from typing import Any

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

import structlog

from pixq import lifecycle, names
from pixq.errors import ErrorCode, PixqError, describe
from pixq.jobs import JobMessage
from pixq.queue import publish_job
from pixq.status import StatusStore

log = structlog.get_logger("pixq.dlq")

SUMMARY_FIELDS = ("job_id", "type", "tenant", "error_code", "error", "attempts", "reason", "dead_lettered_at")


def summary(entry: dict[str, Any]) -> dict[str, Any]:
    return {name: entry.get(name) for name in SUMMARY_FIELDS}


def _unavailable(exc: BaseException) -> PixqError:
    return PixqError(ErrorCode.SERVICE_UNAVAILABLE, f"queue unavailable: {describe(exc)}")


async def list_entries(js: JetStreamContext) -> list[dict[str, Any]]:
    """Every entry, oldest first, read through a short-lived ordered consumer (no acks)."""
    try:
        info = await js.stream_info(names.DLQ_STREAM)
        total = info.state.messages
        if total == 0:
            return []
        subscription = await js.pull_subscribe(
            f"{names.DLQ_SUBJECT_PREFIX}.>", stream=names.DLQ_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                                  inactive_threshold=30.0, mem_storage=True))
        entries: list[dict[str, Any]] = []
        try:
            while len(entries) < total:
                try:
                    batch = await subscription.fetch(min(256, total - len(entries)), timeout=1)
                except (asyncio.TimeoutError, NatsError):
                    break
                entries += [json.loads(message.data) for message in batch]
        finally:
            await subscription.unsubscribe()
        return entries
    except (NatsError, OSError, asyncio.TimeoutError) as exc:
        raise _unavailable(exc) from None


async def get_entry(js: JetStreamContext, job_id: str) -> dict[str, Any]:
    try:
        raw = await js.get_last_msg(names.DLQ_STREAM, names.dlq_subject(job_id))
    except NotFoundError:
        raise PixqError(ErrorCode.NOT_FOUND, f"no dead-lettered job {job_id}") from None
    except (NatsError, OSError, asyncio.TimeoutError) as exc:
        raise _unavailable(exc) from None
    return json.loads(raw.data)


async def purge(js: JetStreamContext, job_id: str) -> None:
    await get_entry(js, job_id)
    try:
        await js.purge_stream(names.DLQ_STREAM, subject=names.dlq_subject(job_id))
    except (NatsError, OSError, asyncio.TimeoutError) as exc:
        raise _unavailable(exc) from None


async def purge_all(js: JetStreamContext) -> int:
    try:
        count = (await js.stream_info(names.DLQ_STREAM)).state.messages
        await js.purge_stream(names.DLQ_STREAM)
    except (NatsError, OSError, asyncio.TimeoutError) as exc:
        raise _unavailable(exc) from None
    return count


async def replay(js: JetStreamContext, status: StatusStore, job_id: str) -> dict[str, Any]:
    """Republish a dead job with a fresh retry budget; its status restarts at queued."""
    entry = await get_entry(js, job_id)
    try:
        job = JobMessage.model_validate(entry["message"])
    except (ValueError, KeyError, TypeError):
        raise PixqError(ErrorCode.INVALID_PARAMETERS,
                        f"DLQ entry {job_id} is not a replayable job ({entry.get('reason')})") from None
    record = await status.get(job_id)
    generation = max(job.metadata.generation, record["generation"] if record else 0) + 1
    replayed = job.model_copy(update={"metadata": job.metadata.model_copy(
        update={"generation": generation})})
    await publish_job(js, replayed)
    # After the publish: a worker may already be ahead, which restart() then leaves alone.
    record = await status.restart(job_id, generation, job.type.value, job.tenant, job.metadata.created_at,
                                  job.metadata.request_id)
    if record is not None:
        try:
            await lifecycle.announce(js, status, record)
        except PixqError as exc:
            log.warning("event_not_published", job_id=job_id, tenant=job.tenant, status="queued", error=exc.message)
    try:
        await js.purge_stream(names.DLQ_STREAM, subject=names.dlq_subject(job_id))
    except (NatsError, OSError, asyncio.TimeoutError):
        pass  # a stale entry is harmless: replaying it again only starts a newer generation
    return {"job_id": job_id, "status": "queued", "generation": generation}
