"""The app factory: dependencies are opened on startup and closed on cleanup."""

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from api.context import CONTEXT, ApiContext
from api.middleware import IN_FLIGHT, InFlight, authenticate, observe
from api.routes import setup_routes
from pixq import queue
from pixq.limits import Limits
from pixq.settings import Settings
from pixq.status import StatusStore
from pixq.storage import make_storage

log = structlog.get_logger("pixq.api")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[observe, authenticate], client_max_size=1024 * 1024)
    app[IN_FLIGHT] = InFlight()

    async def dependencies(app: web.Application) -> AsyncIterator[None]:
        if not settings.api_keys:
            log.warning("api_open", reason="API_KEYS is unset: /api/v1 accepts requests without a key")
        storage = make_storage(settings)
        await storage.ensure_ready()
        status = StatusStore.from_url(settings.redis_url)
        nc = await queue.connect(settings, name="pixq-api")
        js = nc.jetstream()
        await queue.ensure_topology(js, settings)
        app[CONTEXT] = ApiContext(settings=settings, limits=Limits.from_settings(settings), nc=nc,
                                  js=js, status=status, storage=storage)
        log.info("api_started", host=settings.api_host, port=settings.api_port,
                 storage=settings.storage_type)
        yield
        await queue.close(nc)
        await status.close()

    app.cleanup_ctx.append(dependencies)
    setup_routes(app)
    return app
