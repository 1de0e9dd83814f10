"""`pixq-api`: serve the HTTP API until SIGTERM/SIGINT, then drain.

On a signal the listener closes first (no new connections; Kubernetes has already taken the
pod out of its Service), requests in flight, including uploads still arriving, get up to
API_SHUTDOWN_GRACE to finish, and only then are connections closed and dependencies released.
(aiohttp's own run_app stops reading request bodies as soon as shutdown starts.)
"""

import asyncio
import signal

import structlog
from aiohttp import web

from api.app import create_app
from api.events_hub import end_streams
from api.middleware import IN_FLIGHT
from pixq import eventloop
from pixq.settings import Settings, load_settings
from pixq.telemetry import configure_logging

log = structlog.get_logger("pixq.api")


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(runner.server, settings.api_host, settings.api_port, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("api_listening", host=settings.api_host, port=settings.api_port)
    await stop.wait()

    listener.close()
    await end_streams(app)  # SSE streams end and long-polls answer now: clients reconnect elsewhere
    in_flight = app[IN_FLIGHT]
    log.info("api_draining", in_flight=in_flight.count, grace_seconds=settings.api_shutdown_grace)
    try:
        await asyncio.wait_for(in_flight.idle.wait(), settings.api_shutdown_grace)
    except asyncio.TimeoutError:
        log.warning("api_drain_timeout", in_flight=in_flight.count)
    await runner.cleanup()
    log.info("api_stopped")


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, service="pixq-api")
    eventloop.run(serve(settings), settings.event_loop)


if __name__ == "__main__":
    main()
