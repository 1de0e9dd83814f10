"""`pixq-worker`: consume jobs until SIGTERM, then drain within WORKER_SHUTDOWN_GRACE and exit 0.

The worker's loops (job consumer, advisory mover, outbox drainer, webhook deliverer, gauge
sampler, bucket-event ingest, outage gate) run in one asyncio.TaskGroup: when any of them fails (or ends while the worker is
not stopping), the others are cancelled (in-flight jobs are handed back to JetStream) and the
process exits 1, so Kubernetes restarts it rather than leaving a half-dead worker running.
"""

import asyncio
import signal
from collections.abc import Awaitable, Coroutine
from typing import Any

import structlog
from aiohttp import web
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from pixq import eventloop, queue
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
from worker.memory import configure_malloc
from worker.outage import OutageGate
from worker.reuse import ReuseIndex
from pixq.jobs import Priority
from worker.metrics import DLQ_MESSAGES, LANE_BACKLOG, QUEUE_BACKLOG, QUEUE_PENDING
from worker.status_writer import OutboxDrainer, StatusWriter
from worker.webhooks import WebhookDeliverer

log = structlog.get_logger("pixq.worker")

GAUGE_INTERVAL_SECONDS = 5.0
EXIT_LOOP_FAILED = 1
CANCEL_SECONDS = 10.0
"""How long the other loops get to end after one failed (each hands its work back at once)."""
SHUTDOWN_STEP_SECONDS = 10.0
"""Bound of each shutdown step (NATS and Redis close, health server stop)."""
HEALTH_SHUTDOWN_SECONDS = 1.0
"""How long a /health or /metrics request in progress may hold the health server's stop (aiohttp
waits 60 s by default, twice: a probe in flight at exit could hold the process that long)."""


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
    """Run every loop until ``stop``; the first failure cancels the rest and raises LoopFailed.

    The others get CANCEL_SECONDS to end once cancelled; one that does not is logged with the
    line it is stuck on (worker_loop_not_cancelled) and left behind, so the process still exits
    and is restarted: a half-dead worker that never exits is what this supervision prevents.
    (A clean-clone run once saw a worker exit 45 s after its loop failed; nothing said where.)"""
    tasks = [asyncio.create_task(_supervised(name, loop, stop), name=f"worker-{name}")
             for name, loop in loops.items()]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        failed = [task for task in tasks if task.done() and not task.cancelled() and task.exception()]
        await _cancel_loops([task for task in tasks if not task.done()])
    if failed:
        raise failed[0].exception()  # type: ignore[misc]  # LoopFailed, or a BaseException


async def _cancel_loops(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=CANCEL_SECONDS)
    for task in pending:
        frames = task.get_stack(limit=1)
        where = f"{frames[-1].f_code.co_filename}:{frames[-1].f_lineno}" if frames else "?"
        log.error("worker_loop_not_cancelled", loop=task.get_name(), seconds=CANCEL_SECONDS, where=where)


async def _bounded(step: str, action: Awaitable[None]) -> None:
    """One shutdown step, at most SHUTDOWN_STEP_SECONDS: the process must exit either way."""
    try:
        await asyncio.wait_for(action, SHUTDOWN_STEP_SECONDS)
    except asyncio.TimeoutError:
        log.error("worker_shutdown_step_timed_out", step=step, seconds=SHUTDOWN_STEP_SECONDS)


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
        writer = StatusWriter(status, js, deps.nc)
        limits = Limits.from_settings(settings)
        runner = JobRunner(deps.storage, limits, settings.worker_concurrency, settings.job_timeout,
                           sources=SourceFetcher(settings, limits),
                           reuse=ReuseIndex(status.client, status.job_ttl) if settings.reuse_outputs else None)
        gate = OutageGate(deps.check, settings.outage_hold_max)
        await gate.probe()  # a worker started during an outage takes no job until it ends
        consumer = Consumer(settings, js, status, writer, runner, gate)
        health = web.AppRunner(create_health_app(lambda: consumer.last_fetch, gate.probe), access_log=None,
                               shutdown_timeout=HEALTH_SHUTDOWN_SECONDS)
        await health.setup()
        if settings.metrics_port:
            await web.TCPSite(health, "0.0.0.0", settings.metrics_port).start()

        log.info("worker_started", concurrency=settings.worker_concurrency, metrics_port=settings.metrics_port,
                 storage=settings.storage_type, max_retries=settings.max_retries, job_timeout=settings.job_timeout,
                 outage_hold_max=settings.outage_hold_max, event_loop=eventloop.running())
        await run_loops({"consumer": consumer.run(stop), "advisory_mover": AdvisoryMover(js, writer).run(stop),
                         "outbox_drainer": OutboxDrainer(js, status).run(stop),
                         "gauges": sample_queue_gauges(js, stop), "outage_gate": gate.run(stop),
                         "webhooks": WebhookDeliverer(settings, js, status, deps.storage).run(stop),
                         "ingest": Ingestor(settings, load_presets(settings), deps.nc, js, status).run(stop)},
                        stop)
    finally:
        if runner is not None:
            runner.close()
        await _bounded("dependencies_close", deps.close())
        if health is not None:
            await _bounded("health_server_stop", health.cleanup())
        log.info("worker_stopped")


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, service="pixq-worker")
    configure_malloc()
    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    try:
        eventloop.run(run(), settings.event_loop)
    except PixqError as exc:
        log.error("worker_start_failed", error_code=exc.code.value, error=exc.message)
        raise SystemExit(1) from None
    except LoopFailed as exc:
        log.error("worker_exiting", reason="loop_failed", loop=exc.loop, error=exc.reason)
        raise SystemExit(EXIT_LOOP_FAILED) from None


if __name__ == "__main__":
    main()
