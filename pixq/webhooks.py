"""Webhooks: which events go where, Standard Webhooks signing, endpoint checks, the delivery record.

**What is delivered.** Only outcomes a client waits for: terminal job events
(``job.completed``, ``job.failed``) and ``batch.completed``. Intermediate statuses stay on
SSE and long-poll, so a receiver is not called five times per job.

**Who receives it.** The job's own ``callback_url`` (the batch's, for ``batch.completed``),
else the tenant's default ``settings.webhook_url`` in TENANTS_FILE, else nobody. A job
submitted in a batch keeps its own ``callback_url`` if it has one; the batch's callback
receives only ``batch.completed``. The tenant default is looked up when the event is sent,
so changing it in TENANTS_FILE affects events not yet delivered.

**Signing** (https://www.standardwebhooks.com): every request carries ``webhook-id`` (stable
per event, so unchanged across retries: ``evt_<job_id>_<generation>_<attempt>_<phase>`` or
``evt_batch_<batch_id>``), ``webhook-timestamp`` (Unix seconds of this attempt) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`` once per
active secret, space-separated, so a receiver that knows any one of them verifies it
(rotation: add the new secret, let receivers switch, then remove the old one). A secret is
``whsec_<base64 key>``. A tenant's ``settings.webhook_secrets`` (TENANTS_FILE) are used
when set, else WEBHOOK_SECRETS. pixq never sends an unsigned webhook: a callback is refused
at submit when no secret is configured for the tenant.

**The delivery record.** Each attempt is appended (JSON) to a Redis list per job or batch
(``names.deliveries_key``), kept as long as the job's status; GET .../deliveries shows it
and the worker counts attempts from it (worker.webhooks). An endpoint that answered
``410 Gone`` is marked disabled (``names.disabled_webhook_key(url)``, no expiry): later events
to it are recorded as ``disabled`` and not sent. An operator re-enables it by deleting
that key: ``redis-cli DEL pixq:webhook-disabled:<sha256 hex of the exact URL>``.
"""

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis.asyncio as redis
from redis.exceptions import RedisError

from pixq import __version__, names, outbound
from pixq.errors import ErrorCode, PixqError, status_unavailable
from pixq.jobs import utc_now
from pixq.settings import Settings

if TYPE_CHECKING:
    from pixq.tenants import Tenant, TenantSettings

CALLBACK_URL_MAX = 2048
SECRET_PREFIX = "whsec_"
USER_AGENT = f"pixq-webhooks/{__version__} (+https://www.standardwebhooks.com)"
DELIVERED_TYPES = frozenset({"job.completed", "job.failed", "batch.completed"})


def consumer_filter_subjects() -> list[str]:
    """What the webhook consumer (pixq-webhooks) reads: each delivered type's subjects, so the
    server skips every other event (about two in three: queued, processing, retrying) instead
    of a worker fetching and acking them unread; plus the 5-token subjects of events stored by a
    previous release, which carry no type (the deliverer acks those it does not deliver). The
    two forms never match the same subject, as JetStream requires of a consumer's filters."""
    return [names.event_type_filter(event_type) for event_type in sorted(DELIVERED_TYPES)] + \
        list(names.LEGACY_EVENT_FILTERS)


class Outcome(StrEnum):
    """How one delivery attempt ended (the ``outcome`` of a delivery record and metric label)."""

    DELIVERED = "delivered"
    """The receiver answered 2xx."""
    RETRYING = "retrying"
    """Not delivered (non-2xx, 3xx, timeout, connection error); another attempt is scheduled."""
    FAILED = "failed"
    """Not delivered, and WEBHOOK_BACKOFF is exhausted: no more attempts."""
    DISABLED = "disabled"
    """The receiver answered 410 Gone (now), or had before: not sent, never retried."""
    REFUSED = "refused"
    """Not sent: the address is blocked by the SSRF guard, or no signing secret is configured."""


FINAL_OUTCOMES = frozenset({Outcome.DELIVERED, Outcome.FAILED, Outcome.DISABLED, Outcome.REFUSED})


# --- Secrets and signatures -----------------------------------------------------------


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError when it is not one."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError("webhook secrets must be whsec_<base64> (Standard Webhooks)")
    try:
        encoded = secret[len(SECRET_PREFIX):]
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)  # padding optional
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not whsec_ followed by valid base64") from None
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def sign(secrets: Iterable[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature``: one ``v1,<base64>`` per secret, space-separated (rotation)."""
    message = f"{webhook_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(secret_key(secret), message, hashlib.sha256).digest()).decode()
                    for secret in secrets)


def signed_headers(secrets: list[str], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of a webhook request (the secrets appear in none of them)."""
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secrets, webhook_id, timestamp, body),
            "Content-Type": "application/json", "User-Agent": USER_AGENT}


def secrets_for(tenant_settings: "TenantSettings | None", settings: Settings) -> list[str]:
    """The tenant's own secrets when it has any, else WEBHOOK_SECRETS."""
    own = list(getattr(tenant_settings, "webhook_secrets", None) or [])
    return own or settings.webhook_secret_list()


# --- URLs -----------------------------------------------------------------------------


def check_url_form(url: Any) -> str:
    """The form of a receiver URL (no network, no policy): ValueError saying what is wrong."""
    if not isinstance(url, str) or not url:
        raise ValueError("must be a non-empty string")
    if len(url) > CALLBACK_URL_MAX:
        raise ValueError(f"must be at most {CALLBACK_URL_MAX} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ValueError("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError("must not contain credentials (user:password@)")
    if not parts.hostname:
        raise ValueError("must name a host")
    return url


def check_callback_url(url: str, settings: Settings, tenant: "Tenant") -> str:
    """A submit's ``callback_url``, checked before the job is accepted; INVALID_PARAMETERS otherwise.

    Checked here: the URL's form, an IP-literal host in a blocked range and ``localhost``
    (unless OUTBOUND_ALLOW_PRIVATE_NETWORKS), and that the tenant has a signing secret.
    Host names are not resolved at submit: what a name resolves to may change, so the SSRF
    guard acts on the address each attempt connects to (pixq.outbound)."""
    try:
        check_url_form(url)
    except ValueError as exc:
        raise PixqError(ErrorCode.INVALID_PARAMETERS, f"callback_url {exc}") from None
    host = (urlsplit(url).hostname or "").rstrip(".")
    if not settings.outbound_allow_private_networks:
        if host == "localhost" or host.endswith(".localhost"):
            raise PixqError(ErrorCode.INVALID_PARAMETERS,
                            "callback_url must not point at localhost (loopback addresses are refused)")
        try:
            outbound.check_host(host, allow_private=False)
        except outbound.OutboundRefused as exc:
            raise PixqError(ErrorCode.INVALID_PARAMETERS,
                            f"callback_url must be a public address: {exc.reason}") from None
    if not secrets_for(tenant.settings, settings):
        raise PixqError(ErrorCode.INVALID_PARAMETERS,
                        f"callback_url needs a webhook signing secret, and none is configured for tenant "
                        f"{tenant.name!r} (an operator sets settings.webhook_secrets in TENANTS_FILE or "
                        "WEBHOOK_SECRETS); pixq sends no unsigned webhooks")
    return url


# --- Events ---------------------------------------------------------------------------


def is_delivered(event: dict[str, Any]) -> bool:
    """Does this event go to a webhook receiver at all (terminal job events, batch.completed)?"""
    return event.get("type") in DELIVERED_TYPES


def subject_of(event: dict[str, Any]) -> tuple[str, str]:
    """``("job", job_id)`` or ``("batch", batch_id)``: whose delivery record an event adds to."""
    if event["type"].startswith("batch."):
        return "batch", event["data"]["batch_id"]
    return "job", event["data"]["job_id"]


def webhook_id(event: dict[str, Any]) -> str:
    """Stable per event (a retry, a redelivery, a re-publish all give the same id), so a
    receiver can drop duplicates by it, as Standard Webhooks asks."""
    kind, subject_id = subject_of(event)
    if kind == "batch":
        return f"evt_batch_{subject_id}"
    generation, attempt, phase = event["position"]
    return f"evt_{subject_id}_{int(generation)}_{int(attempt)}_{int(phase)}"


def receiver(own_callback: str | None, tenant_settings: "TenantSettings | None") -> str | None:
    """The job's (batch's) own callback_url, else the tenant's default webhook_url, else None."""
    return own_callback or getattr(tenant_settings, "webhook_url", None) or None


# --- The delivery record --------------------------------------------------------------


def delivery_entry(*, webhook_id: str, event_type: str, url: str, attempt: int, outcome: Outcome,
                   status_code: int | None = None, error: str | None = None, duration_ms: int | None = None,
                   next_attempt_at: str | None = None, at: str | None = None) -> dict[str, Any]:
    """One attempt as GET .../deliveries shows it."""
    return {"webhook_id": webhook_id, "event_type": event_type, "url": url, "attempt": attempt,
            "at": at or utc_now(), "status_code": status_code, "outcome": outcome.value, "error": error,
            "duration_ms": duration_ms, "next_attempt_at": next_attempt_at}


class WebhookStore:
    """Delivery records and disabled endpoints in Redis (STATUS_UNAVAILABLE when it is down)."""

    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self.client = client
        self.ttl = int(ttl_seconds)

    async def deliveries(self, subject_id: str) -> list[dict[str, Any]]:
        """Every attempt for a job or batch, oldest first."""
        try:
            raw = await self.client.lrange(names.deliveries_key(subject_id), 0, -1)
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None
        entries = []
        for item in raw:
            try:
                entries.append(json.loads(item))
            except ValueError:
                continue
        return entries

    async def append(self, subject_id: str, entry: dict[str, Any]) -> None:
        """Add an attempt; the list lives as long as a job status (the TTL is renewed)."""
        key = names.deliveries_key(subject_id)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, json.dumps(entry, separators=(",", ":")))
                pipe.expire(key, self.ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None

    async def batch_callback(self, batch_id: str) -> str | None:
        """The callback_url a batch was submitted with (pixq.batches stores it in the batch hash)."""
        try:
            return await self.client.hget(names.batch_key(batch_id), "callback_url") or None
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None

    async def is_disabled(self, url: str) -> bool:
        try:
            return bool(await self.client.exists(names.disabled_webhook_key(url)))
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None

    async def disable(self, url: str, tenant: str, webhook_id: str) -> None:
        """Mark an endpoint gone (410). No expiry: an operator deletes the key to re-enable it."""
        value = json.dumps({"url": url, "tenant": tenant, "webhook_id": webhook_id, "disabled_at": utc_now()})
        try:
            await self.client.set(names.disabled_webhook_key(url), value)
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None
