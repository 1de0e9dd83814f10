"""Following jobs and batches to their end: over SSE when the server has it, polling otherwise.

A job is followed with ``AsyncClient.job_events`` (which resumes a dropped connection with
Last-Event-ID, so no event is lost or repeated, and gives up after StreamPolicy.reconnects
failures without a new event in between). A server without the route (404/501: an older pixq)
is polled instead.

Batches are followed with ``GET /api/v1/batches/{id}``, and the tenant's event stream
(``GET /api/v1/events?status=completed,failed``) only says *when* to ask again: the counts
always come from the batch document, so a missed event costs a delay, never a wrong count.
With the stream, a batch is asked for at most every MIN_REFRESH_SECONDS while its jobs
finish, and every SAFETY_POLL_SECONDS otherwise; without it, every BATCH_POLL_SECONDS.
"""

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from pixq.cli_client import CliError, plain
from pixq.client import AsyncClient, EventsUnsupported, StreamLost
from pixq.schemas import BatchDocument

TERMINAL = ("completed", "failed")
POLL_SECONDS = 0.5
"""Polling a job (servers without SSE)."""
BATCH_POLL_SECONDS = 1.0
SAFETY_POLL_SECONDS = 15.0
MIN_REFRESH_SECONDS = 0.5
CONNECT_WAIT_SECONDS = 5.0
"""How long batch following waits for the event stream to open before its first GET."""

Emit = Callable[[dict[str, Any]], None]


async def follow_job(client: AsyncClient, job_id: str, emit: Emit | None = None) -> dict[str, Any]:
    """Call ``emit`` with each event envelope of the job until a terminal one; return its
    status document (as the event carries it)."""
    try:
        async with contextlib.aclosing(client.job_events(job_id)) as events:
            async for event in events:
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
        raise CliError(f"job {job_id}: {exc}") from None
    raise CliError(f"the event stream of job {job_id} ended before the job did")


async def poll_job(client: AsyncClient, job_id: str, emit: Emit | None = None) -> dict[str, Any]:
    """The fallback: GET the job until it is terminal, emitting an envelope per change."""
    seen = None
    while True:
        status = plain(await client.get_job(job_id))
        if emit and (status["status"], status.get("attempts")) != seen:
            emit({"type": f"job.{status['status']}", "data": status})
        seen = (status["status"], status.get("attempts"))
        if status["status"] in TERMINAL:
            return status
        await asyncio.sleep(POLL_SECONDS)


def batch_done(batch: BatchDocument) -> bool:
    """Every listed job is terminal (a replayed job is listed but not what completes a batch)."""
    counts = batch.counts
    return counts.get("completed", 0) + counts.get("failed", 0) + counts.get("expired", 0) >= batch.total


async def follow_batches(client: AsyncClient, batch_ids: list[str],
                         on_update: Callable[[dict[str, BatchDocument]], None]) -> dict[str, BatchDocument]:
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
        try:
            async with contextlib.aclosing(client.tenant_events(status="completed,failed", on_open=on_open)) as events:
                async for event in events:
                    if _concerns(event.data, wanted):
                        changed.set()
        except (EventsUnsupported, StreamLost):
            return  # polling it is
        finally:
            live = False
            opened.set()

    listener = asyncio.create_task(listen())
    try:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(opened.wait(), CONNECT_WAIT_SECONDS)
        documents: dict[str, BatchDocument] = {}
        pending = list(batch_ids)
        while pending:
            changed.clear()  # before the GETs: an event arriving during them asks for another round
            for batch_id in pending:
                documents[batch_id] = await client.get_batch(batch_id)
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
