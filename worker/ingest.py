"""Bucket events: objects written under a configured prefix start a preset job, with no API call.

MinIO's JetStream notification target publishes one S3 event document per object change on
MINIO_NOTIFY_NATS_SUBJECT (under ``pixq.ingest.>``, so PIXQ_INGEST stores it). Each worker reads
the stream through the durable consumer ``pixq-ingest``; for each ``s3:ObjectCreated:*`` record
whose object lies under an ingest rule's prefix (PRESETS_FILE ``ingest``), it queues one job of
the rule's preset for the rule's tenant.

Exactly one job per object version (key + ETag), however often the notification comes:

1. the job id is derived from bucket, key and ETag (uuid5), so every attempt names the same job;
2. ``SET NX`` claims the version in Redis (``pixq:ingest:<digest>`` = job id, INGEST_DEDUPE_TTL);
3. the job is created and published (pixq.intake: idempotent for one job id);
4. the claim becomes ``<job_id>:published``; then the notification is acked.

A crash anywhere before 4 leaves the notification unacked: it is redelivered, finds the claim
still unpublished, and runs 3 again, which finds the status already there and publishes with
the same Nats-Msg-Id (stored once). A claim already ``published`` means a duplicate: acked.

Everything else is acked and logged, never retried: other buckets, keys under no prefix (and
always anything under ``outputs/``, pixq's own writes), non-create events, malformed
documents. Only an outage (Redis, NATS) naks the notification, with a delay, to be retried.
"""

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass
from urllib.parse import unquote_plus

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from redis.exceptions import RedisError

from pixq import intake, names, queue
from pixq.errors import PixqError, describe, status_unavailable
from pixq.jobs import JobInput, JobType
from pixq.presets import PIXQ_WRITTEN_PREFIXES, Catalogue
from pixq.settings import Settings
from pixq.status import StatusStore

log = structlog.get_logger("pixq.ingest")

FETCH_BATCH = 16
FETCH_WAIT_SECONDS = 1.0
RETRY_DELAY_SECONDS = 2.0
UNEXPECTED_ERROR_DELIVERIES = 5
"""A notification failing with an unexpected error (a bug, not an outage) is retried this many
times, then terminated and logged, so one bad document never blocks the loop forever."""
JOB_ID_NAMESPACE = uuid.UUID("6b1f3c52-8a4e-4d0c-9f57-2f3f7c1de0a1")
"""uuid5 namespace of ingest job ids (fixed forever: changing it would re-run every object)."""
CREATE_EVENT_PREFIX = "s3:ObjectCreated:"


class Malformed(ValueError):
    """Not an S3 event document pixq can read: acked and logged, never retried."""


@dataclass(frozen=True)
class ObjectCreated:
    """One record of an event document: which object version appeared."""

    event_name: str
    bucket: str
    key: str
    etag: str
    size: int | None


def parse_event(data: bytes) -> list[ObjectCreated]:
    """The records of a MinIO (S3) event document, with their keys URL-decoded.

    MinIO publishes ``{"EventName", "Key": "<bucket>/<key>", "Records": [{"eventName", "s3":
    {"bucket": {"name"}, "object": {"key", "size", "eTag", ...}}}]}``; the record's object key
    is form-encoded (``+`` for a space, ``%2B`` for a plus), as in AWS's S3 events."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Malformed(f"not JSON: {exc}") from None
    records = document.get("Records") if isinstance(document, dict) else None
    if not isinstance(records, list) or not records:
        raise Malformed("no Records list")
    parsed = []
    for index, record in enumerate(records):
        try:
            s3 = record["s3"]
            event_name = record.get("eventName") or document.get("EventName") or ""
            bucket = s3["bucket"]["name"]
            obj = s3["object"]
            key = unquote_plus(obj["key"], errors="strict")
            etag = str(obj.get("eTag") or obj.get("etag") or "").strip('"')
            size = obj.get("size")
        except (KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise Malformed(f"Records.{index}: missing or invalid {exc}") from None
        if not isinstance(event_name, str) or not isinstance(bucket, str) or not key:
            raise Malformed(f"Records.{index}: eventName, bucket name and object key must be strings")
        parsed.append(ObjectCreated(event_name, bucket, key, etag, size if isinstance(size, int) else None))
    return parsed


def ingest_job_id(bucket: str, key: str, etag: str) -> str:
    """The one job id of an object version: every notification of it names the same job."""
    return str(uuid.uuid5(JOB_ID_NAMESPACE, f"{bucket}\n{key}\n{etag}"))


def _plain_key(key: str) -> bool:
    """A relative key without empty, '.' or '..' parts or control characters (as a storage_key
    submit must be): such a key could never be read safely from local storage."""
    parts = key.split("/")
    return not (key.startswith("/") or "\\" in key or any(part in ("", ".", "..") for part in parts)
                or any(ord(char) < 0x20 or ord(char) == 0x7F for char in key) or len(key) > 1024)


class Ingestor:
    """The ``pixq-ingest`` pull loop of one worker."""

    def __init__(self, settings: Settings, catalogue: Catalogue, nc: NATS, js: JetStreamContext,
                 status: StatusStore) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.nc = nc
        self.js = js
        self.status = status

    async def run(self, stop: asyncio.Event) -> None:
        puller = await queue.Puller(self.js, names.INGEST_STREAM, names.INGEST_CONSUMER).start()
        while not stop.is_set():
            for msg in await puller.fetch(FETCH_BATCH, FETCH_WAIT_SECONDS):
                await self.handle(msg)

    async def handle(self, msg: Msg) -> None:
        """Ack a handled or unusable notification; nak (with a delay) one that hit an outage."""
        try:
            records = parse_event(msg.data)
        except Malformed as exc:
            log.warning("ingest_event_malformed", subject=msg.subject, error=str(exc))
            await queue.settle(msg.ack())
            return
        try:
            for record in records:
                await self.ingest(record)
        except PixqError as exc:
            log.warning("ingest_retry", error_code=exc.code.value, error=exc.message)
            await queue.settle(msg.nak(delay=RETRY_DELAY_SECONDS))
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the loop (nor retry forever)
            delivered = msg.metadata.num_delivered if msg.metadata else 1
            log.error("ingest_failed", error=describe(exc), error_type=type(exc).__name__, deliveries=delivered)
            if delivered >= UNEXPECTED_ERROR_DELIVERIES:
                await queue.settle(msg.term())
            else:
                await queue.settle(msg.nak(delay=RETRY_DELAY_SECONDS))
            return
        await queue.settle(msg.ack())

    def _skip(self, record: ObjectCreated, reason: str) -> None:
        log.info("ingest_event_skipped", reason=reason, event_name=record.event_name, bucket=record.bucket,
                 key=record.key[:300])

    async def ingest(self, record: ObjectCreated) -> str | None:
        """Queue the job of one created object (its id), or None when the record starts nothing."""
        if not record.event_name.startswith(CREATE_EVENT_PREFIX):
            return self._skip(record, "not_a_create_event")
        if record.bucket != self.settings.bucket_name:
            return self._skip(record, "other_bucket")
        if record.key.startswith(PIXQ_WRITTEN_PREFIXES):
            return self._skip(record, "written_by_pixq")  # never re-ingest pixq's own outputs
        rule = self.catalogue.rule_for(record.key)
        if rule is None:
            return self._skip(record, "no_ingest_prefix")
        if not _plain_key(record.key):
            return self._skip(record, "unsafe_key")
        if not record.etag:
            return self._skip(record, "no_etag")
        job_id = ingest_job_id(record.bucket, record.key, record.etag)
        job_log = log.bind(job_id=job_id, tenant=rule.tenant)
        claim_key = names.ingest_claim_key(record.bucket, record.key, record.etag)
        claim = await self._claim(claim_key, job_id)
        if claim == f"{job_id}:published":
            job_log.info("ingest_duplicate", key=record.key[:300], etag=record.etag)
            return job_id
        preset = self.catalogue.resolve(rule.preset, rule.tenant)
        digest = hashlib.sha256(claim_key.encode()).hexdigest()[:16]
        stored = await intake.enqueue(self.nc, self.js, self.status, job_id=job_id, job_type=JobType.PIPELINE,
                                      tenant=rule.tenant, spec=preset.spec,
                                      job_input=JobInput(storage_key=record.key),
                                      request_id=f"ingest-{digest}", preset=preset.ref)
        await self._mark_published(claim_key, job_id)
        job_log.info("ingest_job_queued", key=record.key[:300], etag=record.etag, prefix=rule.prefix,
                     preset=preset.ref, status=stored.get("status"), resumed=claim is not None)
        return job_id

    async def _claim(self, claim_key: str, job_id: str) -> str | None:
        """None when this call claimed the object version; else the claim's current value."""
        client = self.status.client
        try:
            if await client.set(claim_key, job_id, nx=True, ex=max(1, int(self.settings.ingest_dedupe_ttl))):
                return None
            value = await client.get(claim_key)
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None
        return value.decode() if isinstance(value, bytes) else value

    async def _mark_published(self, claim_key: str, job_id: str) -> None:
        try:
            await self.status.client.set(claim_key, f"{job_id}:published",
                                         ex=max(1, int(self.settings.ingest_dedupe_ttl)))
        except (RedisError, OSError) as exc:
            raise status_unavailable(exc) from None
