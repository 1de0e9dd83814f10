"""Webhook delivery attempts of a job or a batch: what a client checks when a webhook did not arrive.

Each attempt, oldest first, as the workers recorded it (pixq.webhooks, worker.webhooks):
``{webhook_id, event_type, url, attempt, at, status_code, outcome, error, duration_ms,
next_attempt_at}`` with ``outcome`` one of delivered, retrying, failed, disabled, refused.
Another tenant's job or batch answers 404, exactly like one that does not exist.
"""

from aiohttp import web

from api.context import context
from api.handlers.batches import visible_batch
from api.handlers.jobs import visible_job
from pixq.webhooks import WebhookStore


def _store(request: web.Request) -> WebhookStore:
    status = context(request).deps.status
    return WebhookStore(status.client, status.job_ttl)


async def job_deliveries(request: web.Request) -> web.Response:
    record = await visible_job(request)
    deliveries = await _store(request).deliveries(record["job_id"])
    return web.json_response({"job_id": record["job_id"], "deliveries": deliveries})


async def batch_deliveries(request: web.Request) -> web.Response:
    batch = await visible_batch(request)
    deliveries = await _store(request).deliveries(batch["batch_id"])
    return web.json_response({"batch_id": batch["batch_id"], "deliveries": deliveries})
