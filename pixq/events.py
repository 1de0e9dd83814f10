"""Job events: every applied status change, published to PIXQ_EVENTS for SSE, long-poll and webhooks.

An event is written only after Redis applied the change it reports (pixq.status returns
the record it stored), so the stream never announces a status GET cannot show, and the
stream order of one job's events follows the status store's order. Each carries the
job's public status document (pixq.documents, without URLs: those are minted when the
event is sent) and its position ``(generation, attempt, phase)``, which a reader uses to
drop anything not ahead of what it has already shown.

Envelope, one JSON object per message (the Standard Webhooks payload shape)::

    {"type": "job.completed", "timestamp": "...Z", "tenant": "catalogue",
     "position": [0, 1, 3], "data": {<public status document>}}

``type`` is ``job.<status>`` for a job, ``batch.completed`` for a batch, and is also the
subject's last token (names.event_subject): ``pixq.events.<tenant>.job.<job_id>.<status>``,
``pixq.events.<tenant>.batch.<batch_id>.completed``, so a consumer that wants only some types
(the webhook deliverer: terminal ones) has the server filter them. The Nats-Msg-Id
is derived from the position, so a re-published event (a worker redelivered after its
terminal write) is stored once within the stream's duplicate window.
"""

import asyncio
import json
from typing import Any

from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from pixq import names
from pixq.documents import public_status
from pixq.errors import ErrorCode, PixqError, describe
from pixq.jobs import PHASE_OF, TERMINAL_STATUSES, JobStatus, utc_now
from pixq.publish import publish_confirmed

PUBLISH_TIMEOUT_SECONDS = 5.0
DUPLICATE_WINDOW_SECONDS = 120.0
BATCH_COMPLETED = "batch.completed"


def stream_config(max_age: float, max_bytes: int, replicas: int = 1) -> StreamConfig:
    """Limits retention for EVENTS_MAX_AGE (72 h by default), readers resuming by sequence; and
    at most EVENTS_MAX_BYTES (512 MiB; deploy/ sets 2 GiB), dropping the oldest events first, so a busy install fills
    neither JetStream's store nor the other streams' room (about 1 KB per event, 3 per job)."""
    return StreamConfig(name=names.EVENTS_STREAM, subjects=names.EVENTS_SUBJECTS,
                        retention=RetentionPolicy.LIMITS, storage=StorageType.FILE, num_replicas=replicas,
                        max_age=max_age, max_bytes=max_bytes, duplicate_window=DUPLICATE_WINDOW_SECONDS,
                        discard=DiscardPolicy.OLD)


def position(record: dict[str, Any]) -> tuple[int, int, int]:
    """Where a status record stands: later positions are later statuses (pixq.status)."""
    return (int(record.get("generation") or 0), int(record.get("attempts") or 0),
            int(PHASE_OF[JobStatus(record["status"])]))


def job_event(record: dict[str, Any]) -> dict[str, Any]:
    """The event announcing ``record`` (a status record as pixq.status stores it)."""
    return {"type": f"job.{record['status']}", "timestamp": record.get("updated_at") or utc_now(),
            "tenant": record.get("tenant") or "default", "position": list(position(record)),
            "data": public_status(record)}


def is_terminal(event: dict[str, Any]) -> bool:
    return event["type"] in {f"job.{status.value}" for status in TERMINAL_STATUSES}


def _job_message(record: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """Subject, event and Nats-Msg-Id of the event for ``record``."""
    event = job_event(record)
    job_id = record["job_id"]
    return (names.event_subject(event["tenant"], event["type"], job_id), event,
            "ev:{}:{}:{}:{}".format(job_id, *event["position"]))


CALLBACK_HEADER = "Pixq-Callback"
"""On a job event: ``1`` when the job has its own callback_url, ``0`` when not. The webhook
deliverer then skips reading the job's record from Redis for the (usual) job with no callback in
a tenant with no webhook_url. Absent on events stored by an earlier release: the record is read."""


async def publish_job_event(js: JetStreamContext, record: dict[str, Any]) -> None:
    """Publish the event for an applied status change; PixqError(QUEUE_UNAVAILABLE) if not stored."""
    await _publish(js, *_job_message(record), {CALLBACK_HEADER: "1" if record.get("callback_url") else "0"})


async def send_job_event(nc: NATS, record: dict[str, Any]) -> bool:
    """Send the event for an applied, non-terminal status change (``processing``) without
    waiting for JetStream's ack: the stream stores it as it stores any message on its subjects,
    deduplicated by the same Nats-Msg-Id. A ``processing`` event is best-effort anyway (a worker
    runs the job whether or not it was announced); not waiting saves the worker a request, its
    reply and a timer per job (issue 16). Terminal events keep publish_job_event's confirmed
    publish, on the same connection, so the server receives a job's events in order.

    nats-py's publish only queues the bytes for its flusher task. False when it refused them
    (connection closed, or its reconnect buffer full)."""
    subject, event, msg_id = _job_message(record)
    try:
        await nc.publish(subject, _encode(event),
                         headers={"Nats-Msg-Id": msg_id, "Nats-Expected-Stream": names.EVENTS_STREAM})
    except (NatsError, OSError):
        return False
    return True


RECONNECT_GRACE_SECONDS = 1.0
"""How long a submit waits for the API's NATS connection to come back before its 503: moving
to another node of a cluster (its node restarted) takes ~10 ms (tests/cluster)."""
RECONNECT_POLL_SECONDS = 0.02


async def _connected(nc: NATS, grace: float) -> bool:
    """Whether ``nc`` is connected, or reconnects within ``grace`` (nats-py has no awaitable
    for it: the state is polled, briefly)."""
    deadline = asyncio.get_running_loop().time() + grace
    while not nc.is_connected:
        if nc.is_closed or asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(RECONNECT_POLL_SECONDS)
    return True


async def publish_queued_event(nc: NATS, js: JetStreamContext, record: dict[str, Any]) -> None:
    """Store a new job's ``queued`` event, before its message is published.

    The ack is awaited (a lost one resolved, a stream between leaders asked again:
    pixq.publish) before the job's message exists, so no worker can announce ``processing``
    first and a job's events are stored in the status store's order on a cluster too. (It used
    to be sent without waiting, saving a round trip; the chaos run on 3 nodes showed that send
    lost during a PIXQ_EVENTS leader election, and its re-publish after the accept stored
    behind the worker's events.) Raises PixqError (QUEUE_UNAVAILABLE) or PublishUnconfirmed;
    after the latter it may be stored all the same, which is why a failed submit withdraws it
    (api.submission)."""
    if not await _connected(nc, RECONNECT_GRACE_SECONDS):
        # nats-py would buffer it and send it after a reconnect, even for a 503: refuse instead.
        raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, "queue unavailable: not connected to NATS")
    subject, event, msg_id = _job_message(record)
    await publish_confirmed(js, subject, _encode(event), msg_id, names.EVENTS_STREAM, job_id=record["job_id"])


async def publish_batch_completed(js: JetStreamContext, tenant: str, batch: dict[str, Any]) -> None:
    """Publish a batch's one ``batch.completed`` event (``batch`` is its public document)."""
    event = {"type": BATCH_COMPLETED, "timestamp": utc_now(), "tenant": tenant, "position": [0, 0, 3],
             "data": batch}
    await _publish(js, names.batch_event_subject(tenant, batch["batch_id"]), event, f"ev:batch:{batch['batch_id']}")


def _encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


async def _publish(js: JetStreamContext, subject: str, event: dict[str, Any], msg_id: str,
                   headers: dict[str, str] | None = None) -> None:
    try:
        await js.publish(subject, _encode(event), headers={"Nats-Msg-Id": msg_id, **(headers or {})},
                         stream=names.EVENTS_STREAM,
                         timeout=PUBLISH_TIMEOUT_SECONDS)
    except (NatsError, OSError, asyncio.TimeoutError) as exc:
        raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, f"cannot publish event: {describe(exc)}") from None
