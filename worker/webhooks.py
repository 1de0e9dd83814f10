"""Webhook delivery: the worker loop reading PIXQ_EVENTS through the durable consumer ``pixq-webhooks``.

Every event reaches exactly one worker. The consumer is filtered on the delivered types (the
type is the subject's last token: pixq.webhooks.consumer_filter_subjects), so the server never
hands out queued/processing/retrying events; those that still come (the 5-token subjects of
events stored by an earlier release, which carry no type) are acked at once. For the others (pixq.webhooks says which, and to whom) the
worker makes one attempt and then either acks the event (delivered, or given up) or naks
it with a delay, so JetStream hands it back, to any worker, when the next attempt is due.
Nothing is held in memory between attempts: a worker restart loses nothing, and the
``webhook-id`` is derived from the event, so every attempt carries the same one.

Attempts are counted in Redis, not by JetStream: before an attempt the worker reads the
job's (batch's) delivery record, and the attempt number is one more than the attempts
recorded for that webhook-id. So:

* a Redis outage burns nothing: without the record no attempt is made, the event is handed
  back after HAND_BACK_SECONDS, uncounted; an attempt whose record could not be written is
  not counted either (at worst one more attempt is made);
* a NATS outage burns nothing: an ack or nak that was lost only means JetStream delivers
  the event again after ack_wait; the record then shows it was delivered (acked without
  sending) or when the next attempt is due (naked again until then). The same check makes
  a retry never come earlier than scheduled, whatever redelivered it.

Retries follow WEBHOOK_BACKOFF: the wait after attempt *n* is its *n*-th entry (default
5s, 30s, 2m, 10m, 30m, 1h, 3h, 6h, 12h, 24h: eleven attempts over about 47 hours), or
longer when the receiver's ``Retry-After`` asks for it (capped at a day). After the last
entry's attempt the delivery is recorded ``failed`` and the event acked. So is a retry
that would fall after the event leaves PIXQ_EVENTS (EVENTS_MAX_AGE, 72 h by default;
Retry-After can stretch the schedule past it): recorded, rather than vanishing unseen.

Only a 2xx counts as delivered; a 3xx is a failed attempt (redirects are not followed);
``410 Gone`` disables the endpoint (pixq.webhooks); an address refused by the SSRF guard
(pixq.outbound) or a tenant without a signing secret is recorded ``refused``, never retried.

Up to WEBHOOK_CONCURRENCY attempts run at once, each in its own task bounded by
WEBHOOK_TIMEOUT, so a slow receiver holds one slot and never the others.
"""

import asyncio
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp.abc import AbstractResolver
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram

from pixq import documents, events, names, outbound, queue, units, webhooks
from pixq.errors import PixqError, describe
from pixq.jobs import utc_now
from pixq.settings import Settings
from pixq.status import StatusStore
from pixq.storage import Storage
from pixq.tenants import TenantDirectory, TenantSettings, load_directory
from pixq.webhooks import Outcome

log = structlog.get_logger("pixq.worker.webhooks")

HAND_BACK_SECONDS = 5.0
"""When Redis (the delivery record) is unreachable: hand the event back, uncounted, for this long."""
RETRY_AFTER_MAX_SECONDS = 86400.0
STREAM_AGE_MARGIN_SECONDS = 300.0
FETCH_WAIT_SECONDS = 1.0
ERROR_MAX_CHARS = 300

DELIVERIES = Counter("pixq_webhook_deliveries_total",
                     "Webhook delivery attempts by outcome (delivered, retrying, failed, disabled, refused)",
                     ["outcome"])
ATTEMPT_SECONDS = Histogram("pixq_webhook_attempt_duration_seconds",
                            "Seconds one webhook request took, connect to response status",
                            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
for _outcome in Outcome:
    DELIVERIES.labels(_outcome.value)


@dataclass
class Settle:
    """What to do with the event's message: ack it, or hand it back after ``delay`` seconds."""

    ack: bool
    delay: float = 0.0


ACK = Settle(ack=True)


@dataclass
class Response:
    """One attempt's result, before it is judged."""

    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    refused: bool = False
    duration: float = 0.0


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A receiver's ``Retry-After`` as seconds from now, capped at a day."""
    seconds = units.retry_after_seconds(value, now)
    return None if seconds is None else min(seconds, RETRY_AFTER_MAX_SECONDS)


def iso_at(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds, rounded up: a recorded due time is never early."""
    millis = math.ceil(epoch * 1000) / 1000
    return datetime.fromtimestamp(millis, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_of(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class WebhookDeliverer:
    """The ``webhooks`` loop of a worker (see the module docstring)."""

    def __init__(self, settings: Settings, js: JetStreamContext, status: StatusStore, storage: Storage,
                 directory: TenantDirectory | None = None, resolver: AbstractResolver | None = None) -> None:
        self.settings = settings
        self.js = js
        self.status = status
        self.storage = storage
        self.directory = directory if directory is not None else load_directory(settings)
        self.resolver = resolver
        self.store = webhooks.WebhookStore(status.client, status.job_ttl)
        self.mint = documents.download_minter(storage, settings, settings.public_base_url())
        """Download URLs in webhook bodies: presigned (S3), or signed links to PUBLIC_URL."""
        self.session: aiohttp.ClientSession | None = None

    async def run(self, stop: asyncio.Event) -> None:
        concurrency = self.settings.webhook_concurrency
        self.session = outbound.session(self.settings.outbound_allow_private_networks, self.resolver,
                                        limit=concurrency)
        tasks: set[asyncio.Task] = set()
        try:
            puller = await queue.LanePuller(self.js, names.EVENTS_STREAM, names.WEBHOOKS_CONSUMER).start()
            while not stop.is_set():
                free = concurrency - len(tasks)
                if free <= 0:
                    await asyncio.wait(tasks, timeout=FETCH_WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                    continue
                # One request for every free slot, each event handled as it arrives: a request per
                # `free` events (or per FETCH_WAIT_SECONDS), not per event (issue 16's plumbing).
                async for message in puller.consume(free, FETCH_WAIT_SECONDS):
                    task = asyncio.create_task(self.handle(message))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            await self._drain(tasks)
            await self.session.close()

    async def _drain(self, tasks: set[asyncio.Task]) -> None:
        """Let attempts under way finish (each is bounded by WEBHOOK_TIMEOUT); hand back the rest."""
        if tasks:
            grace = min(self.settings.worker_shutdown_grace, self.settings.webhook_timeout + 1.0)
            await asyncio.wait(set(tasks), timeout=grace)
        for task in set(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def handle(self, message: Msg) -> None:
        """Deliver one event and settle its message; never raises (a bug hands the event back)."""
        try:
            try:
                event = json.loads(message.data)
                if not isinstance(event, dict) or not webhooks.is_delivered(event):
                    settle = ACK
                else:
                    settle = await self.deliver(event, (message.headers or {}).get(events.CALLBACK_HEADER))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("webhook_event_invalid", subject=message.subject, error=describe(exc))
                settle = ACK
            except PixqError as exc:  # Redis unreachable: no attempt was made or counted
                log.warning("webhook_handed_back", subject=message.subject, error=exc.message)
                settle = Settle(ack=False, delay=HAND_BACK_SECONDS)
            except Exception as exc:  # noqa: BLE001 - keep the loop alive, keep the event
                log.exception("webhook_delivery_bug", subject=message.subject, error=describe(exc))
                settle = Settle(ack=False, delay=HAND_BACK_SECONDS)
        except asyncio.CancelledError:
            await queue.settle(message.nak())  # stopping: another worker takes it now
            raise
        await queue.settle(message.ack() if settle.ack else message.nak(delay=max(settle.delay, 0.001)))

    def _tenant_settings(self, tenant: str) -> TenantSettings | None:
        found = self.directory.tenants.get(tenant)
        return found.settings if found is not None else None

    async def _own_callback(self, kind: str, subject_id: str) -> tuple[str | None, str | None]:
        """The job's (batch's) callback_url and the job's request_id, from Redis; PixqError
        when Redis is down."""
        if kind == "job":
            record = await self.status.get(subject_id) or {}
            return record.get("callback_url") or None, record.get("request_id")
        return await self.store.batch_callback(subject_id), None

    async def deliver(self, event: dict[str, Any], has_callback: str | None = None) -> Settle:
        """One attempt at delivering ``event`` (a delivered type), recorded; says how to settle.
        ``has_callback``: the event's events.CALLBACK_HEADER; "0" with no tenant webhook_url
        settles without reading the job's record (most jobs: no Redis round trip)."""
        kind, subject_id = webhooks.subject_of(event)
        tenant = event.get("tenant") or "default"
        tenant_settings = self._tenant_settings(tenant)
        if kind == "job" and has_callback == "0" and webhooks.receiver(None, tenant_settings) is None:
            return ACK
        own_callback, request_id = await self._own_callback(kind, subject_id)
        url = webhooks.receiver(own_callback, tenant_settings)
        if url is None:
            return ACK
        hook_id = webhooks.webhook_id(event)
        previous = [entry for entry in await self.store.deliveries(subject_id) if entry.get("webhook_id") == hook_id]
        if previous:
            last = previous[-1]
            if last.get("outcome") in webhooks.FINAL_OUTCOMES:
                return ACK  # settled before (a redelivery after a lost ack, or a re-published event)
            due = last.get("next_attempt_at")
            if due and (wait := epoch_of(due) - time.time()) > 0:
                return Settle(ack=False, delay=wait)
        attempt = len(previous) + 1
        record = {"webhook_id": hook_id, "event_type": event["type"], "url": url, "attempt": attempt}
        logged = {f"{kind}_id": subject_id, "tenant": tenant, "webhook_id": hook_id, "attempt": attempt,
                  "event_type": event["type"], "host": urlsplit(url).hostname,
                  **({"request_id": request_id} if request_id else {})}

        if await self.store.is_disabled(url):
            return await self._finish(subject_id, record, logged, Outcome.DISABLED,
                                      error="endpoint disabled after 410 Gone")
        secrets = webhooks.secrets_for(tenant_settings, self.settings)
        if not secrets:
            return await self._finish(subject_id, record, logged, Outcome.REFUSED,
                                      error=f"no webhook signing secret configured for tenant {tenant!r}")

        body = self.body(event)
        record["at"] = utc_now()  # when the attempt started
        response = await self.send(url, body, webhooks.signed_headers(secrets, hook_id, int(time.time()), body))
        ATTEMPT_SECONDS.observe(response.duration)
        fields = {"status_code": response.status_code, "duration_ms": round(response.duration * 1000)}
        if response.refused:
            return await self._finish(subject_id, record, logged, Outcome.REFUSED, error=response.error, **fields)
        if response.status_code is not None and 200 <= response.status_code < 300:
            return await self._finish(subject_id, record, logged, Outcome.DELIVERED, **fields)
        if response.status_code == 410:
            await self.store.disable(url, tenant, hook_id)
            return await self._finish(subject_id, record, logged, Outcome.DISABLED,
                                      error="410 Gone: endpoint disabled", **fields)
        error = response.error or f"HTTP {response.status_code}"
        backoff = self.settings.webhook_backoff
        if attempt > len(backoff):
            return await self._finish(subject_id, record, logged, Outcome.FAILED,
                                      error=f"{error}; gave up after {attempt} attempts", **fields)
        delay = backoff[attempt - 1]
        if response.retry_after is not None:
            delay = min(max(delay, response.retry_after), RETRY_AFTER_MAX_SECONDS)
        if time.time() + delay > self._leaves_stream_at(event):
            return await self._finish(subject_id, record, logged, Outcome.FAILED,
                                      error=f"{error}; the next attempt would fall after the event leaves "
                                            f"{names.EVENTS_STREAM} (EVENTS_MAX_AGE)", **fields)
        return await self._finish(subject_id, record, logged, Outcome.RETRYING, error=error,
                                  next_attempt_at=iso_at(time.time() + delay), delay=delay, **fields)

    def _leaves_stream_at(self, event: dict[str, Any]) -> float:
        """When PIXQ_EVENTS drops the event (EVENTS_MAX_AGE after it was written), less a margin:
        a retry scheduled later would silently vanish, so it is recorded as failed instead."""
        try:
            written = epoch_of(event["timestamp"])
        except (KeyError, TypeError, ValueError):
            written = time.time()
        return written + self.settings.events_max_age - STREAM_AGE_MARGIN_SECONDS

    async def _finish(self, subject_id: str, record: dict[str, Any], logged: dict[str, Any], outcome: Outcome,
                      delay: float = 0.0, **fields: Any) -> Settle:
        """Record the attempt, count it, log it (never the secrets); then ack or schedule the next."""
        if fields.get("error"):
            fields["error"] = fields["error"][:ERROR_MAX_CHARS]
        entry = webhooks.delivery_entry(**record, outcome=outcome, **fields)
        try:
            await self.store.append(subject_id, entry)
        except PixqError as exc:
            # The attempt happened but is not counted: at worst one attempt more is made.
            log.warning("webhook_attempt_not_recorded", **logged, error=exc.message)
        DELIVERIES.labels(outcome.value).inc()
        level = log.info if outcome is Outcome.DELIVERED else log.warning
        level("webhook_attempt", **logged, outcome=outcome.value, status_code=fields.get("status_code"),
              duration_ms=fields.get("duration_ms"), error=fields.get("error"),
              next_attempt_at=fields.get("next_attempt_at"))
        return Settle(ack=False, delay=delay) if outcome is Outcome.RETRYING else ACK

    def body(self, event: dict[str, Any]) -> bytes:
        """The event envelope as JSON, with download URLs minted now (they expire)."""
        if event["type"].startswith("job."):
            event = {**event, "data": documents.with_urls(event["data"], self.mint)}
        return json.dumps(event, separators=(",", ":")).encode()

    async def send(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        """POST once: no redirects followed, WEBHOOK_TIMEOUT for the whole attempt, the SSRF
        guard on every address connected to."""
        assert self.session is not None, "run() opens the session"
        started = time.monotonic()
        try:
            outbound.check_host(urlsplit(url).hostname or "", self.settings.outbound_allow_private_networks)
            timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout)
            async with self.session.post(url, data=body, headers=headers, allow_redirects=False,
                                         timeout=timeout) as response:
                return Response(status_code=response.status, retry_after=retry_after_seconds(
                    response.headers.get("Retry-After")), duration=time.monotonic() - started)
        except asyncio.TimeoutError:
            return Response(error=f"timed out after {self.settings.webhook_timeout:g}s",
                            duration=time.monotonic() - started)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            refused = outbound.refusal(exc)
            if refused is not None:
                return Response(error=str(refused), refused=True, duration=time.monotonic() - started)
            if isinstance(exc, (aiohttp.InvalidURL, ValueError)):
                return Response(error=f"invalid URL: {describe(exc)}", refused=True,
                                duration=time.monotonic() - started)
            return Response(error=describe(exc), duration=time.monotonic() - started)
