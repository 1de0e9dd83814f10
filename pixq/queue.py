"""NATS JetStream: connection, idempotent stream/consumer setup, publishing jobs.

Settings of every stream and consumer live here (names in pixq.names); docs/queue.md
describes them. Whichever process starts first creates them; later ones find them.
"""

import asyncio

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy,
                         RetentionPolicy, StorageType, StreamConfig)
from nats.js.errors import BadRequestError

from pixq import names
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobMessage
from pixq.settings import Settings

log = structlog.get_logger("pixq.queue")

DUPLICATE_WINDOW_SECONDS = 120.0
"""JetStream drops a second publish with the same Nats-Msg-Id within this window."""
JOB_MAX_AGE_SECONDS = 7 * 86400.0
DLQ_MAX_AGE_SECONDS = 30 * 86400.0
MAX_ACK_PENDING = 10_000
PUBLISH_TIMEOUT_SECONDS = 5.0


def jobs_stream_config(replicas: int = 1) -> StreamConfig:
    """Work-queue retention: a job's message is removed once a worker acks it."""
    return StreamConfig(name=names.JOBS_STREAM, subjects=names.JOBS_SUBJECTS,
                        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE, num_replicas=replicas,
                        duplicate_window=DUPLICATE_WINDOW_SECONDS, max_age=JOB_MAX_AGE_SECONDS,
                        discard=DiscardPolicy.NEW)


def dlq_stream_config(replicas: int = 1) -> StreamConfig:
    """One message per dead job (subject per job id), kept until replayed or purged."""
    return StreamConfig(name=names.DLQ_STREAM, subjects=names.DLQ_SUBJECTS,
                        retention=RetentionPolicy.LIMITS, storage=StorageType.FILE, num_replicas=replicas,
                        max_msgs_per_subject=1, max_age=DLQ_MAX_AGE_SECONDS)


def advisory_stream_config(replicas: int = 1) -> StreamConfig:
    """Keeps MAX_DELIVERIES advisories until a worker has moved their job to the DLQ."""
    return StreamConfig(name=names.ADVISORY_STREAM, subjects=[names.MAX_DELIVERIES_ADVISORY_SUBJECT],
                        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE, num_replicas=replicas,
                        max_age=DLQ_MAX_AGE_SECONDS)


def status_stream_config(replicas: int = 1) -> StreamConfig:
    """Status updates waiting for Redis to come back; removed once written."""
    return StreamConfig(name=names.STATUS_STREAM, subjects=names.STATUS_SUBJECTS,
                        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE, num_replicas=replicas,
                        max_age=JOB_MAX_AGE_SECONDS)


def workers_consumer_config(settings: Settings) -> ConsumerConfig:
    """Explicit acks; ACK_WAIT bounds how long a crashed worker's job stays invisible;
    MAX_RETRIES + 1 deliveries in all, after which the server emits MAX_DELIVERIES."""
    return ConsumerConfig(durable_name=names.WORKERS_CONSUMER, ack_policy=AckPolicy.EXPLICIT,
                          deliver_policy=DeliverPolicy.ALL, ack_wait=settings.ack_wait,
                          max_deliver=settings.max_retries + 1, max_ack_pending=MAX_ACK_PENDING,
                          max_waiting=512)


def advisory_consumer_config() -> ConsumerConfig:
    return ConsumerConfig(durable_name=names.ADVISORY_CONSUMER, ack_policy=AckPolicy.EXPLICIT,
                          deliver_policy=DeliverPolicy.ALL, ack_wait=30.0)


def status_consumer_config() -> ConsumerConfig:
    """No delivery limit: an update is retried until Redis takes it."""
    return ConsumerConfig(durable_name=names.STATUS_CONSUMER, ack_policy=AckPolicy.EXPLICIT,
                          deliver_policy=DeliverPolicy.ALL, ack_wait=30.0, max_deliver=-1)


async def connect(settings: Settings, name: str, attempts: int = 30) -> NATS:
    """Connect, retrying the first connection (a pod may start before NATS); reconnect forever after."""

    async def on_disconnect() -> None:
        log.warning("nats_disconnected")

    async def on_reconnect() -> None:
        log.info("nats_reconnected")

    async def on_error(exc: Exception) -> None:
        log.warning("nats_error", error=str(exc))

    servers = [url.strip() for url in settings.nats_url.split(",")]
    for attempt in range(1, attempts + 1):
        try:
            return await nats.connect(servers=servers, name=name, connect_timeout=2,
                                      max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                      disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
                                      error_cb=on_error)
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            log.warning("nats_connect_failed", attempt=attempt, error=str(exc) or type(exc).__name__)
            if attempt == attempts:
                raise
            await asyncio.sleep(min(2.0, 0.2 * attempt))
    raise RuntimeError("unreachable")


async def close(nc: NATS) -> None:
    """Flush pending acks and publishes, then close. (drain() would wait out its 30 s timeout
    on pull subscriptions that still have a fetch outstanding.)"""
    try:
        if nc.is_connected:
            await nc.flush(timeout=2)
    except (NatsError, OSError, asyncio.TimeoutError):
        pass
    try:
        await nc.close()
    except (NatsError, OSError, asyncio.TimeoutError) as exc:
        log.warning("nats_close_failed", error=str(exc) or type(exc).__name__)


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:
        # Exists with other settings (an upgrade changed them): bring it to ours.
        await js.update_stream(config)


async def ensure_topology(js: JetStreamContext, settings: Settings) -> None:
    """Create (or update) every stream and consumer; safe to run from many processes at once."""
    replicas = settings.nats_stream_replicas
    for config in (jobs_stream_config(replicas), dlq_stream_config(replicas), advisory_stream_config(replicas),
                   status_stream_config(replicas)):
        await _ensure_stream(js, config)
    for stream, consumer in ((names.JOBS_STREAM, workers_consumer_config(settings)),
                             (names.ADVISORY_STREAM, advisory_consumer_config()),
                             (names.STATUS_STREAM, status_consumer_config())):
        try:
            await js.add_consumer(stream, consumer)
        except BadRequestError as exc:
            log.warning("consumer_config_kept", consumer=consumer.durable_name, error=str(exc))


def message_id(job_id: str, generation: int) -> str:
    """Nats-Msg-Id: a retried publish of the same job generation is stored once."""
    return f"{job_id}:{generation}"


async def publish_job(js: JetStreamContext, message: JobMessage) -> None:
    """Publish and wait for JetStream's ack; QUEUE_UNAVAILABLE when it does not come."""
    payload = message.model_dump_json().encode()
    headers = {"Nats-Msg-Id": message_id(message.job_id, message.metadata.generation)}
    nc = getattr(js, "_nc", None)
    if nc is not None and not nc.is_connected:
        # While reconnecting, nats-py would buffer the publish and send it after the reconnect,
        # even though we time out and roll the job back first: a ghost job behind a 503.
        raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, "queue unavailable: not connected to NATS")
    try:
        await js.publish(names.job_subject(message.type.value), payload, headers=headers,
                         timeout=PUBLISH_TIMEOUT_SECONDS, stream=names.JOBS_STREAM)
    except (NatsError, OSError, asyncio.TimeoutError) as exc:
        raise PixqError(ErrorCode.QUEUE_UNAVAILABLE,
                        f"queue unavailable: {str(exc) or type(exc).__name__}") from None


FETCH_ERROR_PAUSE_SECONDS = 0.5


async def fetch(subscription: JetStreamContext.PullSubscription, batch: int, wait: float) -> list[Msg]:
    """Up to ``batch`` messages; [] when none came within ``wait`` or NATS is unreachable
    (logged, then a short pause so a pull loop does not spin while the client reconnects)."""
    try:
        return await subscription.fetch(batch, timeout=wait)
    except (NatsTimeoutError, asyncio.TimeoutError):
        return []
    except (NatsError, OSError) as exc:
        log.warning("fetch_failed", error=str(exc) or type(exc).__name__)
        await asyncio.sleep(FETCH_ERROR_PAUSE_SECONDS)
        return []


async def consumer_pending(js: JetStreamContext) -> int:
    """Messages not yet delivered to any worker (KEDA's lag)."""
    info = await js.consumer_info(names.JOBS_STREAM, names.WORKERS_CONSUMER)
    return int(info.num_pending or 0)


async def dlq_size(js: JetStreamContext) -> int:
    info = await js.stream_info(names.DLQ_STREAM)
    return int(info.state.messages)

