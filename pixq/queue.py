"""NATS JetStream: connection, idempotent stream/consumer setup, publishing jobs, pulling.

Settings of every stream and consumer live here (names in pixq.names); docs/queue.md
describes them. Streams are created (or updated) by whichever process starts first, API or
worker. The consumers belong to the workers: only a worker creates them, and a worker that
starts with other MAX_RETRIES / ACK_WAIT brings ``pixq-workers`` (and ``pixq-workers-batch``)
to its settings.

Jobs travel in two lanes (pixq.jobs.Priority), one durable pull consumer each on PIXQ_JOBS:
``pixq-workers`` (interactive, ``pixq.jobs.<type>``) and ``pixq-workers-batch`` (batch,
``pixq.jobs.batch.<type>``). Workers pull from both with LanePuller, which never asks for
more messages than the worker has free slots (worker.consumer weighs the lanes).
"""

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, DiscardPolicy, PubAck,
                         RetentionPolicy, StorageType, StreamConfig)
from nats.js.errors import APIError, BadRequestError, NotFoundError

from pixq import events, names, transport, webhooks
from pixq.errors import ErrorCode, PixqError, describe
from pixq.jobs import JobMessage, Priority
from pixq.publish import publish_confirmed
from pixq.settings import Settings

log = structlog.get_logger("pixq.queue")

DUPLICATE_WINDOW_SECONDS = 120.0
"""JetStream drops a second publish with the same Nats-Msg-Id within this window."""
JOB_MAX_AGE_SECONDS = 7 * 86400.0
DLQ_MAX_AGE_SECONDS = 30 * 86400.0
MAX_ACK_PENDING = 10_000
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
    return StreamConfig(name=names.ADVISORY_STREAM, subjects=list(names.MAX_DELIVERIES_ADVISORY_SUBJECTS),
                        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE, num_replicas=replicas,
                        max_age=DLQ_MAX_AGE_SECONDS)


def status_stream_config(replicas: int = 1) -> StreamConfig:
    """Status updates waiting for Redis to come back; removed once written."""
    return StreamConfig(name=names.STATUS_STREAM, subjects=names.STATUS_SUBJECTS,
                        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE, num_replicas=replicas,
                        max_age=JOB_MAX_AGE_SECONDS)


def ingest_stream_config(replicas: int = 1) -> StreamConfig:
    """Bucket notifications waiting for a worker (worker.ingest); removed once handled.
    The duplicate window drops a notification re-sent with the same Nats-Msg-Id; MinIO sets
    none, so repeated notifications are de-duplicated on key + ETag in Redis instead."""
    return StreamConfig(name=names.INGEST_STREAM, subjects=names.INGEST_SUBJECTS,
                        retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE, num_replicas=replicas,
                        duplicate_window=DUPLICATE_WINDOW_SECONDS, max_age=JOB_MAX_AGE_SECONDS)


INGEST_ACK_WAIT_SECONDS = 30.0


def ingest_consumer_config() -> ConsumerConfig:
    """No delivery limit: a notification is retried (nak with a delay) while Redis or NATS is
    down, and acked once handled; malformed or unmatched ones are acked at once, never retried."""
    return ConsumerConfig(durable_name=names.INGEST_CONSUMER, ack_policy=AckPolicy.EXPLICIT,
                          deliver_policy=DeliverPolicy.ALL, ack_wait=INGEST_ACK_WAIT_SECONDS, max_deliver=-1)


LANES: dict[Priority, tuple[str, str]] = {
    Priority.INTERACTIVE: (names.WORKERS_CONSUMER, names.INTERACTIVE_JOBS_FILTER),
    Priority.BATCH: (names.BATCH_WORKERS_CONSUMER, names.BATCH_JOBS_FILTER),
}
"""Each lane's durable consumer on PIXQ_JOBS and its filter subject (one filter: nats-server 2.9)."""


def workers_consumer_config(settings: Settings, priority: Priority = Priority.INTERACTIVE) -> ConsumerConfig:
    """One lane's consumer. Explicit acks; ACK_WAIT bounds how long a crashed worker's job
    stays invisible; MAX_RETRIES + 1 deliveries in all, after which the server emits
    MAX_DELIVERIES. Both lanes share these settings; only name and filter differ."""
    durable, filter_subject = LANES[priority]
    return ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
                          deliver_policy=DeliverPolicy.ALL, ack_wait=settings.ack_wait,
                          max_deliver=settings.max_retries + 1, max_ack_pending=MAX_ACK_PENDING,
                          max_waiting=512, filter_subject=filter_subject)


def advisory_consumer_config() -> ConsumerConfig:
    return ConsumerConfig(durable_name=names.ADVISORY_CONSUMER, ack_policy=AckPolicy.EXPLICIT,
                          deliver_policy=DeliverPolicy.ALL, ack_wait=30.0)


def status_consumer_config() -> ConsumerConfig:
    """No delivery limit: an update is retried until Redis takes it."""
    return ConsumerConfig(durable_name=names.STATUS_CONSUMER, ack_policy=AckPolicy.EXPLICIT,
                          deliver_policy=DeliverPolicy.ALL, ack_wait=30.0, max_deliver=-1)


WEBHOOKS_MAX_ACK_PENDING = 100_000
"""Events a worker holds for webhooks: a delivery waiting for its next retry stays pending (its
nak carries the delay), so this bounds how many may wait at once before new events queue
behind them; far above any backlog a 60 s receiver outage builds."""


def webhooks_consumer_config(settings: Settings) -> ConsumerConfig:
    """Webhook delivery reads PIXQ_EVENTS through its own durable consumer.

    Deliver policy NEW when created, so an upgrade that adds it does not send every event
    still in the stream. Explicit acks; no delivery limit (max_deliver -1): pixq counts
    attempts itself (worker.webhooks) and gives up after WEBHOOK_BACKOFF, so a Redis or
    NATS outage never uses up a delivery. ack_wait leaves room for one attempt
    (WEBHOOK_TIMEOUT) plus the Redis reads and writes around it. Filtered to the event types
    that are delivered (pixq.webhooks.consumer_filter_subjects; ``filter_subjects`` needs
    nats-server >= 2.10, which applies a new list in place to an existing consumer)."""
    return ConsumerConfig(durable_name=names.WEBHOOKS_CONSUMER, ack_policy=AckPolicy.EXPLICIT,
                          deliver_policy=DeliverPolicy.NEW, ack_wait=2 * settings.webhook_timeout + 30.0,
                          max_deliver=-1, max_ack_pending=WEBHOOKS_MAX_ACK_PENDING,
                          filter_subjects=webhooks.consumer_filter_subjects())


async def connect(settings: Settings, name: str, attempts: int = 30) -> NATS:
    """Connect, retrying the first connection (a pod may start before NATS); reconnect forever after.

    Credentials and TLS come from pixq.transport. Two nats-py behaviours are worked around:
    it applies max_reconnect_attempts to the first connection as well, and with -1 it would
    retry a refused first connection (wrong credentials, untrusted certificate) forever
    without returning; and after a failed TLS handshake on a first connection it waits
    forever for the abandoned plain socket to close. So each attempt here tries every
    server twice, is stopped at a TLS failure, logs the server's or the socket's reason,
    and after ``attempts`` the error reaches the caller (the process exits and says why).
    Only a connected client is switched to reconnecting forever.
    """
    errors: list[str] = []
    """What went wrong during the current attempt, as the server or the socket said it."""
    tls_failed = asyncio.Event()

    async def on_disconnect() -> None:
        log.warning("nats_disconnected")

    async def on_reconnect() -> None:
        log.info("nats_reconnected")

    async def on_error(exc: Exception) -> None:
        errors.append(describe(exc))
        log.warning("nats_error", error=errors[-1])
        if isinstance(exc, ssl.SSLError):
            tls_failed.set()

    for attempt in range(1, attempts + 1):
        nc = NATS()
        options = transport.nats_connect_options(settings, lambda nc=nc: transport.nats_connection_is_tls(nc))
        tls_failed.clear()
        connecting = asyncio.ensure_future(
            nc.connect(**options, name=name, connect_timeout=2, max_reconnect_attempts=1, reconnect_time_wait=0.2,
                       disconnected_cb=on_disconnect, reconnected_cb=on_reconnect, error_cb=on_error))
        stopped = asyncio.ensure_future(tls_failed.wait())
        try:
            await asyncio.wait({connecting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not connecting.done():
                connecting.cancel()
                await asyncio.gather(connecting, return_exceptions=True)
                raise NatsError("TLS handshake failed")
            connecting.result()
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            cause = "; ".join(dict.fromkeys(errors)) or describe(exc)
            log.warning("nats_connect_failed", attempt=attempt, error=cause)
            try:
                await asyncio.wait_for(nc.close(), 1)
            except (NatsError, OSError, asyncio.TimeoutError):
                pass
            if attempt == attempts:
                raise NatsError(f"cannot connect to NATS: {cause}") from exc
            errors.clear()
            await asyncio.sleep(min(2.0, 0.2 * attempt))
            continue
        finally:
            stopped.cancel()
            connecting.cancel()
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = 0.5
        return nc
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
        log.warning("nats_close_failed", error=describe(exc))


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one to ``config`` (an upgrade may change it).

    An existing stream is updated, never created again: nats-server (2.9) counts a repeated
    create's ``max_bytes`` as a second reservation, and refuses it with "insufficient storage"
    once two reservations exceed max_file_store (PIXQ_EVENTS has a byte cap)."""
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except BadRequestError:
            pass  # another process created it meanwhile
    await js.update_stream(config)


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create (or update) every stream; API and workers both call it, safe from many processes at once."""
    replicas = settings.nats_stream_replicas
    for config in (jobs_stream_config(replicas), dlq_stream_config(replicas), advisory_stream_config(replicas),
                   status_stream_config(replicas), ingest_stream_config(replicas),
                   events.stream_config(settings.events_max_age, settings.events_max_bytes, replicas)):
        await _ensure_stream(js, config)


async def _ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> ConsumerInfo:
    """Create the durable consumer, or bring an existing one to ``config``.

    nats-py has no update call: JetStream's durable-create API with the same name updates a
    consumer in place when only updatable fields differ (ack_wait, max_deliver,
    max_ack_pending, description...; nats-server >= 2.9), and refuses otherwise."""
    try:
        return await js.add_consumer(stream, config)
    except APIError as exc:  # nats-server 2.9 answers 500 "... can not be updated"
        raise PixqError(ErrorCode.QUEUE_UNAVAILABLE,
                        f"consumer {config.durable_name} on {stream} exists with settings that cannot be "
                        f"updated in place ({exc.description or exc}); delete it to let a worker recreate it "
                        "(see docs/queue.md)") from None
    except (NatsError, OSError, asyncio.TimeoutError) as exc:
        raise PixqError(ErrorCode.QUEUE_UNAVAILABLE,
                        f"cannot set up consumer {config.durable_name} on {stream}: {describe(exc)}") from None


async def ensure_worker_consumers(js: JetStreamContext, settings: Settings) -> None:
    """Workers only: create the six consumers, or update them to this worker's settings.

    The API never touches them, so the lanes' max_deliver and ack_wait always come from the
    workers' MAX_RETRIES and ACK_WAIT. When a worker starts with changed values, the existing
    consumers are updated (the last worker to start wins during a rollout).

    The interactive lane comes first: an upgrade from before priorities finds ``pixq-workers``
    without a filter, and PIXQ_JOBS (work-queue retention) refuses the batch lane's consumer
    until ``pixq-workers`` is narrowed to ``pixq.jobs.*`` (_refilter)."""
    for priority in LANES:
        await _ensure_lane_consumer(js, workers_consumer_config(settings, priority))
    await _ensure_consumer(js, names.ADVISORY_STREAM, advisory_consumer_config())
    await _ensure_consumer(js, names.STATUS_STREAM, status_consumer_config())
    await _ensure_webhooks_consumer(js, webhooks_consumer_config(settings))
    await _ensure_consumer(js, names.INGEST_STREAM, ingest_consumer_config())


async def _ensure_webhooks_consumer(js: JetStreamContext, wanted: ConsumerConfig) -> None:
    """Create or update pixq-webhooks in place (one created before its filter was, reading the
    whole stream, gets it here). A server that kept another filter (older than 2.10, which
    ignores ``filter_subjects``) still works, only slower: the deliverer acks unread what it
    does not deliver; so it is logged, not fatal."""
    info = await _ensure_consumer(js, names.EVENTS_STREAM, wanted)
    kept = sorted(info.config.filter_subjects or ([info.config.filter_subject] if info.config.filter_subject else []))
    if kept != sorted(wanted.filter_subjects or []):
        log.warning("consumer_filter_not_applied", consumer=wanted.durable_name, kept=kept,
                    wanted=wanted.filter_subjects)


async def _ensure_lane_consumer(js: JetStreamContext, wanted: ConsumerConfig) -> None:
    """Create or update one lane's consumer, and check that nats-server kept what we asked."""
    durable = wanted.durable_name
    before = await consumer_config(js, names.JOBS_STREAM, durable)
    if before is not None and (before.filter_subject or "") != wanted.filter_subject:
        await _refilter(js, before, wanted)
    info = await _ensure_consumer(js, names.JOBS_STREAM, wanted)
    if _lane_settings_differ(info.config, wanted):
        raise PixqError(ErrorCode.QUEUE_UNAVAILABLE,
                        f"consumer {durable} kept max_deliver={info.config.max_deliver} "
                        f"ack_wait={info.config.ack_wait} filter_subject={info.config.filter_subject!r}, wanted "
                        f"{wanted.max_deliver} / {wanted.ack_wait} / {wanted.filter_subject!r}")
    if before is not None and _lane_settings_differ(before, wanted):
        log.warning("consumer_updated", consumer=durable,
                    max_deliver=[before.max_deliver, wanted.max_deliver],
                    ack_wait=[before.ack_wait, wanted.ack_wait],
                    filter_subject=[before.filter_subject, wanted.filter_subject])


async def _refilter(js: JetStreamContext, before: ConsumerConfig, wanted: ConsumerConfig) -> None:
    """Give a lane's consumer a new filter subject by deleting and recreating it.

    nats-server 2.9.10 accepts a new filter_subject in place, but the updated consumer then
    counts the jobs already queued as delivered and never hands them out (tests/test_fairness).
    A work-queue consumer holds nothing worth keeping: its jobs stay in the stream until acked,
    and the recreated consumer delivers each from the start; a job a worker of the previous
    release is running is delivered again (with a fresh delivery count) and skipped once done
    (worker.consumer._already_done). Its other settings are first brought to ``wanted`` in
    place, as at any upgrade, so a change nats-server cannot apply still stops the worker."""
    durable = wanted.durable_name
    await _ensure_consumer(js, names.JOBS_STREAM, wanted.evolve(filter_subject=before.filter_subject))
    log.warning("consumer_recreated", consumer=durable, filter_subject=[before.filter_subject, wanted.filter_subject],
                reason="a new filter subject is not applied in place (nats-server 2.9)")
    try:
        await js.delete_consumer(names.JOBS_STREAM, durable)
    except NotFoundError:
        pass  # another worker of this release got there first
    except (NatsError, OSError, asyncio.TimeoutError) as exc:
        raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, f"cannot recreate consumer {durable}: {describe(exc)}") from None


def _lane_settings_differ(current: ConsumerConfig, wanted: ConsumerConfig) -> bool:
    """Do max_deliver or ack_wait (the settings MAX_RETRIES and ACK_WAIT drive), or the lane's
    filter subject, differ?"""
    return (current.max_deliver != wanted.max_deliver or abs((current.ack_wait or 0) - wanted.ack_wait) > 1e-3
            or (current.filter_subject or "") != (wanted.filter_subject or ""))


async def consumer_config(js: JetStreamContext, stream: str, durable: str) -> ConsumerConfig | None:
    """The consumer's settings, or None when it does not exist."""
    try:
        return (await js.consumer_info(stream, durable)).config
    except NotFoundError:
        return None
    except (NatsError, OSError, asyncio.TimeoutError) as exc:
        raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, f"cannot read consumer {durable}: {describe(exc)}") from None


def message_id(job_id: str, generation: int) -> str:
    """Nats-Msg-Id: a retried publish of the same job generation is stored once."""
    return f"{job_id}:{generation}"


async def publish_job(js: JetStreamContext, message: JobMessage, data: bytes | None = None) -> PubAck:
    """Publish a job's message (``data``: its JSON when the caller has it already) and wait for
    JetStream's ack, resolving a lost one (pixq.publish.publish_confirmed: an ack,
    QUEUE_UNAVAILABLE, or PublishUnconfirmed)."""
    return await publish_confirmed(js, names.job_subject(message.type.value, message.priority.value),
                                   data if data is not None else message.model_dump_json().encode(),
                                   message_id(message.job_id, message.metadata.generation), names.JOBS_STREAM,
                                   job_id=message.job_id)


FETCH_ERROR_PAUSE_SECONDS = 0.5


async def fetch(subscription: JetStreamContext.PullSubscription, batch: int, wait: float) -> list[Msg]:
    """Up to ``batch`` messages; [] when none came within ``wait`` or NATS is unreachable
    (logged, then a short pause so a pull loop does not spin while the client reconnects)."""
    try:
        return await subscription.fetch(batch, timeout=wait)
    except (NatsTimeoutError, asyncio.TimeoutError):
        return []
    except (NatsError, OSError) as exc:
        log.warning("fetch_failed", error=describe(exc))
        await asyncio.sleep(FETCH_ERROR_PAUSE_SECONDS)
        return []


async def settle(reply) -> None:
    """Await an ack or nak; if NATS is unreachable, the message is redelivered after ack_wait anyway."""
    try:
        await reply
    except (NatsError, OSError):
        pass


class ConsumerGone(Exception):
    """A pull loop's durable consumer (or its stream) no longer exists: the loop cannot go on.

    Raised rather than retried, so the worker process exits and is restarted, and the new
    process recreates the consumer (ensure_worker_consumers)."""


class Puller:
    """A pull subscription on one durable consumer that notices when the consumer is gone.

    A fetch from a deleted consumer does not fail, it just never returns messages: so,
    while fetches come back empty, the consumer's existence is checked every
    CHECK_INTERVAL_SECONDS, and a "not found" from JetStream that lasts GONE_CONFIRM_SECONDS
    raises ConsumerGone. Transient errors (disconnected, timeouts) never do.

    Why confirm: on a cluster, a node that has just restarted or lost its meta leader can answer
    "stream not found" (10059) for a few seconds about a stream that exists; the chaos run saw
    workers exit on it. A deleted consumer stays deleted, so waiting costs only that delay."""

    CHECK_INTERVAL_SECONDS = 5.0
    GONE_CONFIRM_SECONDS = 10.0

    def __init__(self, js: JetStreamContext, stream: str, durable: str) -> None:
        self.js = js
        self.stream = stream
        self.durable = durable
        self.subscription: JetStreamContext.PullSubscription | None = None
        self._checked = time.monotonic()
        self._missing_since: float | None = None
        """When consumer checks began answering "not found" (None while it is found)."""

    async def start(self) -> "Puller":
        try:
            self.subscription = await self.js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
        except NotFoundError as exc:
            raise ConsumerGone(f"consumer {self.durable} on {self.stream}: {describe(exc)}") from None
        self._checked = time.monotonic()
        return self

    async def fetch(self, batch: int, wait: float) -> list[Msg]:
        assert self.subscription is not None, "call start() first"
        messages = await fetch(self.subscription, batch, wait)
        if messages:
            self._checked = time.monotonic()
        elif time.monotonic() - self._checked >= self.CHECK_INTERVAL_SECONDS:
            await self.check()
        return messages

    async def check(self) -> None:
        now = self._checked = time.monotonic()
        try:
            await self.js.consumer_info(self.stream, self.durable)
        except NotFoundError as exc:
            if self._missing_since is None:
                self._missing_since = now
            missing = now - self._missing_since
            if missing >= self.GONE_CONFIRM_SECONDS:
                raise ConsumerGone(f"consumer {self.durable} on {self.stream} is gone "
                                   f"(not found for {missing:.0f} s): {describe(exc)}") from None
            log.warning("consumer_not_found", consumer=self.durable, stream=self.stream, error=describe(exc),
                        missing_seconds=round(missing, 1))
            self._checked = now - self.CHECK_INTERVAL_SECONDS + 1.0  # check again in a second
            return
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            log.debug("consumer_check_failed", consumer=self.durable, error=describe(exc))
            return
        self._missing_since = None


class LanePuller(Puller):
    """Pulls from one lane's durable consumer, never receiving more messages than it asked for.

    nats-py's fetch() can hand back more than its ``batch`` (it first empties whatever earlier,
    timed-out requests left behind) and a fetch of one message always lingers; a worker that
    weighs two lanes needs exact, immediate answers instead. So this sends JetStream's pull
    requests itself, one at a time, on its own inbox: ``no_wait`` (what is there now, answered
    at once) or ``expires`` (wait for the first message), and reads the answer until it has
    ``batch`` messages or JetStream's status (404 no messages, 408 expired, 409) ends the request.

    Only a request whose answer never came (NATS disconnected, consumer deleted) can deliver
    late: those messages are this worker's, and the next pull returns them first."""

    ANSWER_GRACE_SECONDS = 2.0
    """How long after a request's own wait its answer may take before it is given up."""

    def __init__(self, js: JetStreamContext, stream: str, durable: str) -> None:
        super().__init__(js, stream, durable)
        self.nc: NATS = js._nc  # type: ignore[attr-defined]  # nats-py keeps no public handle
        self.next_subject = f"{js._prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"  # type: ignore[attr-defined]
        self.arrivals: asyncio.Queue[Msg] = asyncio.Queue()
        self.inbox = ""

    async def start(self) -> "LanePuller":
        try:
            await self.js.consumer_info(self.stream, self.durable)
        except NotFoundError as exc:
            raise ConsumerGone(f"consumer {self.durable} on {self.stream}: {describe(exc)}") from None
        self.inbox = self.nc.new_inbox()
        self.subscription = await self.nc.subscribe(self.inbox, cb=self._arrived)  # type: ignore[assignment]
        self._checked = time.monotonic()
        return self

    async def _arrived(self, message: Msg) -> None:
        self.arrivals.put_nowait(message)

    async def fetch(self, batch: int, wait: float) -> list[Msg]:
        return await self.pull(batch, wait)

    async def pull(self, batch: int, wait: float = 0.0) -> list[Msg]:
        """Up to ``batch`` messages: with ``wait`` 0 only those waiting now, else waiting up to
        ``wait`` seconds for the first one (a request of ``batch`` 1 is then complete with it)."""
        return [message async for message in self.consume(batch, wait)]

    def _late(self, batch: int) -> list[Msg]:
        """Messages already here from an earlier request given up on (late statuses dropped)."""
        late: list[Msg] = []
        while len(late) < batch and not self.arrivals.empty():
            message = self.arrivals.get_nowait()
            if not JetStreamContext.is_status_msg(message):
                late.append(message)
        return late

    async def consume(self, batch: int, wait: float) -> AsyncIterator[Msg]:
        """``pull``'s messages, each handed over as it arrives (first any left by an earlier
        request given up on). For a loop that handles messages one by one (the webhook
        deliverer): a request for all of its free slots stays open while events trickle in, so it
        costs JetStream one request per ``batch`` events, or per ``wait`` seconds, instead of one
        (nats-py's fetch: two) per event."""
        assert self.inbox, "call start() first"
        handed = 0
        for message in self._late(batch):
            handed += 1
            yield message
        if handed < batch:
            async for message in self._answer(batch - handed, wait):
                handed += 1
                yield message
        if handed:
            self._checked = time.monotonic()
        elif time.monotonic() - self._checked >= self.CHECK_INTERVAL_SECONDS:
            await self.check()

    async def _answer(self, batch: int, wait: float) -> AsyncIterator[Msg]:
        """Send one pull request and yield its messages until it has ``batch`` or JetStream ends it."""
        request: dict[str, int | bool] = {"batch": batch}
        if wait > 0:
            request["expires"] = int(wait * 1e9)
        else:
            request["no_wait"] = True
        if not self.nc.is_connected:  # nats-py would buffer the request and send it after a reconnect
            await asyncio.sleep(FETCH_ERROR_PAUSE_SECONDS)
            return
        try:
            await self.nc.publish(self.next_subject, json.dumps(request).encode(), reply=self.inbox)
        except (NatsError, OSError) as exc:
            log.warning("fetch_failed", consumer=self.durable, error=describe(exc))
            await asyncio.sleep(FETCH_ERROR_PAUSE_SECONDS)
            return
        received = 0
        # One deadline for the whole answer; a timeout context per message (a timer, not a task
        # as wait_for would make), so the time a caller spends between messages is not cut short.
        deadline = asyncio.get_running_loop().time() + max(wait, 0.0) + self.ANSWER_GRACE_SECONDS
        while received < batch:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await self.arrivals.get()
            except TimeoutError:
                log.debug("pull_unanswered", consumer=self.durable, batch=batch)
                return
            if JetStreamContext.is_status_msg(message):
                # 404 / 408 / 409: JetStream ended this request. 503 "no responders": nothing
                # serves the consumer any more (deleted?), so check it at the next empty pull.
                if message.header and message.header.get("Status") == "503":
                    self._checked = 0.0
                return
            received += 1
            yield message


async def consumer_backlog(js: JetStreamContext, priority: Priority = Priority.INTERACTIVE) -> tuple[int, int]:
    """``(num_pending, num_ack_pending)`` of one lane's consumer: jobs not yet delivered to any
    worker, and jobs delivered but not yet acked (running, or waiting for a retry's backoff).

    Their sum is the backlog KEDA's nats-jetstream scaler calls lag; summed over both lanes it
    is what workers scale on (pixq_queue_backlog_messages, KEDA's scalingModifiers formula);
    num_pending alone hides every job a worker holds."""
    info = await js.consumer_info(names.JOBS_STREAM, LANES[priority][0])
    return int(info.num_pending or 0), int(info.num_ack_pending or 0)


async def dlq_size(js: JetStreamContext) -> int:
    info = await js.stream_info(names.DLQ_STREAM)
    return int(info.state.messages)
