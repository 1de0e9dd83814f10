"""Every applied status change becomes one event in PIXQ_EVENTS, in the order the status moved.

Read straight from JetStream with nats-py, as the SSE hub and the webhook deliverer read it.
"""

import asyncio
import json
from collections.abc import Callable

import nats
import pytest
from nats.js.api import RetentionPolicy

from pixq import names
from pixq.storage import make_storage
from tests.conftest import running_api, running_worker
from tests.helpers import form, make_image, wait_for_status

USER = {"Authorization": "Bearer user-secret"}
ADMIN = {"Authorization": "Bearer admin-secret"}
KEYS = dict(api_keys={"user-secret": "acme"}, admin_api_keys={"admin-secret": "ops"})


async def read_events(nats_url: str, subject: str, done: Callable[[list[dict]], bool],
                      timeout: float = 30.0) -> list[tuple[int, dict]]:
    """``(stream sequence, event)`` for every message on ``subject`` from the first, until ``done``."""
    nc = await nats.connect(nats_url)
    try:
        subscription = await nc.jetstream().subscribe(subject, ordered_consumer=True)
        read: list[tuple[int, dict]] = []
        async with asyncio.timeout(timeout):
            while not done([event for _, event in read]):
                message = await subscription.next_msg(timeout=timeout)
                read.append((message.metadata.sequence.stream, json.loads(message.data)))
        return read
    finally:
        await nc.close()


def terminal_count(n: int) -> Callable[[list[dict]], bool]:
    return lambda events: sum(event["type"] in ("job.completed", "job.failed") for event in events) >= n


def without_urls(document: dict) -> dict:
    result = document.get("result")
    if not result:
        return document
    result = {key: value for key, value in result.items() if key != "url"}
    if "variants" in result:
        result["variants"] = [{k: v for k, v in variant.items() if k != "url"} for variant in result["variants"]]
    return {**document, "result": result}


async def test_a_completed_job_announces_queued_processing_completed(api, worker, settings):
    response = await api.post("/api/v1/resize", data=form(make_image(320, 240), width=64))
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    read = await read_events(settings.nats_url, names.job_events_filter("default", job_id), terminal_count(1))

    assert [event["type"] for _, event in read] == ["job.queued", "job.processing", "job.completed"]
    sequences = [sequence for sequence, _ in read]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3
    positions = [tuple(event["position"]) for _, event in read]
    assert positions == [(0, 0, 0), (0, 1, 1), (0, 1, 3)]
    assert all(event["tenant"] == "default" and event["data"]["job_id"] == job_id for _, event in read)
    # The terminal event carries the public document GET shows (URLs are minted when sent).
    shown = await (await api.get(f"/api/v1/jobs/{job_id}")).json()
    assert read[-1][1]["data"] == without_urls(shown)
    assert read[-1][1]["data"]["result"]["width"] == 64 and "url" not in read[-1][1]["data"]["result"]


async def test_events_stream_keeps_events_for_the_documented_window(api, settings):
    nc = await nats.connect(settings.nats_url)
    try:
        info = await nc.jetstream().stream_info(names.EVENTS_STREAM)
    finally:
        await nc.close()
    assert info.config.retention == RetentionPolicy.LIMITS
    assert info.config.max_age == pytest.approx(72 * 3600)
    assert info.config.max_bytes == 512 * 1024**2
    assert info.config.subjects == ["pixq.events.>"]


@pytest.mark.parametrize("storage_type", ["local"])
async def test_retries_dead_letter_and_replay_are_each_announced(make_settings, storage_type):
    hopeless = make_settings("local", job_timeout=0.0001, **KEYS)
    subject = None
    async with running_api(hopeless) as api:
        async with running_worker(hopeless):
            response = await api.post("/api/v1/resize", data=form(make_image(), width=64), headers=USER)
            assert response.status == 202
            job_id = (await response.json())["job_id"]
            subject = names.job_events_filter("acme", job_id)
            await read_events(hopeless.nats_url, subject, terminal_count(1))
    healthy = make_settings("local", **KEYS)
    async with running_api(healthy) as api:
        async with running_worker(healthy):
            assert (await api.post(f"/api/v1/dlq/{job_id}/replay", headers=ADMIN)).status == 202
            read = await read_events(healthy.nats_url, subject, terminal_count(2))
            shown = await wait_for_status(api, job_id, headers=USER)

    kinds = [(event["type"], tuple(event["position"])) for _, event in read]
    assert kinds == [("job.queued", (0, 0, 0)),
                     ("job.processing", (0, 1, 1)), ("job.retrying", (0, 1, 2)),
                     ("job.processing", (0, 2, 1)), ("job.retrying", (0, 2, 2)),
                     ("job.processing", (0, 3, 1)), ("job.failed", (0, 3, 3)),
                     ("job.queued", (1, 0, 0)), ("job.processing", (1, 1, 1)), ("job.completed", (1, 1, 3))]
    assert read[2][1]["data"]["error_code"] == "TIMEOUT" and read[2][1]["data"]["next_attempt_at"]
    assert read[6][1]["data"]["error_code"] == "DEAD_LETTERED"
    assert read[-1][1]["data"] == without_urls(shown)


@pytest.mark.parametrize("storage_type", ["local"])
async def test_a_permanent_failure_is_announced_once_as_failed(api, worker, settings):
    storage = make_storage(settings)
    await storage.ensure_ready()
    await storage.put_bytes("uploads/default/notes.jpg", b"these are not pixels" * 10, "image/jpeg")
    response = await api.post("/api/v1/resize", json={"input": {"storage_key": "uploads/default/notes.jpg"},
                                                      "parameters": {"width": 10}})
    assert response.status == 202, await response.text()
    job_id = (await response.json())["job_id"]
    read = await read_events(settings.nats_url, names.job_events_filter("default", job_id), terminal_count(1))
    assert [event["type"] for _, event in read] == ["job.queued", "job.processing", "job.failed"]
    assert read[-1][1]["data"]["error_code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert read[-1][1]["data"]["attempts"] == 1
