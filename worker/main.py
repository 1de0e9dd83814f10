"""`pixq-worker`: consume jobs until SIGTERM, then drain within WORKER_SHUTDOWN_GRACE and exit 0.

The worker's loops (job consumer, advisory mover, outbox drainer, webhook deliverer, gauge
sampler, bucket-event ingest, outage gate) run in one asyncio.TaskGroup: when any of them fails (or ends while the worker is
not stopping), the others are cancelled (in-flight jobs are handed back to JetStream) and the
process exits 1, so Kubernetes restarts it rather than leaving a half-dead worker running.
"""

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

import structlog
from aiohttp import web
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from pixq import queue
from pixq.deps import Dependencies
from pixq.errors import PixqError, describe
from pixq.limits import Limits
from pixq.presets import load_presets
from pixq.settings import Settings, load_settings
from pixq.sources import SourceFetcher
from pixq.telemetry import configure_logging
from worker.consumer import Consumer
from worker.dead_letter import AdvisoryMover
from worker.execute import JobRunner
from worker.health import create_health_app
from worker.ingest import Ingestor
from worker.imaging.vips_setup import configure_vips
from worker.memory import limit_malloc_arenas
from worker.outage import OutageGate
from pixq.jobs import Priority
from worker.metrics import DLQ_MESSAGES, LANE_BACKLOG, QUEUE_BACKLOG, QUEUE_PENDING
from worker.status_writer import OutboxDrainer, StatusWriter
from worker.webhooks import WebhookDeliverer

log = structlog.get_logger("pixq.worker")

GAUGE_INTERVAL_SECONDS = 5.0
EXIT_LOOP_FAILED = 1


class LoopFailed(Exception):
    """One of the worker's loops failed, or ended while the worker was not stopping."""

    def __init__(self, loop: str, reason: str) -> None:
        super().__init__(f"{loop}: {reason}")
        self.loop = loop
        self.reason = reason


async def sample_queue_gauges(js, stop: asyncio.Event) -> None:
    """Export queue depth, backlog (the sum of both lanes' KEDA lag) and DLQ size for
    dashboards and autoscaling.

    Any failure skips one sample, "not found" too: on a cluster a node can answer "stream not
    found" for seconds about a stream that exists, and the pull loops (queue.Puller) are the ones
    that decide, after GONE_CONFIRM_SECONDS, that a consumer is really gone."""
    while not stop.is_set():
        try:
            lanes = {lane: await queue.consumer_backlog(js, lane) for lane in Priority}
            QUEUE_PENDING.set(sum(pending for pending, _ in lanes.values()))
            QUEUE_BACKLOG.set(sum(pending + ack_pending for pending, ack_pending in lanes.values()))
            for lane, (pending, ack_pending) in lanes.items():
                LANE_BACKLOG.labels(lane.value).set(pending + ack_pending)
            DLQ_MESSAGES.set(await queue.dlq_size(js))
        except NotFoundError as exc:
            log.warning("gauge_sample_failed", error=describe(exc))
        except (NatsError, OSError, asyncio.TimeoutError) as exc:
            log.debug("gauge_sample_failed", error=describe(exc))
        try:
            await asyncio.wait_for(stop.wait(), GAUGE_INTERVAL_SECONDS)
        except asyncio.TimeoutError:
            pass


async def _supervised(name: str, loop: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    try:
        await loop
    except Exception as exc:  # noqa: BLE001 - any failure of a loop ends the process
        log.error("worker_loop_failed", loop=name, error=describe(exc),
                  error_type=type(exc).__name__)
        raise LoopFailed(name, describe(exc)) from exc
    if not stop.is_set():
        log.error("worker_loop_failed", loop=name, error="ended while the worker was not stopping")
        raise LoopFailed(name, "ended while the worker was not stopping")


async def run_loops(loops: dict[str, Coroutine[Any, Any, None]], stop: asyncio.Event) -> None:
    """Run every loop until ``stop``; the first failure cancels the rest and raises LoopFailed."""
    try:
        async with asyncio.TaskGroup() as group:
            for name, loop in loops.items():
                group.create_task(_supervised(name, loop, stop), name=f"worker-{name}")
    except BaseExceptionGroup as failures:
        failed = [exc for exc in failures.exceptions if isinstance(exc, LoopFailed)]
        if not failed:
            raise
        raise failed[0] from None


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set (main() sets it on SIGTERM/SIGINT; tests set it directly).

    Raises LoopFailed when a loop fails, PixqError when start-up fails."""
    configure_vips(settings.vips_concurrency, settings.vips_cache_max_ops)
    deps = await Dependencies.open(settings, client_name="pixq-worker")
    health = None
    runner = None
    try:
        await queue.ensure_worker_consumers(deps.js, settings)
        js, status = deps.js, deps.status
        writer = StatusWriter(status, js)
        limits = Limits.from_settings(settings)
        runner = JobRunner(deps.storage, limits, settings.worker_concurrency, settings.job_timeout,
                           sources=SourceFetcher(settings, limits))
        gate = OutageGate(deps.check, settings.outage_hold_max)
        await gate.probe()  # a worker started during an outage takes no job until it ends
        consumer = Consumer(settings, js, status, writer, runner, gate)
        health = web.AppRunner(create_health_app(lambda: consumer.last_fetch, gate.probe), access_log=None)
        await health.setup()
        if settings.metrics_port:
            await web.TCPSite(health, "0.0.0.0", settings.metrics_port).start()

        log.info("worker_started", concurrency=settings.worker_concurrency, metrics_port=settings.metrics_port,
                 storage=settings.storage_type, max_retries=settings.max_retries, job_timeout=settings.job_timeout,
                 outage_hold_max=settings.outage_hold_max)
        await run_loops({"consumer": consumer.run(stop), "advisory_mover": AdvisoryMover(js, writer).run(stop),
                         "outbox_drainer": OutboxDrainer(js, status).run(stop),
                         "gauges": sample_queue_gauges(js, stop), "outage_gate": gate.run(stop),
                         "webhooks": WebhookDeliverer(settings, js, status, deps.storage).run(stop),
                         "ingest": Ingestor(settings, load_presets(settings), deps.nc, js, status).run(stop)},
                        stop)
    finally:
        if runner is not None:
            runner.close()
        await deps.close()
        if health is not None:
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
    except LoopFailed as exc:
        log.error("worker_exiting", reason="loop_failed", loop=exc.loop, error=exc.reason)
        raise SystemExit(EXIT_LOOP_FAILED) from None


if __name__ == "__main__":
    main()
