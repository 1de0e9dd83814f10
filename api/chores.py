"""The API's housekeeping, one cleanup_ctx: the chores every API runs beside serving.

* expired unclaimed direct uploads, with local storage (pixq.storage.sweep; on S3 a lifecycle
  rule expires them, docs/inputs.md);
* inputs of submits that never finished: their API was killed between storing the upload and
  recording its job (pixq.pending_inputs);
* jobs recorded and maybe never published: their API was killed between recording the job
  and publishing it (pixq.intake.requeue_unpublished).

In the API, not the worker: the API is what writes ``uploads/`` and records jobs, one API serves
many workers on a local-storage host (one sweeper, not one per worker), and a worker's loops are
fatal when they fail, which housekeeping should never be. Registered after the dependencies,
so the chores stop before those close.
"""

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from api.context import CONTEXT, ApiContext
from api.metrics import UNPUBLISHED_JOBS_PUBLISHED
from pixq import housekeeping, intake, pending_inputs
from pixq.errors import PixqError
from pixq.storage import LocalStorage
from pixq.storage.sweep import run_upload_sweeper


async def chores(app: web.Application) -> AsyncIterator[None]:
    ctx: ApiContext = app[CONTEXT]
    settings, deps = ctx.settings, ctx.deps
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(pending_inputs.run_sweeper(deps.status, deps.storage, settings.pending_input_grace,
                                                       settings.pending_input_sweep_interval, stop),
                            name="pixq-pending-input-sweeper"),
        asyncio.create_task(housekeeping.every(settings.requeue_check_interval, stop, lambda: requeue_round(ctx),
                                               "requeue_check", (PixqError,)),
                            name="pixq-requeue-check"),
    ]
    if isinstance(deps.storage, LocalStorage):
        tasks.append(asyncio.create_task(run_upload_sweeper(deps.storage, settings.upload_retention,
                                                            settings.upload_sweep_interval, stop),
                                         name="pixq-upload-sweeper"))
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def requeue_round(ctx: ApiContext) -> None:
    """One round of pixq.intake.requeue_unpublished, counted."""
    round_ = await intake.requeue_unpublished(ctx.deps.nc, ctx.deps.js, ctx.deps.status,
                                              ctx.settings.requeue_check_after)
    UNPUBLISHED_JOBS_PUBLISHED.inc(round_.published)
