"""`pixq-worker`: consume jobs until SIGTERM, then drain within WORKER_SHUTDOWN_GRACE and exit 0."""

import asyncio
import signal

import structlog
from aiohttp import web

from pixq import queue
from pixq.deps import Dependencies
from pixq.errors import PixqError
from pixq.limits import Limits
from pixq.settings import Settings, load_settings
from pixq.telemetry import configure_logging
from worker.consumer import Consumer
from worker.dead_letter import AdvisoryMover
from worker.execute import JobRunner
from worker.health import create_health_app
from worker.imaging.vips_setup import configure_vips
from worker.memory import limit_malloc_arenas
from worker.metrics import DLQ_MESSAGES, QUEUE_PENDING
from worker.status_writer import OutboxDrainer, StatusWriter

log = structlog.get_logger("pixq.worker")

GAUGE_INTERVAL_SECONDS = 5.0


async def sample_queue_gauges(js, stop: asyncio.Event) -> None:
    """Export queue depth and DLQ size for dashboards and the Prometheus-adapter HPA."""
    while not stop.is_set():
        try:
            QUEUE_PENDING.set(await queue.consumer_pending(js))
            DLQ_MESSAGES.set(await queue.dlq_size(js))
        except Exception as exc:
            log.debug("gauge_sample_failed", error=str(exc))
        try:
            await asyncio.wait_for(stop.wait(), GAUGE_INTERVAL_SECONDS)
        except asyncio.TimeoutError:
            pass


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set (main() sets it on SIGTERM/SIGINT; tests set it directly)."""
    configure_vips(settings.vips_concurrency, settings.vips_cache_max_ops)
    deps = await Dependencies.open(settings, client_name="pixq-worker")
    js, status = deps.js, deps.status
    writer = StatusWriter(status, js)
    runner = JobRunner(deps.storage, Limits.from_settings(settings), settings.worker_concurrency, settings.job_timeout)
    consumer = Consumer(settings, js, status, writer, runner)
    health = web.AppRunner(create_health_app(lambda: consumer.last_fetch, deps.check), access_log=None)
    await health.setup()
    if settings.metrics_port:
        await web.TCPSite(health, "0.0.0.0", settings.metrics_port).start()

    log.info("worker_started", concurrency=settings.worker_concurrency, metrics_port=settings.metrics_port,
             storage=settings.storage_type, max_retries=settings.max_retries, job_timeout=settings.job_timeout)
    try:
        await asyncio.gather(consumer.run(stop), AdvisoryMover(js, writer).run(stop),
                             OutboxDrainer(js, status).run(stop), sample_queue_gauges(js, stop))
    finally:
        runner.close()
        await deps.close()
        await health.cleanup()
        log.info("worker_stopped")


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, service="pixq-worker")
    limit_malloc_arenas()
    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(run())
    except PixqError as exc:
        log.error("worker_start_failed", error_code=exc.code.value, error=exc.message)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
