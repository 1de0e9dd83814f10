"""The app factory: dependencies are opened on startup and closed on cleanup."""

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from api.context import CONTEXT, ApiContext
from api.middleware import IN_FLIGHT, InFlight, authenticate, observe
from api.routes import setup_routes
from pixq.deps import Dependencies
from pixq.limits import Limits
from pixq.settings import Settings

log = structlog.get_logger("pixq.api")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[observe, authenticate], client_max_size=1024 * 1024)
    app[IN_FLIGHT] = InFlight()

    async def dependencies(app: web.Application) -> AsyncIterator[None]:
        if not settings.api_keys:
            log.warning("api_open", reason="API_KEYS is unset: /api/v1 accepts requests without a key")
        deps = await Dependencies.open(settings, client_name="pixq-api")
        app[CONTEXT] = ApiContext(settings=settings, limits=Limits.from_settings(settings), deps=deps)
        log.info("api_started", host=settings.api_host, port=settings.api_port,
                 storage=settings.storage_type)
        yield
        await deps.close()

    app.cleanup_ctx.append(dependencies)
    setup_routes(app)
    return app
