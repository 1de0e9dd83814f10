"""Every Redis key and NATS name pixq uses, in one place.

Kept together (as arq does) so that operators, manifests (KEDA triggers, alerts) and
code can never disagree about a stream, consumer or key name.
"""

# --- NATS JetStream -------------------------------------------------------------
JOBS_STREAM = "PIXQ_JOBS"
"""Stream holding one message per accepted job (limits retention, file storage)."""
JOBS_SUBJECT_PREFIX = "pixq.jobs"
JOBS_SUBJECTS = [f"{JOBS_SUBJECT_PREFIX}.>"]
WORKERS_CONSUMER = "pixq-workers"
"""Durable pull consumer shared by every worker pod; KEDA scales on its lag."""

DLQ_STREAM = "PIXQ_DLQ"
"""Stream holding dead jobs: original message plus last error and attempts."""
DLQ_SUBJECT_PREFIX = "pixq.dlq"
DLQ_SUBJECTS = [f"{DLQ_SUBJECT_PREFIX}.>"]

ADVISORY_STREAM = "PIXQ_ADVISORIES"
"""Captures MAX_DELIVERIES advisories durably, so none is missed while no worker runs."""
MAX_DELIVERIES_ADVISORY_SUBJECT = (
    f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.{WORKERS_CONSUMER}"
)
ADVISORY_CONSUMER = "pixq-dlq-mover"

STATUS_STREAM = "PIXQ_STATUS"
"""Outbox of status updates a worker could not write because Redis was down."""
STATUS_SUBJECT_PREFIX = "pixq.status"
STATUS_SUBJECTS = [f"{STATUS_SUBJECT_PREFIX}.>"]
STATUS_CONSUMER = "pixq-status-writer"


def status_subject(job_id: str) -> str:
    return f"{STATUS_SUBJECT_PREFIX}.{job_id}"


def job_subject(job_type: str) -> str:
    """Subject a job of this type is published on."""
    return f"{JOBS_SUBJECT_PREFIX}.{job_type}"


def dlq_subject(job_id: str) -> str:
    """Subject of one dead job: one subject per job lets us fetch and purge it by id."""
    return f"{DLQ_SUBJECT_PREFIX}.{job_id}"


# --- Redis ----------------------------------------------------------------------
KEY_PREFIX = "pixq"


def job_key(job_id: str) -> str:
    """Hash holding a job's visible status."""
    return f"{KEY_PREFIX}:job:{job_id}"


def idempotency_key(client_key: str) -> str:
    """String mapping a client's Idempotency-Key to the job it created."""
    return f"{KEY_PREFIX}:idem:{client_key}"


# --- Object storage ---------------------------------------------------------------


def input_object_key(job_id: str) -> str:
    """Where an uploaded input is stored."""
    return f"inputs/{job_id}"


def output_object_key(job_id: str, variant: str, extension: str) -> str:
    """Where one output of a job is stored; deterministic, so a retry overwrites it."""
    return f"outputs/{job_id}/{variant}.{extension}"
