"""The app factory: tenants are loaded at once (a bad TENANTS_FILE stops the process);
dependencies are opened on startup and closed on cleanup."""

import ipaddress
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from api.chores import chores
from api.context import CONTEXT, ApiContext
from api.events_hub import EVENTS_HUB, EventHub, end_streams
from api.handlers import images
from api.metrics import seed_series
from api.middleware import IN_FLIGHT, InFlight, authenticate, observe
from api.ratelimit import add_headers, limit_by_ip, limit_by_tenant, rate_limiter
from api.routes import setup_routes
from pixq import eventloop
from pixq.deps import Dependencies
from pixq.limits import Limits
from pixq.jobs import JobType
from pixq.settings import Settings, fail_config
from pixq.tenants import TenantDirectory, load_directory

log = structlog.get_logger("pixq.api")

JSON_BODY_MAX_BYTES = 1024 * 1024
"""Largest body read into memory at once (JSON); MAX_REQUEST_BYTES may lower it, not raise it."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_open_mode(settings: Settings, tenants: TenantDirectory) -> None:
    """With no key at all the API is open (the `make up` default): allowed on loopback, or
    elsewhere only when API_ALLOW_OPEN says so, so an open API is never an accident."""
    if not tenants.open:
        return
    if not _is_loopback(settings.api_host) and not settings.api_allow_open:
        raise fail_config("API_HOST", f"{settings.api_host} is not loopback and no API key is configured "
                          "(TENANTS_FILE, API_KEYS, ADMIN_API_KEYS); set one, or API_ALLOW_OPEN=true")
    log.warning("api_open", reason="no API key configured: /api/v1 and the DLQ routes accept requests "
                "without a key, as tenant 'default'", host=settings.api_host)


def create_app(settings: Settings) -> web.Application:
    tenants = load_directory(settings)
    _check_open_mode(settings, tenants)
    # client_max_size bounds bodies read whole (JSON submits and batches): 1 MiB is ample for
    # 100 items, and never more than MAX_REQUEST_BYTES. Multipart bodies are streamed and
    # counted by their readers instead (api.uploads).
    # The IP limit runs before authentication (key guessing is limited too), the tenant's after it.
    app = web.Application(middlewares=[observe, limit_by_ip, authenticate, limit_by_tenant],
                          client_max_size=min(JSON_BODY_MAX_BYTES, settings.max_request_bytes))
    app[IN_FLIGHT] = InFlight()

    async def dependencies(app: web.Application) -> AsyncIterator[None]:
        deps = await Dependencies.open(settings, client_name="pixq-api")
        app[CONTEXT] = ApiContext(settings=settings, limits=Limits.from_settings(settings), deps=deps,
                                  tenants=tenants)
        # Reads PIXQ_EVENTS only while a stream, long-poll or /img request listens (api.events_hub).
        hub = EventHub(deps.js, linger=settings.events_hub_linger)
        app[EVENTS_HUB] = hub
        log.info("api_started", host=settings.api_host, port=settings.api_port,
                 storage=settings.storage_type, tenants=len(tenants.tenants), event_loop=eventloop.running())
        yield
        await hub.stop()
        await deps.close()

    app.cleanup_ctx.append(dependencies)
    app.cleanup_ctx.append(chores)  # sweeps and the requeue round (api.chores): after the dependencies
    app.cleanup_ctx.append(rate_limiter(settings))
    app.on_response_prepare.append(add_headers)  # RateLimit, RateLimit-Policy, Retry-After
    # Before aiohttp waits for open requests to finish: SSE streams end, long-polls answer.
    app.on_shutdown.append(end_streams)
    images.setup(app, settings, tenants)  # /img: checks IMG_* at start
    setup_routes(app)
    seed_series(app, tenants.names(), [job_type.value for job_type in JobType])
    return app
