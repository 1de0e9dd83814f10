"""Submit and read jobs."""

import asyncio
from enum import StrEnum

from aiohttp import web

from api.context import ApiContext, context
from api.events_hub import StreamEnded, hub_of
from api.middleware import REQUEST_ID, TENANT, tenant_query
from api.params import int_query
from api.submission import accept_job
from api.uploads import SubmitRequest, read_submit_request
from api.views import public_status
from pixq import events, history, names, schemas, webhooks
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobStatus, JobType, Priority, parse_priority
from pixq.tenants import OPEN_TENANT, Tenant
from pixq.units import parse_duration

IDEMPOTENCY_KEY_MAX = 255


async def _submit(request: web.Request, job_type: JobType) -> web.Response:
    ctx = context(request)
    idempotency_key = request.headers.get("Idempotency-Key") or None
    if idempotency_key and len(idempotency_key) > IDEMPOTENCY_KEY_MAX:
        raise PixqError(ErrorCode.INVALID_REQUEST, f"Idempotency-Key is longer than {IDEMPOTENCY_KEY_MAX}")
    json_fields = frozenset({"spec"}) if job_type is JobType.PIPELINE else frozenset()
    submit = await read_submit_request(request, ctx.limits.max_input_bytes, ctx.settings.max_request_bytes,
                                       json_fields)
    if unknown := schemas.unknown_submit_fields(job_type.value, set(submit.extra)):
        submit.discard()
        raise PixqError(ErrorCode.INVALID_PARAMETERS, f"unknown field(s): {', '.join(unknown)[:200]}")
    priority = priority_field(submit)  # before a pipeline's spec replaces the form fields
    if job_type is JobType.PIPELINE:
        submit.parameters = submit.extra.get("spec", submit.parameters)
        if not isinstance(submit.parameters, dict):
            submit.discard()
            raise PixqError(ErrorCode.INVALID_REQUEST, "'spec' must be a JSON object")
    try:
        callback_url = callback_of(ctx, request[TENANT], submit)
        accepted = await accept_job(ctx, job_type, submit, request[TENANT], request[REQUEST_ID], idempotency_key,
                                    callback_url=callback_url,
                                    priority=parse_priority(priority, Priority.INTERACTIVE))
    finally:
        submit.discard()
    location = f"/api/v1/jobs/{accepted.job_id}"
    body = {"job_id": accepted.job_id, "status": JobStatus.QUEUED.value}
    headers = {"Location": location}
    if accepted.replayed:
        record = await ctx.deps.status.get(accepted.job_id)
        body["status"] = record["status"] if record else JobStatus.QUEUED.value
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(body, status=202, headers=headers)


def callback_of(ctx: ApiContext, tenant: Tenant, submit: SubmitRequest) -> str | None:
    """``callback_url``: a top-level JSON field, or a multipart form field (never a parameter)."""
    url = submit.extra.pop("callback_url", None) or submit.parameters.pop("callback_url", None)
    return webhooks.check_callback_url(url, ctx.settings, tenant) if url is not None else None


def priority_field(submit: SubmitRequest) -> object:
    """The raw ``priority`` (pixq.jobs.parse_priority checks it): like callback_url, a top-level
    JSON field or a multipart form field, never a parameter."""
    value = submit.extra.pop("priority", None)
    return submit.parameters.pop("priority", None) if value is None else value


async def submit_resize(request: web.Request) -> web.Response:
    return await _submit(request, JobType.RESIZE)


async def submit_crop(request: web.Request) -> web.Response:
    return await _submit(request, JobType.CROP)


async def submit_pipeline(request: web.Request) -> web.Response:
    return await _submit(request, JobType.PIPELINE)


async def visible_job(request: web.Request) -> dict:
    """The status record of the job in the path, if the caller's tenant may see it.

    The id is checked to be a UUID before any use. Another tenant's job answers exactly like
    a job that does not exist (404), so existence never leaks; an admin sees every tenant."""
    job_id = request.match_info["job_id"]
    record = await context(request).deps.status.get(job_id) if names.is_job_id(job_id) else None
    tenant = request[TENANT]
    if record is None or not (tenant.is_admin or owner_of(record) == tenant.name):
        raise PixqError(ErrorCode.NOT_FOUND, "no such job")
    return record


def owner_of(record: dict) -> str:
    """Records written before tenants existed belong to the open tenant."""
    return record.get("tenant") or OPEN_TENANT


PAGE_DEFAULT, PAGE_MAX = 20, 100
SCAN_MAX = 1000
"""Most history entries one page request examines; with narrow filters a page may come back
short, with a next_cursor to continue from."""


def _time_bound(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return history.millis(raw)
    except (ValueError, OverflowError):
        raise PixqError(ErrorCode.INVALID_PARAMETERS, f"{name} must be an ISO 8601 timestamp") from None


def _choice(request: web.Request, name: str, allowed: type[StrEnum]) -> str | None:
    raw = request.query.get(name)
    if raw is not None and raw not in {member.value for member in allowed}:
        raise PixqError(ErrorCode.INVALID_PARAMETERS,
                        f"{name} must be one of {', '.join(member.value for member in allowed)}")
    return raw


def _history_key(request: web.Request) -> str:
    """A user lists its own tenant; an admin lists every tenant, or one with ?tenant=."""
    tenant = tenant_query(request, "jobs")
    return names.tenant_jobs_key(tenant) if tenant else names.ALL_JOBS_KEY


async def list_jobs(request: web.Request) -> web.Response:
    """The caller's jobs, newest first: ``?limit&cursor&status&type&created_after&created_before``.

    ``next_cursor`` is opaque and continues strictly after the last job examined, so jobs
    created while a client pages never shift a page: each job appears exactly once."""
    ctx = context(request)
    limit, key = int_query(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX), _history_key(request)
    cursor = history.Cursor.decode(request.query["cursor"]) if "cursor" in request.query else None
    status, job_type = _choice(request, "status", JobStatus), _choice(request, "type", JobType)
    created_after, created_before = _time_bound(request, "created_after"), _time_bound(request, "created_before")
    items: list[dict] = []
    examined, last_examined, exhausted = 0, None, True
    # One more than a page per round trip: a full page then knows whether anything follows.
    async for batch in history.newest_first(ctx.deps.status.client, key, cursor, created_after, created_before,
                                            limit + 1):
        items += await _matching(ctx, batch, status, job_type)
        examined, last_examined = examined + len(batch), batch[-1]
        if len(items) > limit or examined >= SCAN_MAX:
            exhausted = False
            break
    if len(items) > limit:
        items, resume = items[:limit], items[limit - 1]["entry"]
    else:
        resume = None if exhausted else last_examined  # every examined job was returned or filtered out
    next_cursor = history.Cursor(*resume).encode() if resume else None
    body = [public_status(ctx, request, item["record"]) for item in items]
    return web.json_response({"items": body, "next_cursor": next_cursor, "limit": limit})


async def _matching(ctx: ApiContext, entries: list[tuple[int, str]], status: str | None, job_type: str | None) -> list[dict]:
    records = await ctx.deps.status.get_many([job_id for _, job_id in entries])
    return [{"entry": entry, "record": record} for entry, record in zip(entries, records)
            if record is not None and (status is None or record.get("status") == status)
            and (job_type is None or record.get("type") == job_type)]


LONG_POLL_MAX_SECONDS = 60.0
"""The longest ``?wait=`` honoured: longer values are cut to this (below common proxy timeouts)."""


async def get_job(request: web.Request) -> web.Response:
    """The job's status, with an ``ETag`` naming its position ``"<generation>-<attempt>-<phase>"``.

    Conditional and long-poll: with ``If-None-Match`` equal to the current ETag the answer is
    ``304 Not Modified``; with ``?wait=30s`` as well (at most LONG_POLL_MAX_SECONDS) it comes
    as soon as the status moves on (200, new document and ETag) or when the wait ends (304).
    The wait listens for the job's events on the process's hub (api.events_hub): no polling.
    The ETag identifies the status, not the bytes: download URLs are minted fresh each time."""
    record = await visible_job(request)
    wait = _long_poll_wait(request)
    etag = etag_of(record)
    if _etag_matches(request.headers.get("If-None-Match"), etag):
        if wait:
            record = await _changed(request, record, wait)
        if etag_of(record) == etag:
            return web.Response(status=304, headers={"ETag": etag, "Cache-Control": "no-cache"})
    return web.json_response(public_status(context(request), request, record),
                             headers={"ETag": etag_of(record), "Cache-Control": "no-cache"})


def etag_of(record: dict) -> str:
    """A strong ETag from the status position: it changes exactly when the status record does."""
    return '"{}-{}-{}"'.format(*events.position(record))


def _etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: a list of entity tags (weak comparison) or ``*``."""
    if not header:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return etag in tags or "*" in tags


def _long_poll_wait(request: web.Request) -> float:
    raw = request.query.get("wait")
    if raw is None:
        return 0.0
    try:
        return min(parse_duration(raw), LONG_POLL_MAX_SECONDS)
    except ValueError:
        raise PixqError(ErrorCode.INVALID_PARAMETERS, "wait must be a duration such as 30s (at most 60s)") from None


async def _changed(request: web.Request, record: dict, wait: float) -> dict:
    """The job's record once its status moves past ``record``'s, or as it stands after ``wait``
    seconds (or when the process shuts down)."""
    ctx, hub = context(request), hub_of(request)
    job_id, seen = record["job_id"], events.position(record)
    async with hub.listen(("job", job_id)) as listener:
        # Read again once listening: a change between the first read and now is not missed.
        current = await ctx.deps.status.get(job_id)
        if current is None or events.position(current) != seen:
            return current or record
        deadline = asyncio.get_running_loop().time() + wait
        while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                event = await listener.next(remaining)
            except StreamEnded:
                break  # shutting down, or fell behind: answer with what the store shows
            if event is None or event.position > seen:
                break
    return await ctx.deps.status.get(job_id) or current
