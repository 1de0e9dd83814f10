"""Health, metrics and signed local downloads."""

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.context import context
from pixq.errors import ErrorCode, PixqError
from pixq.signing import verify
from pixq.storage import LocalStorage

async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 only while NATS, Redis and storage all answer; the body says which one does not."""
    checks = await context(request).deps.check()
    healthy = all(checks.values())
    return web.json_response({"status": "ready" if healthy else "unavailable", "checks": checks},
                             status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def download(request: web.Request) -> web.StreamResponse:
    """Serve a local-storage object behind a signed, expiring link."""
    ctx = context(request)
    if not isinstance(ctx.deps.storage, LocalStorage):
        raise PixqError(ErrorCode.NOT_FOUND, "downloads are served by object storage")
    key = request.match_info["key"]
    if not verify(ctx.settings.signing_key(), key, request.query.get("expires", ""), request.query.get("sig", "")):
        raise PixqError(ErrorCode.FORBIDDEN, "link is invalid or expired")
    try:
        path = ctx.deps.storage.path_of(key)
        found = path.is_file()
    except (OSError, ValueError):  # a name too long for the filesystem, a NUL byte, a lone surrogate
        found = False
    if not found:
        raise PixqError(ErrorCode.NOT_FOUND, "object not found")
    return web.FileResponse(path)
