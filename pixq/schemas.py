"""Pydantic models of every request and response body of the HTTP API: the one contract.

The OpenAPI document (api.openapi) is generated from these models and from the request
models of pixq.spec; the API renders its job, page and batch documents through them
(api.views), so what a client reads is what the document promises. Responses are *open*
(unknown keys are dropped when rendering, and clients must tolerate keys added later);
request bodies are *closed* (``additionalProperties: false``) exactly where the API refuses
unknown keys (the parameter models of pixq.spec).

Clients (pixq.client) import these models to parse answers: keep names stable.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pixq import names
from pixq.errors import ErrorCode
from pixq.jobs import JobStatus, JobType
from pixq.spec import AnalyzeOptions, CropParams, PipelineSpec, ResizeParams

Priority = Literal["interactive", "batch"]
"""Which queue a job waits in: interactive work is served first, batch work is never starved."""


class _Response(BaseModel):
    """A response body: unknown keys are ignored on parse, so older clients read newer servers."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class _Loose(BaseModel):
    """Forms, query strings and headers: documented field by field, read by the handlers."""

    model_config = ConfigDict(use_attribute_docstrings=True)


# --- Errors --------------------------------------------------------------------------------


class ErrorDetail(_Response):
    code: ErrorCode
    """Stable code (docs/errors.md); decide on this, never on ``message``."""
    message: str


class ErrorBody(_Response):
    """The one error envelope of every non-2xx answer."""

    error: ErrorDetail


# --- Jobs ----------------------------------------------------------------------------------


class JobAccepted(_Response):
    """202 answer to a submit; ``Location`` names the job's URL."""

    job_id: str
    status: JobStatus
    """``queued``, or for an idempotent replay the earlier job's current status."""


class OutputFile(_Response):
    url: str | None = None
    """A fresh download URL valid for URL_TTL (absent in stored events)."""
    storage_key: str
    width: int
    height: int
    format: str
    bytes: int


class VariantOutput(OutputFile):
    name: str


class JobResult(_Response):
    """The first output's fields (absent for an analyze job), a pipeline's ``variants``, the
    input's metadata and, for analysis jobs, ``analysis`` (free-form: worker.imaging)."""

    url: str | None = None
    storage_key: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    bytes: int | None = None
    variants: list[VariantOutput] | None = None
    input: dict[str, Any] | None = None
    analysis: dict[str, Any] | None = None
    reused_from: str | None = None
    """The earlier job of the same tenant, with the same input bytes and spec, whose stored
    outputs were copied to this job's keys instead of processing (REUSE_OUTPUTS); absent when
    the job was processed."""


class PresetRef(_Response):
    name: str
    version: int | str
    """As PRESETS_FILE declares it: ``2`` or ``"2026-11"``."""


class JobDocument(_Response):
    """A job's public status (pixq.documents.public_status): GET /api/v1/jobs/{id}, events, webhooks."""

    job_id: str
    type: JobType | None = None
    status: JobStatus | None = None
    attempts: int = 0
    created_at: str | None = None
    updated_at: str | None = None
    result: JobResult | None = None
    error: str | None = None
    error_code: str | None = None
    next_attempt_at: str | None = None
    """Only while retrying."""
    batch_id: str | None = None
    """Only for a batch's job."""
    preset: PresetRef | None = None
    """Only for a job compiled from a preset."""
    priority: Priority | None = None
    """``interactive`` or ``batch`` (docs/api.md); absent on jobs recorded before priorities."""


class JobPage(_Response):
    """GET /api/v1/jobs: newest first; pass ``next_cursor`` as ``?cursor=`` for the next page."""

    items: list[JobDocument]
    next_cursor: str | None
    limit: int


# --- Submit request bodies (JSON) ------------------------------------------------------------


class StorageKeyInput(_Request):
    storage_key: str = Field(min_length=1)
    """An object already in pixq's storage, under the caller's tenant prefix."""


class UploadIdInput(_Request):
    upload_id: str = Field(min_length=1)
    """A direct upload's id (POST /api/v1/uploads)."""


class UrlInput(_Request):
    url: str = Field(min_length=1)
    """An http(s) URL the worker fetches (SOURCE_HOSTS decides which hosts)."""


JsonInput = StorageKeyInput | UploadIdInput | UrlInput
"""Exactly one input source (api.uploads.json_input)."""


class _JsonSubmit(_Request):
    input: JsonInput
    callback_url: str | None = None
    """Webhook URL for this job's events (docs/notifications.md)."""
    priority: Priority | None = None
    """Default ``interactive``."""


class ResizeJsonRequest(_JsonSubmit):
    """POST /api/v1/resize as JSON."""

    parameters: ResizeParams


class CropJsonRequest(_JsonSubmit):
    """POST /api/v1/crop as JSON."""

    parameters: CropParams


class PipelineJsonRequest(_JsonSubmit):
    """POST /api/v1/jobs as JSON: a ``spec``, or a ``preset`` name (``avatar`` or ``avatar@2``), not both."""

    spec: PipelineSpec | None = None
    parameters: PipelineSpec | None = None
    """Another name for ``spec`` (``spec`` wins when both are given)."""
    preset: str | None = Field(None, min_length=1, max_length=200)


class AnalyzeJsonRequest(_JsonSubmit):
    """POST /api/v1/analyze as JSON."""

    parameters: AnalyzeOptions | None = None


JSON_SUBMITS: dict[str, type[_JsonSubmit]] = {"resize": ResizeJsonRequest, "crop": CropJsonRequest,
                                               "pipeline": PipelineJsonRequest, "analyze": AnalyzeJsonRequest}
"""The JSON body of each job type's submit (keys: pixq.jobs.JobType values)."""


def unknown_submit_fields(job_type: str, fields: set[str]) -> list[str]:
    """Top-level keys of a JSON submit its model does not name (sorted). ``preset`` is let
    through on every route: api.presets answers why a preset only goes to /api/v1/jobs."""
    return sorted(fields - set(JSON_SUBMITS[job_type].model_fields) - {"preset"})


# --- Submit request bodies (multipart) -------------------------------------------------------

_FILE = Field(json_schema_extra={"format": "binary", "contentMediaType": "application/octet-stream"})


class _FormSubmit(_Loose):
    """Multipart form: the image as ``file`` plus text fields (parameters are form fields)."""

    file: str = _FILE
    callback_url: str | None = None
    priority: Priority | None = None


class ResizeForm(_FormSubmit, ResizeParams):
    """POST /api/v1/resize as multipart/form-data."""


class CropForm(_FormSubmit, CropParams):
    """POST /api/v1/crop as multipart/form-data."""


class PipelineForm(_FormSubmit):
    """POST /api/v1/jobs as multipart/form-data: ``spec`` is a JSON text field."""

    model_config = ConfigDict(extra="forbid")
    spec: str | None = None
    """The PipelineSpec as JSON text."""
    preset: str | None = Field(None, min_length=1, max_length=200)


class AnalyzeForm(_FormSubmit, AnalyzeOptions):
    """POST /api/v1/analyze as multipart/form-data."""


# --- Batches -------------------------------------------------------------------------------


class BatchItemInput(_Request):
    storage_key: str | None = Field(None, min_length=1)
    upload_id: str | None = Field(None, min_length=1)
    url: str | None = Field(None, min_length=1)
    part: str | None = Field(None, min_length=1)
    """Multipart batches only: the name of a file part."""


class BatchItem(_Loose):
    type: JobType
    input: BatchItemInput
    parameters: dict[str, Any] | None = None
    """The job type's parameters (ResizeParams, CropParams, AnalyzeOptions)."""
    spec: dict[str, Any] | None = None
    """A pipeline's PipelineSpec."""
    preset: str | None = None
    idempotency_key: str | None = Field(None, min_length=1, max_length=255)
    callback_url: str | None = None
    priority: Priority | None = None
    """Default ``batch``."""


class BatchRequest(_Loose):
    """POST /api/v1/jobs/batch as JSON (or as the ``jobs`` part of a multipart body)."""

    jobs: list[BatchItem] = Field(min_length=1, max_length=100)
    callback_url: str | None = None


class BatchItemResult(_Response):
    """One item's outcome: ``job_id``/``status``/``replayed``, or ``error``."""

    index: int
    job_id: str | None = None
    status: JobStatus | None = None
    replayed: bool | None = None
    error: ErrorDetail | None = None


class BatchAccepted(_Response):
    batch_id: str
    items: list[BatchItemResult]
    accepted: int
    refused: int
    tracked: bool
    """False when the batch could not be sealed (its jobs run, it never completes)."""


class BatchDocument(_Response):
    """GET /api/v1/batches/{id}; also the data of a ``batch.completed`` event."""

    batch_id: str
    status: Literal["running", "completed"]
    created_at: str | None = None
    completed_at: str | None = None
    total: int
    counts: dict[str, int]
    job_ids: list[str]


# --- Uploads, events, deliveries ---------------------------------------------------------------


class UploadRequest(_Request):
    """POST /api/v1/uploads (the body is optional)."""

    content_type: str | None = Field(None, pattern=r"^image/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")


class UploadGrant(_Response):
    """Where to POST the file: ``url`` with the ``fields`` first, then ``file`` (S3 POST Object form)."""

    upload_id: str
    url: str
    fields: dict[str, str]
    expires_at: str


class UploadForm(_Loose):
    """POST /uploads/{token}: the grant's fields (``key``, ``Content-Type``), then ``file``."""

    key: str
    content_type: str = Field(alias="Content-Type")
    file: str = _FILE


class StreamTokenRequest(_Request):
    job_id: str | None = None
    """Bind the token to one job's stream."""


class StreamToken(_Response):
    token: str
    expires_at: str
    job_id: str | None


class EventEnvelope(_Response):
    """One event (pixq.events): an SSE ``data:`` line and a webhook payload."""

    type: str
    """``job.<status>`` or ``batch.completed``."""
    timestamp: str
    tenant: str
    position: list[int]
    data: dict[str, Any]
    """A JobDocument (job events) or a BatchDocument (batch.completed)."""


class Delivery(_Response):
    webhook_id: str | None = None
    event_type: str | None = None
    url: str | None = None
    attempt: int | None = None
    at: str | None = None
    status_code: int | None = None
    outcome: str | None = None
    error: str | None = None
    duration_ms: float | None = None
    next_attempt_at: str | None = None


class DeliveryPage(_Response):
    """Webhook attempts of a job (``job_id``) or a batch (``batch_id``), oldest first."""

    job_id: str | None = None
    batch_id: str | None = None
    deliveries: list[Delivery]


# --- Dead-letter queue (admin) --------------------------------------------------------------------


class DeadJob(_Response):
    job_id: str | None = None
    type: str | None = None
    tenant: str | None = None
    error_code: str | None = None
    error: str | None = None
    attempts: int | None = None
    reason: str | None = None
    dead_lettered_at: str | None = None


class DeadJobEntry(DeadJob):
    """The full entry: the summary plus the original ``message``."""

    message: dict[str, Any] | None = None


class DeadJobPage(_Response):
    items: list[DeadJob]
    total: int
    limit: int
    offset: int


class ReplayResult(_Response):
    job_id: str
    status: JobStatus
    generation: int


class ReplayFailure(_Response):
    job_id: str | None = None
    code: ErrorCode
    message: str


class ReplayManyResult(_Response):
    replayed: list[str]
    failed: list[ReplayFailure]


class PurgeOne(_Response):
    job_id: str
    purged: bool


class PurgeAll(_Response):
    purged: int


# --- System ----------------------------------------------------------------------------------------


class Health(_Response):
    """/health/live answers ``{"status": "ok"}``; /health/ready also ``checks`` (503 when one fails)."""

    status: Literal["ok", "ready", "unavailable"]
    checks: dict[str, bool] | None = None


# --- Query strings and headers (documented as parameters; the handlers read them) ------------------

_TENANT = Field(None, pattern=names.TENANT_PATTERN)
_EVENT_ID = Field(None, pattern=r"^[0-9]{1,20}$")


class SubmitHeaders(_Loose):
    idempotency_key: str | None = Field(None, alias="Idempotency-Key", min_length=1, max_length=255)
    """A retried submit with the same key (per tenant, IDEMPOTENCY_TTL) answers the first job."""


class JobListQuery(_Loose):
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None
    """``next_cursor`` of the previous page (opaque)."""
    status: JobStatus | None = None
    type: JobType | None = None
    created_after: str | None = Field(None, json_schema_extra={"format": "date-time"})
    created_before: str | None = Field(None, json_schema_extra={"format": "date-time"})
    tenant: str | None = _TENANT
    """Admin keys only: one tenant's jobs (a user key may only name its own tenant)."""


class JobQuery(_Loose):
    wait: str | None = Field(None, pattern=r"^[0-9]+(\.[0-9]+)?(ms|s|m)?$")
    """Long poll with If-None-Match: answer when the status moves on, at most 60s."""


class JobHeaders(_Loose):
    if_none_match: str | None = Field(None, alias="If-None-Match")


class StreamHeaders(_Loose):
    last_event_id: str | None = Field(None, alias="Last-Event-ID", pattern=r"^[0-9]{1,20}$")


class JobEventsQuery(_Loose):
    last_event_id: str | None = _EVENT_ID
    access_token: str | None = None
    """A stream token (POST /api/v1/events/token) instead of the Authorization header."""


class EventsQuery(JobEventsQuery):
    status: str | None = Field(None, pattern=r"^(queued|processing|retrying|completed|failed)"
                                             r"(,(queued|processing|retrying|completed|failed))*$")
    """Comma-separated statuses."""
    type: str | None = Field(None, pattern=r"^(resize|crop|pipeline|analyze)(,(resize|crop|pipeline|analyze))*$")
    """Comma-separated job types."""
    tenant: str | None = _TENANT


class DeadFilterQuery(_Loose):
    error_code: str | None = None
    type: str | None = None


class DeadListQuery(DeadFilterQuery):
    limit: int = Field(50, ge=0, le=500)
    offset: int = Field(0, ge=0, le=10**9)


class DownloadQuery(_Loose):
    expires: str
    sig: str
