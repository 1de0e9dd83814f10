"""JetStream publishes that must be stored exactly once, with a lost ack resolved, not guessed.

Two publishes use it: a job's message (pixq.queue.publish_job) and a submit's ``queued`` event
(pixq.events.publish_queued_event), which is stored before the job's message so that no
worker's event can come first in PIXQ_EVENTS. Three outcomes:

* an ack (``duplicate`` set when an earlier send of the same Nats-Msg-Id was stored): stored
  exactly once;
* PixqError(QUEUE_UNAVAILABLE): definitely not stored (not connected, so nothing was sent; or
  JetStream answered with an error; or no stream answered for PUBLISH_LEADERLESS_SECONDS);
* PublishUnconfirmed: no answer could be had within PUBLISH_TIMEOUT_SECONDS +
  PUBLISH_CONFIRM_SECONDS; it may or may not be stored.

A lost ack is resolved by sending the same message again, with the same Nats-Msg-Id, while
connected, until an answer comes or PUBLISH_CONFIRM_SECONDS pass: within the stream's duplicate
window JetStream stores it at most once, and its PubAck says whether the first send had landed.
"""

import asyncio
import time
from typing import Any

import structlog
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from pixq.errors import ErrorCode, PixqError, describe

log = structlog.get_logger("pixq.publish")

PUBLISH_TIMEOUT_SECONDS = 5.0
"""How long one publish waits for JetStream's ack."""
PUBLISH_CONFIRM_SECONDS = 10.0
"""After a publish got no ack, how long the same message (same Nats-Msg-Id) is sent again to
learn whether the first one landed; JetStream's duplicate window (120 s) covers it."""
PUBLISH_LEADERLESS_SECONDS = 6.0
"""How long a publish that no stream answered (no responders: on a JetStream cluster, the
stream between leaders) is sent again before the caller answers 503. A SIGKILLed leader's
stream has a new one within ~2-6 s (tests/cluster/test_node_faults.py); nothing was stored,
so asking again is safe (same Nats-Msg-Id besides)."""


class PublishUnconfirmed(PixqError):
    """No ack came for a publish, nor for re-sends of it within PUBLISH_CONFIRM_SECONDS.

    The message may be stored, or may still sit in the client's buffer and be sent after a
    reconnect: the caller must not treat it as if it never existed (for a job: answer 503, but
    leave a terminal status behind so that a worker receiving the message skips it)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.QUEUE_UNAVAILABLE, message)


async def publish_confirmed(js: JetStreamContext, subject: str, payload: bytes, msg_id: str, stream: str,
                            **log_fields: Any) -> PubAck:
    """Publish ``payload`` to ``stream`` once (see the module docstring for the outcomes)."""
    nc = getattr(js, "_nc", None)

    def connected() -> bool:
        return nc is None or nc.is_connected

    async def send(timeout: float) -> PubAck:
        return await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id}, timeout=timeout, stream=stream)

    if not connected():
        # While reconnecting, nats-py would buffer the publish and send it after the reconnect,
        # even though we answer 503 first: refuse before anything is sent.
        raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, "queue unavailable: not connected to NATS")
    leaderless_until = time.monotonic() + PUBLISH_LEADERLESS_SECONDS
    while True:
        try:
            return await send(PUBLISH_TIMEOUT_SECONDS)
        except (NoStreamResponseError, ServiceUnavailableError) as exc:
            # Nothing stored; on a cluster, the stream is electing a leader: ask again for a while.
            if time.monotonic() < leaderless_until and connected():
                await asyncio.sleep(0.2)
                continue
            raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, f"queue unavailable: {describe(exc)}") from None
        except APIError as exc:  # JetStream answered: nothing was stored
            raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, f"queue unavailable: {describe(exc)}") from None
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            first_error = describe(exc)
            break
    log.warning("publish_unanswered", stream=stream, msg_id=msg_id, error=first_error, **log_fields)

    deadline = time.monotonic() + PUBLISH_CONFIRM_SECONDS
    last_error = first_error
    while (remaining := deadline - time.monotonic()) > 0:
        if not connected():
            await asyncio.sleep(min(0.05, remaining))  # the client reconnects by itself
            continue
        try:
            ack = await send(min(PUBLISH_TIMEOUT_SECONDS, remaining))
        except (NoStreamResponseError, ServiceUnavailableError) as exc:
            last_error = describe(exc)  # no stream able to answer right now (JetStream starting): ask again
            await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            continue
        except APIError as exc:
            # JetStream processed the re-send and refused it, so it was no duplicate: the first
            # send never arrived (anything buffered was flushed ahead of this on the connection).
            raise PixqError(ErrorCode.QUEUE_UNAVAILABLE, f"queue unavailable: {describe(exc)}") from None
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            last_error = describe(exc)
            continue
        log.info("publish_confirmed", stream=stream, msg_id=msg_id, duplicate=bool(ack.duplicate), **log_fields)
        return ack
    raise PublishUnconfirmed(f"queue unavailable: publish not confirmed within "
                             f"{PUBLISH_TIMEOUT_SECONDS + PUBLISH_CONFIRM_SECONDS:g}s ({last_error})")
