"""Every route of the API in one place, with the facts its OpenAPI operation is built from.

``ROUTES`` is the one table: ``setup_routes`` registers its handlers, and api.openapi turns
the same rows into the OpenAPI 3.1 document (bodies, query strings and answers are pydantic
models of pixq.schemas and pixq.spec), so no route is served undocumented or documented
unserved. Error answers are listed per row as statuses (``errors``); api.openapi adds the
ones every row of a kind shares (401/403 where a key is needed, 429 on /api/v1, 503 where a
dependency is used).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

from api.handlers import analyze, batches, deliveries, docs, dlq, events, images, jobs, system, uploads
from pixq import schemas as s

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Body = type[BaseModel] | str | None
"""A response body: a model (JSON), a media type (another body), or None (no body)."""

JSON, FORM = "application/json", "multipart/form-data"
SSE = "text/event-stream"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: Literal["user", "admin", "none"] = "user"
    """``user``: any API key; ``admin``: an admin key; ``none``: public, or authorized otherwise."""
    ok: dict[int, Body] = field(default_factory=dict)
    """Success answers by status."""
    errors: tuple[int, ...] = ()
    """Error statuses this route itself may answer (the ErrorBody envelope)."""
    body: dict[str, type[BaseModel]] = field(default_factory=dict)
    """Request body models by media type."""
    body_required: bool = True
    query: type[BaseModel] | None = None
    headers: type[BaseModel] | None = None
    response_headers: dict[int, tuple[str, ...]] = field(default_factory=dict)
    """Names of components/headers each success answer carries."""
    uses_backends: bool = True
    """Needs NATS, Redis or storage, so may answer 503 when one is down."""
    description: str = ""


_SUBMIT_ERRORS = (400, 413, 415, 422)
_SUBMIT_OK = {202: s.JobAccepted}
_SUBMIT_HEADERS = {202: ("Location", "Idempotent-Replayed")}
_SUBMIT = dict(ok=_SUBMIT_OK, errors=_SUBMIT_ERRORS, headers=s.SubmitHeaders, response_headers=_SUBMIT_HEADERS,
               tag="jobs")

ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/v1/resize", jobs.submit_resize, "Resize an image", **_SUBMIT,
          body={JSON: s.ResizeJsonRequest, FORM: s.ResizeForm}),
    Route("POST", "/api/v1/crop", jobs.submit_crop, "Crop an image", **_SUBMIT,
          body={JSON: s.CropJsonRequest, FORM: s.CropForm}),
    Route("POST", "/api/v1/jobs", jobs.submit_pipeline, "Run a pipeline (steps, then named variants) or a preset",
          **_SUBMIT, body={JSON: s.PipelineJsonRequest, FORM: s.PipelineForm}),
    Route("POST", "/api/v1/analyze", analyze.submit_analyze, "Analyze an image (metadata, colours, hashes)",
          **_SUBMIT, body={JSON: s.AnalyzeJsonRequest, FORM: s.AnalyzeForm}),
    Route("GET", "/api/v1/jobs", jobs.list_jobs, "List jobs, newest first", "jobs", ok={200: s.JobPage},
          errors=(400, 403, 422), query=s.JobListQuery),
    Route("POST", "/api/v1/jobs/batch", batches.submit_batch, "Submit up to 100 jobs", "batches",
          ok={200: s.BatchAccepted}, errors=(400, 413, 415, 422), body={JSON: s.BatchRequest},
          response_headers={200: ("Location",)}),
    Route("GET", "/api/v1/jobs/{job_id}", jobs.get_job, "A job's status (conditional, long-poll)", "jobs",
          ok={200: s.JobDocument, 304: None}, errors=(404, 422), query=s.JobQuery, headers=s.JobHeaders,
          response_headers={200: ("ETag",), 304: ("ETag",)}),
    Route("GET", "/api/v1/jobs/{job_id}/events", events.job_events, "A job's events (SSE)", "events",
          ok={200: SSE}, errors=(403, 404, 422), query=s.JobEventsQuery, headers=s.StreamHeaders,
          description="Server-sent events; each `data:` is an EventEnvelope. Closes after the terminal event."),
    Route("GET", "/api/v1/jobs/{job_id}/deliveries", deliveries.job_deliveries, "A job's webhook attempts",
          "webhooks", ok={200: s.DeliveryPage}, errors=(404,)),
    Route("GET", "/api/v1/events", events.tenant_events, "The tenant's events (SSE)", "events",
          ok={200: SSE}, errors=(403, 422), query=s.EventsQuery, headers=s.StreamHeaders,
          description="Server-sent events; each `data:` is an EventEnvelope. Streams until the client leaves."),
    Route("POST", "/api/v1/events/token", events.create_token, "A short-lived stream token for EventSource",
          "events", ok={200: s.StreamToken}, errors=(400, 404, 413, 422), body={JSON: s.StreamTokenRequest},
          body_required=False),
    Route("POST", "/api/v1/uploads", uploads.create_upload, "Start a direct upload", "uploads",
          ok={201: s.UploadGrant}, errors=(400, 415, 422), body={JSON: s.UploadRequest}, body_required=False),
    Route("GET", "/api/v1/batches/{batch_id}", batches.get_batch, "A batch's progress", "batches",
          ok={200: s.BatchDocument}, errors=(404,)),
    Route("GET", "/api/v1/batches/{batch_id}/deliveries", deliveries.batch_deliveries,
          "A batch's webhook attempts", "webhooks", ok={200: s.DeliveryPage}, errors=(404,)),
    Route("GET", "/api/v1/dlq", dlq.list_dead, "List dead-lettered jobs", "dlq", auth="admin",
          ok={200: s.DeadJobPage}, errors=(422,), query=s.DeadListQuery),
    Route("POST", "/api/v1/dlq/replay", dlq.replay_many, "Replay dead-lettered jobs", "dlq", auth="admin",
          ok={202: s.ReplayManyResult}, query=s.DeadFilterQuery),
    Route("DELETE", "/api/v1/dlq", dlq.purge_all, "Purge the dead-letter queue", "dlq", auth="admin",
          ok={200: s.PurgeAll}),
    Route("GET", "/api/v1/dlq/{job_id}", dlq.show_dead, "A dead-lettered job", "dlq", auth="admin",
          ok={200: s.DeadJobEntry}, errors=(404,)),
    Route("POST", "/api/v1/dlq/{job_id}/replay", dlq.replay_one, "Replay a dead-lettered job", "dlq",
          auth="admin", ok={202: s.ReplayResult}, errors=(404, 422)),
    Route("DELETE", "/api/v1/dlq/{job_id}", dlq.purge_one, "Purge a dead-lettered job", "dlq", auth="admin",
          ok={200: s.PurgeOne}, errors=(404,)),
    Route("DELETE", "/api/v1/cache", images.purge_cache, "Purge /img's cached results of one source", "images",
          auth="admin", ok={200: images.CachePurged}, errors=(400, 422), query=images.CachePurgeQuery),
    Route("GET", "/img/{tail}", images.serve_image, "An image by imgproxy-compatible signed URL (cached)",
          "images", auth="none", ok={200: "image/*", 304: None, 307: None}, errors=(400, 403, 404, 410, 413, 415, 422),
          response_headers={200: ("ETag",), 304: ("ETag",), 307: ("ETag", "Location")},
          description="`/img/{signature}/{options}/plain/{source}@{ext}` or the base64 source form "
                      "(docs/on-the-fly.md). Off (404) unless IMG_KEY or IMG_ALLOW_UNSIGNED is set. "
                      "503 IMAGE_PENDING with Retry-After when the job outlasts IMG_WAIT."),
    Route("GET", "/api/v1/openapi.json", docs.openapi_json, "This document", "system", auth="none",
          ok={200: JSON}, uses_backends=False),
    Route("GET", "/docs", docs.docs_page, "API docs page (Swagger UI, served locally)", "system", auth="none",
          ok={200: "text/html"}, uses_backends=False),
    Route("GET", "/files/{key}", system.download, "Download a result (local storage, signed link)", "system",
          auth="none", ok={200: "application/octet-stream"}, errors=(403, 404), query=s.DownloadQuery,
          uses_backends=False),
    Route("POST", "/uploads/{token}", uploads.receive_upload, "Direct upload target (local storage)", "uploads",
          auth="none", ok={204: None}, errors=(400, 403, 404, 413, 415), body={FORM: s.UploadForm}),
    Route("GET", "/health/live", system.live, "Liveness", "system", auth="none", ok={200: s.Health},
          uses_backends=False),
    Route("GET", "/health/ready", system.ready, "Readiness: NATS, Redis and storage answer", "system",
          auth="none", ok={200: s.Health, 503: s.Health}, uses_backends=False),
    Route("GET", "/metrics", system.metrics, "Prometheus metrics", "system", auth="none",
          ok={200: "text/plain"}, uses_backends=False),
)

_AIOHTTP_PATHS = {"/files/{key}": "/files/{key:.+}", "/img/{tail}": "/img/{tail:.+}"}
"""aiohttp spellings of paths whose parameter spans slashes (OpenAPI cannot say so)."""

def setup_routes(app: web.Application) -> None:
    for route in ROUTES:
        path = _AIOHTTP_PATHS.get(route.path, route.path)
        if route.method == "GET":
            app.router.add_get(path, route.handler)  # and HEAD, as before
        else:
            app.router.add_route(route.method, path, route.handler)
    app.router.add_static("/docs/static", docs.STATIC_DIR, name="docs-static")
