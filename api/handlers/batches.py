"""Batches: up to 100 jobs in one request, each accepted exactly as a single submit would be.

``POST /api/v1/jobs/batch`` takes ``{"jobs": [item, ...], "callback_url": ...}`` as JSON, or as
the ``jobs`` part of a multipart body whose file parts items name with ``"input": {"part": ...}``.
Items are independent: one item's mistake or outage (an unknown input, NATS down) is that
item's error, never the batch's. The answer is therefore always **200** with one result per
item in item order (``accepted``/``refused`` count them): the status code describes the
request, which was understood, and a client must read the items anyway, whether none, some
or all were accepted. Only what stops every item answers an error of its own: a malformed
body (400/415), a body over MAX_REQUEST_BYTES (413), a bad item count or batch
``callback_url`` (422), more items than the tenant has jobs in flight left under its cap, or
its month's megapixels used (429 QUOTA_EXCEEDED: all or none, so nothing is created), or
Redis down before anything was reserved (503).

Batch jobs default to ``"priority": "batch"`` (workers serve them after interactive work, with a
guaranteed share: worker.consumer); the batch's top-level ``priority`` sets it for every item,
an item's own ``priority`` wins, and any other value is a 422 (the batch's) or that item's error.

Order of work (pixq.batches explains why): parse every item; reserve every parseable item's
place among the tenant's jobs in flight (pixq.quotas), then its job id as pending; accept
the items, a few at a time (ITEM_CONCURRENCY); then release the refused and replayed items'
ids, record the listed jobs and seal, in one step. When that finds the batch complete
already (all refused, replayed or finished) its ``batch.completed`` is published here,
otherwise by whichever worker finishes its last job.
"""

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from api.context import ApiContext, context
from api.handlers.jobs import IDEMPOTENCY_KEY_MAX
from api.metrics import QUOTA_REFUSALS
from api.middleware import REQUEST_ID, TENANT
from api.submission import Accepted, accept_job
from api.uploads import BatchRequest, SubmitRequest, json_input, read_batch_request
from api.views import render
from pixq import lifecycle, names, quotas, webhooks
from pixq.batches import MAX_ITEMS, public_batch
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobStatus, JobType, Priority, parse_priority
from pixq.schemas import BatchDocument
from pixq.tenants import Tenant

log = structlog.get_logger("pixq.api")

ITEM_CONCURRENCY = 8
"""Items accepted at once: a batch of 100 costs ~13 rounds of submit round trips, not 100,
without one request taking over the API's connections to Redis, NATS and storage."""
FINISH_ATTEMPTS = (0.0, 0.25, 1.0)
"""Delays before each try of the final seal: a Redis blip must not leave a batch unsealed
(it would never complete), and the seal is safe to repeat."""


@dataclass
class _Item:
    index: int
    job_id: str
    """Reserved before any item is accepted; a replayed item answers with the earlier job's id."""
    job_type: JobType | None = None
    submit: SubmitRequest | None = None
    idempotency_key: str | None = None
    callback_url: str | None = None
    priority: Priority = Priority.BATCH
    error: PixqError | None = None
    accepted: Accepted | None = None

    def result(self, statuses: dict[str, str]) -> dict[str, Any]:
        if self.accepted is None:
            assert self.error is not None
            return {"index": self.index, "error": {"code": self.error.code.value, "message": self.error.message}}
        job_id = self.accepted.job_id
        status = statuses.get(job_id, JobStatus.QUEUED.value) if self.accepted.replayed else JobStatus.QUEUED.value
        return {"index": self.index, "job_id": job_id, "status": status, "replayed": self.accepted.replayed}


def _items_of(document: dict[str, Any]) -> list[Any]:
    items = document.get("jobs")
    if not isinstance(items, list):
        raise PixqError(ErrorCode.INVALID_REQUEST, 'a batch is {"jobs": [...]}: "jobs" must be a list')
    if not 1 <= len(items) <= MAX_ITEMS:
        raise PixqError(ErrorCode.INVALID_PARAMETERS, f"a batch holds 1 to {MAX_ITEMS} jobs, not {len(items)}")
    return items


def _input_of(raw: dict[str, Any], files: dict | None) -> SubmitRequest:
    """The item's input: what a JSON submit's ``input`` may name (``storage_key``, ``upload_id``,
    ``url``: api.uploads.json_input), or in a multipart batch ``{"part": ...}``."""
    source = raw.get("input")
    if isinstance(source, dict) and "part" not in source:
        kind, value = json_input(source)
        return SubmitRequest(parameters={}, **{kind: value})
    key = source.get("storage_key") if isinstance(source, dict) else None
    part_name = source.get("part") if isinstance(source, dict) else None
    if isinstance(key, str) and key and part_name is None:
        return SubmitRequest(parameters={}, storage_key=key)
    if not (isinstance(part_name, str) and part_name and key is None):
        raise PixqError(ErrorCode.INVALID_REQUEST, 'each job needs "input": {"storage_key": "..."} '
                        'or, in a multipart batch, {"part": "<file part name>"}')
    if files is None:
        raise PixqError(ErrorCode.INVALID_REQUEST, '"input": {"part": ...} needs a multipart/form-data batch')
    part = files.get(part_name)
    if part is None:
        raise PixqError(ErrorCode.INVALID_REQUEST, f"no file part named {part_name[:100]!r}")
    if part.error is not None:
        raise part.error
    return SubmitRequest(parameters={}, upload=part.path, content_type=part.content_type)


def _parse_item(ctx: ApiContext, tenant: Tenant, index: int, raw: Any, files: dict | None,
                priority: Priority) -> _Item:
    """An item checked as a single submit's request is (the rest is accept_job's); a mistake
    becomes this item's error. ``priority`` is the batch's; an item's own ``priority`` wins."""
    item = _Item(index, job_id=str(uuid.uuid4()))
    try:
        if not isinstance(raw, dict):
            raise PixqError(ErrorCode.INVALID_REQUEST, "each job must be a JSON object")
        kinds = {kind.value: kind for kind in JobType}
        if raw.get("type") not in kinds:
            raise PixqError(ErrorCode.INVALID_PARAMETERS, f"type must be one of {', '.join(kinds)}")
        item.job_type = kinds[raw["type"]]
        key = raw.get("idempotency_key")
        if key is not None and not (isinstance(key, str) and 0 < len(key) <= IDEMPOTENCY_KEY_MAX):
            raise PixqError(ErrorCode.INVALID_REQUEST,
                            f"idempotency_key must be a string of 1 to {IDEMPOTENCY_KEY_MAX} characters")
        item.idempotency_key = key
        parameters = raw.get("parameters", {})
        if item.job_type is JobType.PIPELINE:
            parameters = raw.get("spec", parameters)
        if not isinstance(parameters, dict):
            raise PixqError(ErrorCode.INVALID_REQUEST, '"parameters" (or a pipeline\'s "spec") must be an object')
        if raw.get("callback_url") is not None:
            item.callback_url = webhooks.check_callback_url(raw["callback_url"], ctx.settings, tenant)
        item.priority = parse_priority(raw.get("priority"), priority)
        item.submit = _input_of(raw, files)
        item.submit.parameters = parameters
        if raw.get("preset") is not None:  # api.presets reads it as a single submit's top-level field
            item.submit.extra["preset"] = raw["preset"]
    except PixqError as exc:
        item.error = exc
    return item


async def _accept(ctx: ApiContext, gate: asyncio.Semaphore, item: _Item, tenant: Tenant, request_id: str,
                  batch_id: str) -> None:
    assert item.job_type is not None and item.submit is not None
    async with gate:
        try:
            item.accepted = await accept_job(ctx, item.job_type, item.submit, tenant, request_id,
                                             item.idempotency_key, callback_url=item.callback_url,
                                             batch_id=batch_id, job_id=item.job_id, priority=item.priority)
        except PixqError as exc:
            item.error = exc
        except Exception:  # one item's bug must not cost the other items their answers
            log.exception("batch_item_failed", batch_id=batch_id, index=item.index, job_id=item.job_id)
            item.error = PixqError(ErrorCode.INTERNAL_ERROR, "internal error")


async def _finish(ctx: ApiContext, batch_id: str, items: list[_Item], log_: Any) -> bool:
    """Release, record, seal; then publish batch.completed if that completed it. False when the
    batch could not be sealed (Redis down throughout): its jobs run, but it never completes."""
    listed = [item.accepted.job_id for item in items if item.accepted]
    released = [item.job_id for item in items
                if item.submit is not None and (item.accepted is None or item.accepted.replayed)]
    batches = ctx.deps.status.batches
    for delay in FINISH_ATTEMPTS:
        await asyncio.sleep(delay)
        try:
            complete = await batches.finish(batch_id, listed, released)
            break
        except PixqError as exc:
            error = exc
    else:
        log_.error("batch_not_sealed", error_code=error.code.value, error=error.message)
        return False
    if complete:
        try:
            await lifecycle.complete_batch(ctx.deps.js, ctx.deps.status, batch_id)
        except PixqError as exc:  # GET /api/v1/batches/{id} publishes it again (BatchStore.unannounced)
            log_.warning("batch_completed_unannounced", error_code=exc.code.value, error=exc.message)
    return True


async def _replayed_statuses(ctx: ApiContext, items: list[_Item]) -> dict[str, str]:
    """Current statuses of replayed jobs (a replay answers what the earlier job is now)."""
    job_ids = [item.accepted.job_id for item in items if item.accepted and item.accepted.replayed]
    if not job_ids:
        return {}
    try:
        records = await ctx.deps.status.get_many(job_ids)
    except PixqError:
        return {}
    return {job_id: record["status"] for job_id, record in zip(job_ids, records) if record}


async def _submit(request: web.Request, batch: BatchRequest) -> web.Response:
    ctx, tenant, request_id = context(request), request[TENANT], request[REQUEST_ID]
    raw_items = _items_of(batch.document)
    callback_url = batch.document.get("callback_url")
    if callback_url is not None:
        callback_url = webhooks.check_callback_url(callback_url, ctx.settings, tenant)
    priority = parse_priority(batch.document.get("priority"), Priority.BATCH)
    items = [_parse_item(ctx, tenant, index, raw, batch.files, priority) for index, raw in enumerate(raw_items)]
    batch_id = str(uuid.uuid4())
    batch_log = log.bind(batch_id=batch_id, request_id=request_id, tenant=tenant.name)
    valid = [item for item in items if item.error is None]
    try:  # all or none: a batch needing more slots than are free creates nothing (docs/api.md)
        await ctx.deps.status.reserve_in_flight(quotas.quota_of(ctx.settings, tenant), [item.job_id for item in valid])
    except quotas.QuotaExceeded as exc:
        QUOTA_REFUSALS.labels(tenant.name, exc.quota).inc()
        batch_log.info("quota_exceeded", quota=exc.quota, items=len(valid))
        raise
    await ctx.deps.status.batches.reserve(batch_id, tenant.name, [item.job_id for item in valid], callback_url)
    gate = asyncio.Semaphore(ITEM_CONCURRENCY)
    await asyncio.gather(*(_accept(ctx, gate, item, tenant, request_id, batch_id) for item in valid))
    tracked = await _finish(ctx, batch_id, items, batch_log)
    await ctx.deps.status.release_in_flight(tenant.name, [item.job_id for item in valid if not item.accepted
                                                          or item.accepted.replayed])
    statuses = await _replayed_statuses(ctx, items)
    accepted = sum(1 for item in items if item.accepted)
    batch_log.info("batch_accepted", items=len(items), accepted=accepted, refused=len(items) - accepted,
                   tracked=tracked)
    body = {"batch_id": batch_id, "items": [item.result(statuses) for item in items], "accepted": accepted,
            "refused": len(items) - accepted, "tracked": tracked}
    return web.json_response(body, status=200, headers={"Location": f"/api/v1/batches/{batch_id}"})


async def submit_batch(request: web.Request) -> web.Response:
    """``POST /api/v1/jobs/batch`` (JSON or multipart); temp files are always discarded."""
    ctx = context(request)
    batch = await read_batch_request(request, ctx.limits.max_input_bytes, ctx.settings.max_request_bytes, MAX_ITEMS)
    try:
        return await _submit(request, batch)
    finally:
        batch.discard()


async def visible_batch(request: web.Request) -> dict[str, Any]:
    """The batch in the path, if the caller's tenant may see it: another tenant's batch answers
    like one that does not exist (404); an admin sees every tenant's."""
    batch_id, tenant = request.match_info["batch_id"], request[TENANT]
    batch = await context(request).deps.status.batches.get(batch_id) if names.is_job_id(batch_id) else None
    if batch is None or not (tenant.is_admin or batch.get("tenant") == tenant.name):
        raise PixqError(ErrorCode.NOT_FOUND, "no such batch")
    return batch


async def get_batch(request: web.Request) -> web.Response:
    """A batch's progress (pixq.batches.public_batch), for whoever visible_batch lets see it."""
    ctx = context(request)
    batches = ctx.deps.status.batches
    batch = await visible_batch(request)
    batch_id = batch["batch_id"]
    if batches.unannounced(batch):
        try:  # its completer could not publish batch.completed (NATS down): do it now
            await lifecycle.complete_batch(ctx.deps.js, ctx.deps.status, batch_id)
            batch = await batches.get(batch_id) or batch
        except PixqError as exc:
            log.warning("batch_completed_unannounced", batch_id=batch_id, error_code=exc.code.value)
    records = await ctx.deps.status.get_many(batch["job_ids"])
    return web.json_response(render(BatchDocument, public_batch(batch, records)))
