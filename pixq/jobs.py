"""The job contract: what the API publishes, what a worker consumes, what a status shows.

One JetStream message = one job::

    {"job_id", "type", "tenant", "spec": {"steps": [...], "variants": [...]},
     "input": {"storage_key"}, "metadata": {"created_at", "request_id", "generation"}}

``spec`` is the normalised, typed PipelineSpec the API compiled from the request
(pixq.spec.to_pipeline: resize and crop become one-variant pipelines, aliases and defaults
resolved). The worker validates that typed spec and runs it; it never parses request
parameters. A message published before this contract (raw ``parameters``, still in
PIXQ_JOBS or replayed from the DLQ) is compiled once on reading, the same way.

``callback_url`` and ``batch_id`` are optional; both are copied into the status record, so a
status rebuilt from the message (after Redis lost it) keeps them.

``tenant`` names the tenant that submitted the job (pixq.tenants); the worker writes its
outputs under that tenant's prefix and names it on every log line.

``priority`` (``interactive``, the default, or ``batch``) picks the job's lane: the subject it
is published on (pixq.names.job_subject) and so the durable consumer that delivers it
(docs/queue.md, "Priorities"). A message without it (published before priorities) is
interactive; a worker from before priorities ignores the field (extra="ignore").

``generation`` counts DLQ replays: a replay keeps the job_id and gives a fresh retry
budget, and the status store orders updates by (generation, attempt, phase). Attempts are
JetStream's delivery count, not a message field: a retried job is redelivered unchanged.
"""

from datetime import datetime, timezone
from enum import IntEnum, StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pixq.errors import ErrorCode, PixqError
from pixq.names import JOB_ID_PATTERN, TENANT_PATTERN
from pixq.spec import PipelineSpec, to_pipeline


class JobType(StrEnum):
    RESIZE = "resize"
    CROP = "crop"
    PIPELINE = "pipeline"
    ANALYZE = "analyze"


class Priority(StrEnum):
    """A job's lane. Workers serve both with weighted pulls (PRIORITY_WEIGHTS), so interactive
    work goes first without batch work ever starving (worker.consumer)."""

    INTERACTIVE = "interactive"
    BATCH = "batch"


def parse_priority(value: Any, default: Priority) -> Priority:
    """A submit's ``priority`` field (absent: ``default``); anything else is the client's
    mistake, INVALID_PARAMETERS (422)."""
    if value is None:
        return default
    if isinstance(value, str):
        try:
            return Priority(value.strip().lower())
        except ValueError:
            pass
    raise PixqError(ErrorCode.INVALID_PARAMETERS,
                    f"priority must be one of {', '.join(p.value for p in Priority)}, not {str(value)[:40]!r}")


def parse_priority_weights(value: str) -> dict[Priority, int]:
    """PRIORITY_WEIGHTS, ``interactive=4,batch=1``: of every 4 + 1 free worker slots, 4 go to
    interactive jobs and 1 to batch jobs while both lanes hold work. Both lanes must be named
    with a whole weight of 1 to 1000: a weight of 0 would starve that lane, which is what the
    weights exist to prevent. ValueError says what is wrong."""
    weights: dict[Priority, int] = {}
    for item in value.split(","):
        name, sep, number = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in {p.value for p in Priority}:
            raise ValueError(f"expected interactive=<n>,batch=<n>, got {item.strip()[:40]!r}")
        if Priority(name) in weights:
            raise ValueError(f"{name} is given twice")
        try:
            weight = int(number.strip())
        except ValueError:
            raise ValueError(f"{name}: expected a whole number, got {number.strip()[:20]!r}") from None
        if not 1 <= weight <= 1000:
            raise ValueError(f"{name}: a weight is 1 to 1000 (0 would starve the lane), got {weight}")
        weights[Priority(name)] = weight
    missing = [p.value for p in Priority if p not in weights]
    if missing:
        raise ValueError(f"expected interactive=<n>,batch=<n>: {', '.join(missing)} missing")
    return {lane: weights[lane] for lane in Priority}


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"


class Phase(IntEnum):
    """Order of statuses within one attempt; the status store never moves backwards."""

    QUEUED = 0
    PROCESSING = 1
    RETRYING = 2
    TERMINAL = 3


PHASE_OF: dict[JobStatus, Phase] = {
    JobStatus.QUEUED: Phase.QUEUED,
    JobStatus.PROCESSING: Phase.PROCESSING,
    JobStatus.RETRYING: Phase.RETRYING,
    JobStatus.COMPLETED: Phase.TERMINAL,
    JobStatus.FAILED: Phase.TERMINAL,
}

TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})


def utc_now() -> str:
    """Timestamps are ISO 8601 in UTC with milliseconds, e.g. 2026-11-23T13:39:05.123Z."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JobInput(BaseModel):
    """Where the job's image comes from: exactly one of an object in pixq's storage
    (``storage_key``: an upload, a direct upload claimed at submit, or a key the tenant may
    read) or a source URL the worker fetches (``url``, pixq.sources)."""

    storage_key: str | None = Field(None, min_length=1, max_length=1024)
    url: str | None = Field(None, min_length=1, max_length=2048)

    @model_validator(mode="after")
    def _exactly_one(self) -> "JobInput":
        if (self.storage_key is None) == (self.url is None):
            raise ValueError("input needs exactly one of storage_key and url")
        return self


class JobMetadata(BaseModel):
    """Older messages also carry ``retry_count`` (always 0: retries never rewrite a message);
    it is ignored on reading and no longer written."""

    created_at: str
    request_id: str = ""
    generation: int = 0


class JobMessage(BaseModel):
    """One JetStream message = one job."""

    model_config = ConfigDict(extra="ignore")

    job_id: str = Field(pattern=JOB_ID_PATTERN)
    type: JobType
    tenant: str = Field("default", pattern=TENANT_PATTERN)
    spec: PipelineSpec
    input: JobInput
    metadata: JobMetadata
    callback_url: str | None = None
    """Where this job's terminal event is delivered as a webhook (pixq.webhooks)."""
    batch_id: str | None = Field(None, pattern=JOB_ID_PATTERN)
    """The batch this job was submitted in (pixq.batches)."""
    preset: dict[str, Any] | None = None
    """``{"name", "version"}`` of the preset the spec came from (pixq.presets), if any."""
    priority: Priority = Priority.INTERACTIVE
    """The job's lane (see the module docstring); a DLQ replay keeps it."""

    @model_validator(mode="before")
    @classmethod
    def _compile_legacy_parameters(cls, data: Any) -> Any:
        """A message from before the typed spec carries the request's raw ``parameters``:
        compile them once, exactly as the API did at submit."""
        if isinstance(data, dict) and "spec" not in data and isinstance(data.get("parameters"), dict):
            data = dict(data)
            parameters = data.pop("parameters")
            try:
                data["spec"] = to_pipeline(JobType(data.get("type")), parameters)
            except (PixqError, ValueError) as exc:
                raise ValueError(f"legacy parameters: {getattr(exc, 'message', exc)}") from None
        return data


class OutputInfo(BaseModel):
    """One stored output; ``url`` is filled in by the API when a status is read."""

    name: str = "default"
    storage_key: str
    width: int
    height: int
    format: str
    bytes: int


class JobResult(BaseModel):
    """What a completed job stored: its outputs, what the input is, and for a job that
    asked for it (``spec.analyze``: an analyze job) the analysis. Stored as the status
    record's ``result`` (``input`` and ``analysis`` left out when absent, so a record
    written before them reads the same); shown by pixq.documents."""

    variants: list[OutputInfo] = Field(default_factory=list)
    input: dict[str, Any] | None = None
    """``{width, height, format, bands, has_alpha, space, icc_description, orientation,
    frames}`` from the input's header (worker.imaging.metadata)."""
    analysis: dict[str, Any] | None = None
    """``{exif, dominant_color, blurhash, dhash}`` (worker.imaging.analyze)."""
    reused_from: str | None = None
    """The earlier job of the same tenant, same input bytes and spec, whose stored outputs this
    job's were copied from instead of processing (worker.reuse, REUSE_OUTPUTS); absent when
    the job was processed."""

    def stored(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)
