"""The worker's small HTTP server on METRICS_PORT: /metrics, /health/live, /health/ready.

Readiness is the outage gate's probe (worker.outage): 503 exactly while the worker takes no
job because a dependency is down. Liveness only asks whether the pull loop comes round; a loop
paused by the gate still does, every few seconds, so an outage never reads as a wedged worker."""

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

STALL_SECONDS = 60.0
"""Liveness fails when the pull loop has not come round for this long (a wedged event loop)."""


def create_health_app(last_loop: Callable[[], float], ready: Callable[[], Awaitable[dict[str, bool]]]) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def live(request: web.Request) -> web.Response:
        stalled = time.monotonic() - last_loop() > STALL_SECONDS
        return web.json_response({"status": "stalled" if stalled else "ok"}, status=503 if stalled else 200)

    async def readiness(request: web.Request) -> web.Response:
        checks = await ready()
        healthy = all(checks.values())
        return web.json_response({"status": "ready" if healthy else "unavailable", "checks": checks},
                                 status=200 if healthy else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", readiness)
    return app
