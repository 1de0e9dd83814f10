"""GET /img/...: imgproxy-compatible image URLs, served from the cache, misses made by the worker pool.

A request parses and checks its URL (pixq.imgproxy), derives the result's cache key
(pixq.imgcache) and serves the stored result: a hit costs one ETag lookup of the source and
one read. A miss is an ordinary pipeline job of IMG_TENANT, accepted by the same path as
``POST /api/v1/jobs`` (api.submission: status record, quota, queued event, confirmed
publish), whose id follows from the cache key: concurrent misses for one URL are one job,
in this process (one task per cache key) and across replicas (one status record, one
Nats-Msg-Id). The request waits for the job's terminal event on the process's events hub
(listening before the submit, so the event cannot be missed) up to IMG_WAIT, copies the
output to the cache key and streams it; past IMG_WAIT it answers 503 with Retry-After, the
job completes anyway, and the next request copies its output (no second job).

The route is public (the signature is the authorization) and off unless IMG_KEY is set or
IMG_ALLOW_UNSIGNED=true: then it answers 404 like any unknown path.
"""

import asyncio
import time
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from pydantic import BaseModel

from api.context import ApiContext, context
from api.events_hub import Listener, StreamEnded, hub_of
from api.middleware import REQUEST_ID, TENANT
from api.submission import check_storage_key, accept_job
from api.uploads import SubmitRequest
from pixq import events, formats, imgcache, intake, names, sources
from pixq.engine import ENGINE_VERSION
from pixq.errors import HTTP_STATUS, ErrorCode, PixqError
from pixq.imgcache import Source
from pixq.imgproxy import Signing, parse_image_path, parse_presets
from pixq.jobs import JobStatus, JobType
from pixq.settings import Settings, fail_config
from pixq.sniff import detect_format
from pixq.spec import PipelineSpec
from pixq.storage import ObjectHead
from pixq.tenants import Tenant, TenantDirectory

log = structlog.get_logger("pixq.api.img")

RESULT_MAX_BYTES = 256 * 1024 * 1024
"""Largest cached result read back (outputs are bounded by MAX_OUTPUT_PIXELS well below this)."""
RETRY_AFTER_SECONDS = 1
"""Retry-After of the 503 a request gets when its job outlasts IMG_WAIT."""


class CachePurgeQuery(BaseModel):
    source: str
    """The source exactly as written in the image URLs: ``s3://bucket/key``, ``local://key``, ``https://...``."""


class CachePurged(BaseModel):
    source: str
    deleted: int
    """Cached results removed."""


@dataclass
class ImgState:
    """What the route keeps per process: the signing keys, IMG_TENANT, and the misses being made."""

    signing: Signing | None
    tenant: Tenant | None
    presets: dict[str, str] | None = None
    misses: dict[str, asyncio.Task] = field(default_factory=dict)
    """Cache key -> the task making it: one per key, shared by every request waiting for it."""


IMG_STATE = web.AppKey("img_state", ImgState)


def setup(app: web.Application, settings: Settings, tenants: TenantDirectory) -> None:
    """Check the /img settings at start (a bad one stops the process, naming the variable)."""
    signing = Signing.from_settings(settings)
    if not signing.enabled:
        app[IMG_STATE] = ImgState(signing=None, tenant=None)
        return
    tenant = tenants.open_tenant() if tenants.open else tenants.tenants.get(settings.img_tenant)
    if tenant is None or tenant.name != settings.img_tenant:
        raise fail_config("IMG_TENANT", f"no tenant named {settings.img_tenant!r} (TENANTS_FILE, API_KEYS)")
    app[IMG_STATE] = ImgState(signing=signing, tenant=tenant, presets=parse_presets(settings.img_presets) or None)


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag in tags or "*" in tags


async def serve_image(request: web.Request) -> web.StreamResponse:
    ctx, state = context(request), request.app[IMG_STATE]
    if state.signing is None or state.tenant is None:
        raise PixqError(ErrorCode.NOT_FOUND, "not found (/img is off: set IMG_KEY, or IMG_ALLOW_UNSIGNED=true)")
    url = parse_image_path(request.rel_url.raw_path.removeprefix("/img"), state.signing, state.presets)
    settings, tenant = ctx.settings, state.tenant
    negotiating = settings.img_auto_avif or settings.img_auto_webp
    spec = url.spec
    if not url.format_given and (chosen := imgcache.negotiate(request.headers.get("Accept", ""), settings)):
        spec = _with_format(spec, chosen)
    source = imgcache.resolve_source(url.source, settings)
    head = await _source_head(ctx, tenant, source)
    key = imgcache.cache_key(url.canonical, spec.variants[0].format, source, head.etag if head else "", ENGINE_VERSION)
    max_age = int(settings.img_cache_max_age)
    if url.expires is not None:  # no cache may keep serving a URL past its expires: (as imgproxy)
        max_age = max(0, min(max_age, url.expires - int(time.time())))
    headers = {"ETag": f'"{key}"', "Cache-Control": f"public, max-age={max_age}, immutable"}
    if negotiating:
        headers["Vary"] = "Accept"
    if _etag_matches(request.headers.get("If-None-Match"), headers["ETag"]):
        return web.Response(status=304, headers=headers)
    stored = imgcache.object_key(tenant.name, source, key)
    if settings.img_hit_redirect and (redirect := await _hit_redirect(ctx, stored, headers, max_age)) is not None:
        return redirect
    try:
        data = await ctx.deps.storage.get_bytes(stored, RESULT_MAX_BYTES)
        outcome = "hit"
    except PixqError as exc:
        if exc.code is not ErrorCode.INPUT_NOT_FOUND:
            raise
        data = await _miss(request, state, spec, source, head.size if head else None, key, stored)
        outcome = "miss"
    headers["X-Cache"] = outcome
    detected = detect_format(data[:64])
    media = formats.mime_of(detected) if detected else "application/octet-stream"
    return web.Response(body=data, content_type=media, headers=headers)


async def _hit_redirect(ctx: ApiContext, stored: str, headers: dict[str, str], max_age: int) -> web.Response | None:
    """IMG_HIT_REDIRECT on S3: a hit answers 307 to a presigned GET of the cached result, so its
    bytes go from the store to the client, not through the API. The store answers that GET with
    the Content-Type the worker stored the output with (a server-side copy keeps it) and the same
    Cache-Control (S3's response-cache-control override). The 307
    itself may be cached for half of URL_TTL at most: a CDN must not keep a redirect to a URL
    that has expired. None (serve as usual): local storage, or not cached yet (a miss)."""
    ttl = ctx.settings.url_ttl
    location = ctx.deps.storage.presigned_url(stored, ttl, {"response-cache-control": headers["Cache-Control"]})
    if location is None or await ctx.deps.storage.size(stored) is None:
        return None
    return web.Response(status=307, headers={**headers, "Location": location, "X-Cache": "hit",
                                             "Cache-Control": f"public, max-age={min(max_age, int(ttl // 2))}"})


def _with_format(spec: PipelineSpec, output_format: str) -> PipelineSpec:
    variant = spec.variants[0].model_copy(update={"format": output_format})
    return spec.model_copy(update={"variants": [variant, *spec.variants[1:]]})


async def _source_head(ctx: ApiContext, tenant: Tenant, source: Source) -> ObjectHead | None:
    """The stored source's size and ETag (one stat, reused by a miss's submit). None for a URL
    source: no ETag is known before the worker fetches it, so the URL itself stands for its
    version (a changed remote image needs a purge)."""
    if source.url is not None:
        sources.check_source_url(source.url, ctx.settings, tenant)  # hits too: a host taken off the allowlist
        return None
    assert source.storage_key is not None
    check_storage_key(tenant, source.storage_key)
    head = await ctx.deps.storage.head(source.storage_key)
    if head is None:
        raise PixqError(ErrorCode.INPUT_NOT_FOUND, f"no object at {source.identity}")
    return head


async def _miss(request: web.Request, state: ImgState, spec: PipelineSpec, source: Source, size: int | None,
                key: str, stored: str) -> bytes:
    """The result, made by the job for ``key``: one task per key in this process, which every
    request missing it awaits. The task bounds itself: IMG_WAIT for the job's end, counted from
    the moment the job exists (a slow submit is never cut short, so a 503 always names a job
    that will complete), then the copy to the cache. A request joining late waits what is left."""
    ctx = context(request)
    task = state.misses.get(key)
    if task is None:
        task = asyncio.create_task(_make(ctx, request, state, spec, source, size, key, stored))
        state.misses[key] = task
        task.add_done_callback(lambda done: _forget(state, key, done))
    return await asyncio.shield(task)  # a client leaving does not cancel the others' task


def _forget(state: ImgState, key: str, task: asyncio.Task) -> None:
    if state.misses.get(key) is task:
        del state.misses[key]
    if not task.cancelled():
        task.exception()  # retrieved: a failure nobody waited for any more is not logged as lost


async def _make(ctx: ApiContext, request: web.Request, state: ImgState, spec: PipelineSpec, source: Source,
                size: int | None, key: str, stored: str) -> bytes:
    """Submit the job for ``key`` unless it exists, wait for its end (IMG_WAIT at most), copy its
    output to ``stored``. IMAGE_PENDING when it is not done by then. ``size``: the stored
    source's, from the stat that gave its ETag (None for a URL source)."""
    tenant = state.tenant
    assert tenant is not None
    job_id = imgcache.job_id(key, await imgcache.epoch(ctx.deps.status.client, tenant.name, source))
    hub = hub_of(request)
    async with hub.listen(("job", job_id)) as listener:  # before the submit: its events cannot be missed
        record = await ctx.deps.status.get(job_id)
        if intake.may_be_unpublished(record):
            # A miss; or a job recorded and not yet begun, which the request that recorded it
            # may have died before publishing: accept_job then queues it again (idempotently).
            submit = SubmitRequest(parameters=spec.model_dump(mode="json", exclude_none=True),
                                   storage_key=source.storage_key, source_url=source.url)
            await accept_job(ctx, JobType.PIPELINE, submit, tenant, request[REQUEST_ID], None, job_id=job_id,
                             exclusive=True, known_size=size)
            log.info("img_miss_submitted", job_id=job_id, cache_key=key, source=_logged(source),
                     recorded_before=record is not None)
        if record is None or record.get("status") not in _TERMINAL:
            # The terminal event carries the job's document (status, outputs, error): no read
            # of the status store after it. Only a wait that ended without one reads it.
            record = await _terminal_document(listener, ctx.settings.img_wait) or await ctx.deps.status.get(job_id)
    return await _outcome(ctx, tenant, source, record or {}, stored)


async def _terminal_document(listener: Listener, wait: float) -> dict | None:
    """The job document of the first terminal event within ``wait`` seconds; None when the wait
    ran out or the listener ended (shutting down, or fell behind)."""
    deadline = asyncio.get_running_loop().time() + wait
    while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            event = await listener.next(remaining)
        except StreamEnded:
            return None
        if event is None:
            return None
        if events.is_terminal(event.envelope):
            return event.envelope["data"]
    return None


_TERMINAL = frozenset({JobStatus.COMPLETED.value, JobStatus.FAILED.value})


async def _outcome(ctx: ApiContext, tenant: Tenant, source: Source, record: dict, stored: str) -> bytes:
    status = record.get("status")
    if status == JobStatus.COMPLETED.value:
        variants = (record.get("result") or {}).get("variants") or []
        if not variants:
            raise PixqError(ErrorCode.PROCESSING_FAILED, "the job made no output")
        try:
            await ctx.deps.storage.copy(variants[0]["storage_key"], stored)
        except PixqError as exc:
            if exc.code is not ErrorCode.INPUT_NOT_FOUND:
                raise
            # The job's output is gone (deleted, expired) and the cached copy too: make it again.
            await imgcache.bump_epoch(ctx.deps.status.client, tenant.name, source)
            raise PixqError(ErrorCode.IMAGE_PENDING, "the job's output is gone; retry: the next request makes it again",
                            retry_after=RETRY_AFTER_SECONDS) from None
        return await ctx.deps.storage.get_bytes(stored, RESULT_MAX_BYTES)
    if status == JobStatus.FAILED.value:
        try:
            code = ErrorCode(record.get("error_code") or ErrorCode.PROCESSING_FAILED.value)
        except ValueError:
            code = ErrorCode.PROCESSING_FAILED
        if HTTP_STATUS[code] >= 500:
            # Not the image's fault (retries ran out): a new epoch makes the next request a new job.
            await imgcache.bump_epoch(ctx.deps.status.client, tenant.name, source)
            raise PixqError(ErrorCode.IMAGE_PENDING, f"the job failed ({code.value}); retry",
                            retry_after=RETRY_AFTER_SECONDS)
        raise PixqError(code, record.get("error") or code.value)
    raise PixqError(ErrorCode.IMAGE_PENDING, f"the image is being made; retry in {RETRY_AFTER_SECONDS} s",
                    retry_after=RETRY_AFTER_SECONDS)


def _logged(source: Source) -> str:
    return sources.origin(source.url) if source.url else source.identity


async def purge_cache(request: web.Request) -> web.Response:
    """Every cached result derived from ``?source=`` (as written in the image URLs), and a new
    epoch for the source, so its next request is a miss that makes a new job."""
    ctx, state = context(request), request.app[IMG_STATE]
    if not request[TENANT].is_admin:  # api.middleware.ADMIN_PREFIXES covers only the DLQ routes
        raise PixqError(ErrorCode.FORBIDDEN, "this route needs an admin key")
    raw = request.query.get("source")
    if not raw:
        raise PixqError(ErrorCode.INVALID_PARAMETERS, "source is required: s3://bucket/key, local://key or a URL")
    tenant_name = state.tenant.name if state.tenant else ctx.settings.img_tenant
    if not names.TENANT_RE.match(tenant_name):
        raise PixqError(ErrorCode.INVALID_PARAMETERS, "IMG_TENANT is not a tenant name")
    source = imgcache.resolve_source(raw, ctx.settings)
    deleted = await ctx.deps.storage.delete_prefix(names.img_source_prefix(tenant_name, source.digest))
    await imgcache.bump_epoch(ctx.deps.status.client, tenant_name, source)
    log.info("img_cache_purged", source=_logged(source), deleted=deleted)
    return web.json_response(CachePurged(source=raw, deleted=deleted).model_dump())
