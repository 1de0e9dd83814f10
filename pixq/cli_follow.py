"""Following jobs and batches to their end: over SSE when the server has it, polling otherwise.

A job is followed on ``GET /api/v1/jobs/{id}/events``; a dropped connection is resumed with
Last-Event-ID (so no event is lost or repeated), up to RECONNECT_ATTEMPTS failures without a
new event in between.
A server without the route (404/501: an older pixq) is polled instead.

Batches are followed with ``GET /api/v1/batches/{id}``, and the tenant's event stream
(``GET /api/v1/events?status=completed,failed``) only says *when* to ask again: the counts
always come from the batch document, so a missed event costs a delay, never a wrong count.
With the stream, a batch is asked for at most every MIN_REFRESH_SECONDS while its jobs
finish, and every SAFETY_POLL_SECONDS otherwise; without it, every POLL_SECONDS.
"""

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from pixq.cli_client import CliError, Client, EventsUnsupported, StreamLost

TERMINAL = ("completed", "failed")
RECONNECT_ATTEMPTS = 5
POLL_SECONDS = 0.5
"""Polling a job (servers without SSE)."""
BATCH_POLL_SECONDS = 1.0
SAFETY_POLL_SECONDS = 15.0
MIN_REFRESH_SECONDS = 0.5
CONNECT_WAIT_SECONDS = 5.0
"""How long batch following waits for the event stream to open before its first GET."""

Emit = Callable[[dict[str, Any]], None]


def _backoff(failures: int) -> float:
    return min(5.0, 0.2 * 2 ** failures)


async def follow_job(client: Client, job_id: str, emit: Emit | None = None) -> dict[str, Any]:
    """Call ``emit`` with each event envelope of the job until a terminal one; return its
    status document (as the event carries it)."""
    last_id: str | None = None
    failures = 0
    while True:
        try:
            async with contextlib.aclosing(client.events(f"/api/v1/jobs/{job_id}/events", last_id)) as stream:
                async for event in stream:
                    if event.id is not None and event.id == last_id:
                        continue  # already shown: a resume never repeats an event
                    if event.id is not None:
                        last_id, failures = event.id, 0  # progress: the reconnect budget starts over
                    if not event.event.startswith("job."):
                        continue  # e.g. "reset": the stream goes on from the job's current status
                    envelope = event.json()
                    if emit:
                        emit(envelope)
                    if envelope.get("data", {}).get("status") in TERMINAL:
                        return envelope["data"]
        except EventsUnsupported:
            return await poll_job(client, job_id, emit)
        except StreamLost as exc:
            lost = str(exc)
        failures += 1
        if failures > RECONNECT_ATTEMPTS:
            raise CliError(f"lost the event stream of job {job_id} ({lost}) {failures} times in a row")
        await asyncio.sleep(_backoff(failures))


async def poll_job(client: Client, job_id: str, emit: Emit | None = None) -> dict[str, Any]:
    """The fallback: GET the job until it is terminal, emitting an envelope per change."""
    seen = None
    while True:
        status = await client.call("GET", f"/api/v1/jobs/{job_id}")
        if emit and (status["status"], status.get("attempts")) != seen:
            emit({"type": f"job.{status['status']}", "data": status})
        seen = (status["status"], status.get("attempts"))
        if status["status"] in TERMINAL:
            return status
        await asyncio.sleep(POLL_SECONDS)


def batch_done(batch: dict[str, Any]) -> bool:
    """Every listed job is terminal (a replayed job is listed but not what completes a batch)."""
    counts = batch["counts"]
    return counts.get("completed", 0) + counts.get("failed", 0) + counts.get("expired", 0) >= batch["total"]


async def follow_batches(client: Client, batch_ids: list[str],
                         on_update: Callable[[dict[str, dict[str, Any]]], None]) -> dict[str, dict[str, Any]]:
    """GET each batch until all are done, calling ``on_update`` with every batch's latest document."""
    wanted = set(batch_ids)
    changed, opened = asyncio.Event(), asyncio.Event()
    live = False

    def on_open() -> None:
        nonlocal live
        live = True
        opened.set()

    async def listen() -> None:
        nonlocal live
        last_id, failures = None, 0
        try:
            while failures <= RECONNECT_ATTEMPTS:
                try:
                    async with contextlib.aclosing(client.events("/api/v1/events", last_id, on_open,
                                                                 status="completed,failed")) as stream:
                        async for event in stream:
                            last_id, failures = event.id or last_id, 0
                            if _concerns(event.data, wanted):
                                changed.set()
                except EventsUnsupported:
                    return
                except StreamLost:
                    live = False
                failures += 1
                await asyncio.sleep(_backoff(failures))
        finally:
            live = False
            opened.set()

    listener = asyncio.create_task(listen())
    try:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(opened.wait(), CONNECT_WAIT_SECONDS)
        documents: dict[str, dict[str, Any]] = {}
        pending = list(batch_ids)
        while pending:
            changed.clear()  # before the GETs: an event arriving during them asks for another round
            for batch_id in pending:
                documents[batch_id] = await client.call("GET", f"/api/v1/batches/{batch_id}")
            on_update(documents)
            pending = [batch_id for batch_id in pending if not batch_done(documents[batch_id])]
            if pending:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), SAFETY_POLL_SECONDS if live else BATCH_POLL_SECONDS)
                await asyncio.sleep(MIN_REFRESH_SECONDS if live else 0)  # coalesce a burst of events
        return documents
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


def _concerns(data: str, batch_ids: set[str]) -> bool:
    try:
        body = json.loads(data).get("data") or {}
    except (ValueError, AttributeError):
        return False
    return isinstance(body, dict) and body.get("batch_id") in batch_ids
