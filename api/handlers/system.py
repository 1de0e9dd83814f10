"""Health, metrics and signed local downloads."""

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.context import context
from pixq.errors import ErrorCode, PixqError
from pixq.signing import verify
from pixq.storage import LocalStorage

READY_CHECK_TIMEOUT = 2.0


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 only while NATS, Redis and storage all answer; the body says which one does not."""
    ctx = context(request)

    async def check(coro) -> bool:
        try:
            return bool(await asyncio.wait_for(coro, READY_CHECK_TIMEOUT))
        except Exception:
            return False

    async def nats_ok() -> bool:
        return ctx.nc.is_connected

    redis_ok, storage_ok, queue_ok = await asyncio.gather(
        check(ctx.status.ping()), check(ctx.storage.ping()), check(nats_ok()))
    checks = {"nats": queue_ok, "redis": redis_ok, "storage": storage_ok}
    healthy = all(checks.values())
    return web.json_response({"status": "ready" if healthy else "unavailable", "checks": checks},
                             status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def download(request: web.Request) -> web.StreamResponse:
    """Serve a local-storage object behind a signed, expiring link."""
    ctx = context(request)
    if not isinstance(ctx.storage, LocalStorage):
        raise PixqError(ErrorCode.NOT_FOUND, "downloads are served by object storage")
    key = request.match_info["key"]
    if not verify(ctx.settings.signing_key(), key, request.query.get("expires", ""), request.query.get("sig", "")):
        raise PixqError(ErrorCode.FORBIDDEN, "link is invalid or expired")
    path = ctx.storage.path_of(key)
    if not path.is_file():
        raise PixqError(ErrorCode.NOT_FOUND, "object not found")
    return web.FileResponse(path)
