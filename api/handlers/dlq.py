"""Admin routes over the dead-letter queue (admin tenants only: api.middleware.authenticate)."""

from aiohttp import web

from api.context import context
from api.params import int_query
from pixq import dlq, names
from pixq.errors import ErrorCode, PixqError

MAX_PAGE = 500


def _dead_id(request: web.Request) -> str:
    """The DLQ id in the path, checked before use so no wildcard or dot reaches a NATS subject."""
    job_id = request.match_info["job_id"]
    if not names.is_dlq_id(job_id):
        raise PixqError(ErrorCode.NOT_FOUND, "no such dead-lettered job")
    return job_id


def _matches(entry: dict, request: web.Request) -> bool:
    return all(entry.get(name) == request.query[name] for name in ("error_code", "type") if name in request.query)


async def list_dead(request: web.Request) -> web.Response:
    limit = int_query(request, "limit", 50, 0, MAX_PAGE)
    offset = int_query(request, "offset", 0, 0, 10**9)
    entries = [entry for entry in await dlq.list_entries(context(request).deps.js) if _matches(entry, request)]
    items = [dlq.summary(entry) for entry in entries[offset:offset + limit]]
    return web.json_response({"items": items, "total": len(entries), "limit": limit, "offset": offset})


async def show_dead(request: web.Request) -> web.Response:
    return web.json_response(await dlq.get_entry(context(request).deps.js, _dead_id(request)))


async def replay_one(request: web.Request) -> web.Response:
    ctx = context(request)
    return web.json_response(await dlq.replay(ctx.deps.js, ctx.deps.status, _dead_id(request)), status=202)


async def replay_many(request: web.Request) -> web.Response:
    """Replay every entry, or those matching ?error_code= and/or ?type=."""
    ctx = context(request)
    replayed, failed = [], []
    for entry in await dlq.list_entries(ctx.deps.js):
        if not _matches(entry, request):
            continue
        try:
            replayed.append((await dlq.replay(ctx.deps.js, ctx.deps.status, entry["job_id"]))["job_id"])
        except PixqError as exc:
            failed.append({"job_id": entry.get("job_id"), "code": exc.code.value, "message": exc.message})
    return web.json_response({"replayed": replayed, "failed": failed}, status=202)


async def purge_one(request: web.Request) -> web.Response:
    job_id = _dead_id(request)
    await dlq.purge(context(request).deps.js, job_id)
    return web.json_response({"job_id": job_id, "purged": True})


async def purge_all(request: web.Request) -> web.Response:
    return web.json_response({"purged": await dlq.purge_all(context(request).deps.js)})
