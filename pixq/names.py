"""Every Redis key and NATS name pixq uses, in one place.

Kept together (as arq does) so that operators, manifests (KEDA triggers, alerts) and
code can never disagree about a stream, consumer or key name.
"""

import hashlib
import re
import uuid

# --- Identifiers ------------------------------------------------------------------


def is_job_id(value: str) -> bool:
    """Job ids are canonical lowercase UUIDs. Anything else (``*``, ``>``, ``.``, spaces) must
    never reach a NATS subject, Redis key or storage key, so callers check this first."""
    if len(value) != 36:
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


JOB_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
"""A canonical lowercase UUID (is_job_id), for pydantic models of messages."""
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""Tenant names appear in storage keys, Redis keys and NATS subjects: no '.', '*', '>', '/', ':'."""
TENANT_RE = re.compile(TENANT_PATTERN)


def _tenant(tenant: str) -> str:
    """Tenant names are validated at start (pixq.tenants); asserting again here keeps a bad
    name from ever forming a key, whatever the caller."""
    if not TENANT_RE.match(tenant):
        raise ValueError(f"invalid tenant name {tenant!r}")
    return tenant


QUARANTINE_ID_RE = re.compile(r"^invalid-[0-9]{1,20}$")
"""DLQ id of a message that was not a job at all (named by its stream sequence)."""


def is_dlq_id(value: str) -> bool:
    return is_job_id(value) or bool(QUARANTINE_ID_RE.match(value))


def quarantine_id(stream_sequence: int) -> str:
    return f"invalid-{int(stream_sequence)}"


def _job(job_id: str) -> str:
    if not is_job_id(job_id):
        raise ValueError(f"invalid job id {job_id!r}")
    return job_id


# --- NATS JetStream -------------------------------------------------------------
JOBS_STREAM = "PIXQ_JOBS"
"""Stream holding one message per accepted job (limits retention, file storage)."""
JOBS_SUBJECT_PREFIX = "pixq.jobs"
JOBS_SUBJECTS = [f"{JOBS_SUBJECT_PREFIX}.>"]
WORKERS_CONSUMER = "pixq-workers"
"""Durable pull consumer of the interactive lane, shared by every worker pod (filter
INTERACTIVE_JOBS_FILTER): the name it had before priorities, so an upgrade keeps its queue."""
BATCH_WORKERS_CONSUMER = "pixq-workers-batch"
"""Durable pull consumer of the batch lane (filter BATCH_JOBS_FILTER). KEDA scales on the sum
of both consumers' lag (docs/deploy.md)."""
BATCH_SUBJECT_TOKEN = "batch"
INTERACTIVE_JOBS_FILTER = f"{JOBS_SUBJECT_PREFIX}.*"
"""``pixq.jobs.<type>``: exactly one token, so it never overlaps the batch lane's subjects (a
work-queue stream refuses two consumers whose filters overlap)."""
BATCH_JOBS_FILTER = f"{JOBS_SUBJECT_PREFIX}.{BATCH_SUBJECT_TOKEN}.>"
"""``pixq.jobs.batch.<type>``."""

DLQ_STREAM = "PIXQ_DLQ"
"""Stream holding dead jobs: original message plus last error and attempts."""
DLQ_SUBJECT_PREFIX = "pixq.dlq"
DLQ_SUBJECTS = [f"{DLQ_SUBJECT_PREFIX}.>"]

ADVISORY_STREAM = "PIXQ_ADVISORIES"
"""Captures MAX_DELIVERIES advisories durably, so none is missed while no worker runs."""
MAX_DELIVERIES_ADVISORY_SUBJECT = (
    f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.{WORKERS_CONSUMER}"
)
MAX_DELIVERIES_ADVISORY_SUBJECTS = [
    MAX_DELIVERIES_ADVISORY_SUBJECT,
    f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.{BATCH_WORKERS_CONSUMER}",
]
"""One advisory subject per lane's consumer: PIXQ_ADVISORIES captures both."""
ADVISORY_CONSUMER = "pixq-dlq-mover"

STATUS_STREAM = "PIXQ_STATUS"
"""Outbox of status updates a worker could not write because Redis was down."""
STATUS_SUBJECT_PREFIX = "pixq.status"
STATUS_SUBJECTS = [f"{STATUS_SUBJECT_PREFIX}.>"]
STATUS_CONSUMER = "pixq-status-writer"


EVENTS_STREAM = "PIXQ_EVENTS"
"""Every applied status change of every job (and batch completions), kept EVENTS_MAX_AGE:
what SSE, long-poll and webhooks read. Limits retention: consumers never remove events."""
EVENTS_SUBJECT_PREFIX = "pixq.events"
EVENTS_SUBJECTS = [f"{EVENTS_SUBJECT_PREFIX}.>"]
WEBHOOKS_CONSUMER = "pixq-webhooks"
"""Durable pull consumer on PIXQ_EVENTS through which workers deliver webhooks."""


INGEST_STREAM = "PIXQ_INGEST"
"""Bucket notifications (S3 event records, as MinIO's JetStream target publishes them) that may
start preset jobs without an API call (worker.ingest). Work-queue retention."""
INGEST_SUBJECT_PREFIX = "pixq.ingest"
INGEST_SUBJECTS = [f"{INGEST_SUBJECT_PREFIX}.>"]
"""MinIO publishes on MINIO_NOTIFY_NATS_SUBJECT, which must fall under this, e.g. pixq.ingest.minio."""
INGEST_CONSUMER = "pixq-ingest"
"""Durable pull consumer on PIXQ_INGEST read by every worker."""


EVENT_KINDS = ("job", "batch")
"""What an event is about: the token after the tenant in its subject, and its type's prefix."""
LEGACY_EVENT_FILTERS = (f"{EVENTS_SUBJECT_PREFIX}.*.job.*", f"{EVENTS_SUBJECT_PREFIX}.*.batch.*")
"""The 5-token subjects events had before their type joined the subject: events stored by a
previous release are still read through these (the webhook consumer keeps them in its filter)."""


def _event_type(event_type: str) -> tuple[str, str]:
    """``job.completed`` -> ``("job", "completed")``; ValueError for anything that is not one
    subject token after a known kind (a subject must never get a wildcard or an extra token)."""
    kind, _, what = event_type.partition(".")
    if kind not in EVENT_KINDS or not re.fullmatch(r"[a-z_]+", what):
        raise ValueError(f"invalid event type {event_type!r}")
    return kind, what


def event_subject(tenant: str, event_type: str, target: str) -> str:
    """``pixq.events.<tenant>.<kind>.<id>.<what>`` for an event of type ``<kind>.<what>``
    (``job.completed``, ``batch.completed``): the type is the last token so that a consumer can
    filter on it (the webhook deliverer reads only the types it delivers), and the id comes
    before it so that one job's events are read alone with job_events_filter."""
    kind, what = _event_type(event_type)
    return f"{EVENTS_SUBJECT_PREFIX}.{_tenant(tenant)}.{kind}.{_job(target)}.{what}"


def job_event_subject(tenant: str, job_id: str, status: str = "queued") -> str:
    """``pixq.events.<tenant>.job.<job_id>.<status>``. The default is a submit's first event,
    the one api.submission withdraws when the job's publish then fails."""
    return event_subject(tenant, f"job.{status}", job_id)


def batch_event_subject(tenant: str, batch_id: str) -> str:
    """``pixq.events.<tenant>.batch.<batch_id>.completed``: a batch's one event."""
    return event_subject(tenant, "batch.completed", batch_id)


def job_events_filter(tenant: str, job_id: str) -> str:
    """Every event of one job (``pixq.events.<tenant>.job.<job_id>.*``): what a job's stream
    replays and where its latest event is looked up. (Events stored before the type joined the
    subject are on ``pixq.events.<tenant>.job.<job_id>`` and not matched: a job stream falls back
    to the job's status, as when its events have expired.)"""
    return f"{EVENTS_SUBJECT_PREFIX}.{_tenant(tenant)}.job.{_job(job_id)}.*"


def event_type_filter(event_type: str) -> str:
    """Every tenant's events of one type: ``job.completed`` -> ``pixq.events.*.job.*.completed``."""
    kind, what = _event_type(event_type)
    return f"{EVENTS_SUBJECT_PREFIX}.*.{kind}.*.{what}"


def parse_event_subject(subject: str) -> tuple[str, str, str] | None:
    """``(tenant, kind, id)`` of an event subject, the current 6-token form or the 5-token one
    of events stored by a previous release; None for anything else."""
    parts = subject.split(".")
    if len(parts) not in (5, 6) or ".".join(parts[:2]) != EVENTS_SUBJECT_PREFIX or parts[3] not in EVENT_KINDS:
        return None
    return parts[2], parts[3], parts[4]


def tenant_events_filter(tenant: str | None) -> str:
    """Subject filter for every event of one tenant, or of all tenants (None, admins)."""
    return f"{EVENTS_SUBJECT_PREFIX}.{_tenant(tenant)}.>" if tenant else f"{EVENTS_SUBJECT_PREFIX}.>"


def status_subject(job_id: str) -> str:
    return f"{STATUS_SUBJECT_PREFIX}.{_job(job_id)}"


def job_subject(job_type: str, priority: str = "interactive") -> str:
    """Subject a job of this type and priority is published on: ``pixq.jobs.<type>`` for the
    interactive lane (the subjects of before priorities), ``pixq.jobs.batch.<type>`` for batch."""
    if priority == BATCH_SUBJECT_TOKEN:
        return f"{JOBS_SUBJECT_PREFIX}.{BATCH_SUBJECT_TOKEN}.{job_type}"
    return f"{JOBS_SUBJECT_PREFIX}.{job_type}"


def dlq_subject(job_id: str) -> str:
    """Subject of one dead job: one subject per job lets us fetch and purge it by id."""
    if not is_dlq_id(job_id):
        raise ValueError(f"invalid DLQ id {job_id!r}")
    return f"{DLQ_SUBJECT_PREFIX}.{job_id}"


# --- Redis ----------------------------------------------------------------------
KEY_PREFIX = "pixq"

RATE_LIMIT_KEY_PREFIX = f"{KEY_PREFIX}:ratelimit"
"""Prefix of the request-rate counters the ``limits`` library keeps (api.ratelimit); it adds
``:{LIMITER/<kind>/<tenant or client IP>/<amount>/<multiples>/<granularity>}``, two keys per
sliding window, each expiring after two windows."""


JOB_KEY_PREFIX = f"{KEY_PREFIX}:job:"
"""The status store's quota script (pixq.status) reads other jobs' hashes under this prefix."""


def job_key(job_id: str) -> str:
    """Hash holding a job's visible status."""
    return f"{JOB_KEY_PREFIX}{job_id}"


def idempotency_key(tenant: str, client_key: str) -> str:
    """String mapping a tenant's Idempotency-Key to the job it created: scoped per tenant, so
    two teams choosing the same key never share a job. The client's key is hashed, so any
    bytes it holds stay out of the key space."""
    digest = hashlib.sha256(client_key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{KEY_PREFIX}:idem:{_tenant(tenant)}:{digest}"


PENDING_INPUTS_KEY = f"{KEY_PREFIX}:pending-inputs"
"""Sorted set of uploaded inputs whose submit has not finished (member: the storage key, score:
when it was stored): what a killed API leaves behind is found here and swept (pixq.pending_inputs)."""
UNPUBLISHED_KEY = f"{KEY_PREFIX}:unpublished"
"""Sorted set of jobs recorded by the API whose message no worker has begun yet (member: job
id, score: ms when recorded), each with its message in ``unpublished_message_key``: a job whose
API died before publishing it is found here and published (pixq.intake.requeue_unpublished)."""


def unpublished_message_key(job_id: str) -> str:
    """String holding the JSON message of a job in UNPUBLISHED_KEY."""
    return f"{UNPUBLISHED_KEY}:{job_id}"


IDEMPOTENCY_KEY_PATTERN = f"{KEY_PREFIX}:idem:*"
"""SCAN pattern matching every idempotency key (operations and tests)."""


def tenant_jobs_key(tenant: str) -> str:
    """Sorted set of a tenant's job ids scored by creation time (ms): its history, newest first."""
    return f"{KEY_PREFIX}:history:{_tenant(tenant)}"


ALL_JOBS_KEY = f"{KEY_PREFIX}:history"
"""Sorted set of every tenant's job ids by creation time: the admin's history."""

IN_FLIGHT_KEY_PREFIX = f"{KEY_PREFIX}:inflight:"
"""The status store's Lua script (pixq.status) forms in_flight_key from a job's stored tenant."""


def in_flight_key(tenant: str) -> str:
    """Sorted set of a tenant's jobs in flight (queued, processing, retrying), scored by their
    last status write (ms): what MAX_JOBS_IN_FLIGHT counts (pixq.quotas)."""
    return f"{IN_FLIGHT_KEY_PREFIX}{_tenant(tenant)}"


def megapixels_key(tenant: str, month: str) -> str:
    """Float (INCRBYFLOAT) of a tenant's input megapixels completed in ``month`` (``YYYY-MM``,
    UTC): what ``megapixels_per_month`` is checked against (pixq.quotas)."""
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}", month):
        raise ValueError(f"invalid month {month!r}")
    return f"{KEY_PREFIX}:megapixels:{_tenant(tenant)}:{month}"


def batch_key(batch_id: str) -> str:
    """Hash describing a batch: tenant, created_at, item count, callback, completion flag."""
    return f"{KEY_PREFIX}:batch:{_job(batch_id)}"


def batch_pending_key(batch_id: str) -> str:
    """Set of a batch's job ids not yet terminal; the batch completes when it empties."""
    return f"{KEY_PREFIX}:batch:{_job(batch_id)}:pending"


def batch_jobs_key(batch_id: str) -> str:
    """List of a batch's accepted job ids, in submission order."""
    return f"{KEY_PREFIX}:batch:{_job(batch_id)}:jobs"


def deliveries_key(job_id: str) -> str:
    """List of a job's (or batch's) webhook delivery attempts, oldest first (JSON each)."""
    return f"{KEY_PREFIX}:deliveries:{_job(job_id)}"


def disabled_webhook_key(url: str) -> str:
    """Set when an endpoint answered 410 Gone: no more deliveries go to it."""
    return f"{KEY_PREFIX}:webhook-disabled:{hashlib.sha256(url.encode()).hexdigest()}"


def ingest_claim_key(bucket: str, key: str, etag: str) -> str:
    """String claimed (SET NX) by the first worker handling a bucket event for this object
    version; holds the deterministic job id, then ``<job_id>:published``. Hashed, since object
    keys hold any bytes."""
    digest = hashlib.sha256(f"{bucket}\n{key}\n{etag}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"{KEY_PREFIX}:ingest:{digest}"


_FINGERPRINT_RE = re.compile(r"^[0-9a-f]{64}$")


def reuse_key(tenant: str, fingerprint: str) -> str:
    """String holding ``{"job_id", "result"}`` of the tenant's latest completed job whose input
    and spec have this fingerprint (worker.reuse, a BLAKE3 hex digest, 64 characters); expires with job
    statuses. Scoped per tenant, so no tenant is ever served another's outputs."""
    if not _FINGERPRINT_RE.match(fingerprint):
        raise ValueError(f"invalid fingerprint {fingerprint[:80]!r}")
    return f"{KEY_PREFIX}:reuse:{_tenant(tenant)}:{fingerprint}"


REUSE_KEY_PATTERN = f"{KEY_PREFIX}:reuse:*"
"""SCAN pattern matching every reuse record (to drop them all after a libvips rebuild)."""


# --- Object storage ---------------------------------------------------------------


def input_object_key(tenant: str, job_id: str) -> str:
    """Where an uploaded input is stored: under its tenant (pixq.tenants.Tenant.own_prefixes)."""
    return f"inputs/{_tenant(tenant)}/{_job(job_id)}"


UPLOADS_PREFIX = "uploads/"
"""Direct uploads (docs/inputs.md): ``uploads/<tenant>/<upload_id>``, written by the client
through a presigned POST (S3) or the API's signed ``/uploads/{token}`` (local storage), and
deleted unclaimed by the bucket lifecycle rule (deploy/s3) or the local sweep."""


def upload_object_key(tenant: str, upload_id: str) -> str:
    """Where a direct upload lands: the upload id is a UUID (is_job_id), checked here too."""
    return f"{UPLOADS_PREFIX}{_tenant(tenant)}/{_job(upload_id)}"


def claimed_upload_key(tenant: str, upload_id: str) -> str:
    """The frozen copy a direct upload becomes at its first claim, which every job naming the
    upload reads: under ``inputs/`` (kept like any input), so no upload expiry can reach it."""
    return f"inputs/{_tenant(tenant)}/upload-{_job(upload_id)}"


def output_object_key(tenant: str, job_id: str, variant: str, extension: str) -> str:
    """Where one output of a job is stored; deterministic, so a retry overwrites it."""
    return f"outputs/{_tenant(tenant)}/{_job(job_id)}/{variant}.{extension}"


IMG_PREFIX = "img/"
"""/img's result cache (pixq.imgcache): ``img/<tenant>/<source digest>/<cache key>``."""


def img_source_prefix(tenant: str, source_digest: str) -> str:
    """Every cached result derived from one source, so one purge removes them all."""
    if not re.fullmatch(r"[0-9a-f]{32,64}", source_digest):
        raise ValueError("invalid source digest")
    return f"{IMG_PREFIX}{_tenant(tenant)}/{source_digest}/"


def img_epoch_key(tenant: str, source_digest: str) -> str:
    """String counting a source's purges: part of its /img jobs' ids, so a miss after a purge
    is a new job (not a Nats-Msg-Id duplicate of the purged one)."""
    return f"{KEY_PREFIX}:img:epoch:{_tenant(tenant)}:{source_digest}"
