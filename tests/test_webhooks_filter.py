"""The webhook consumer reads only the events it delivers: the event type is the last token of
an event's subject (names.event_subject), and pixq-webhooks filters on the delivered types, so
a worker no longer fetches and acks unread the queued/processing/retrying events of every job.
Events stored by a previous release (5-token subjects, no type) are still delivered.

Real nats-server, redis-server, API and worker; a consumer's state is read with consumer info
(polled with a deadline until the deliverer has settled everything)."""

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from nats.js.api import ConsumerInfo

from api.events_hub import parse_event
from pixq import names, queue, webhooks
from pixq.jobs import utc_now
from pixq.tenants import key_digest
from tests.conftest import running_api, running_worker
from tests.helpers import wait_for_status
from tests.test_tenants import write_tenants
from tests.test_webhooks import DEADLINE, NEW, Receiver, hook_settings, submit, verified, webhooks_consumer

JOBS = 4
STATUSES = ("queued", "processing", "completed")


@pytest.fixture
async def receiver():
    server = await Receiver().start()
    yield server
    await server.stop()


async def consumer_when(settings, done: Callable[[ConsumerInfo], bool], timeout: float = DEADLINE) -> ConsumerInfo:
    """pixq-webhooks' info once ``done`` holds (a condition polled with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        info = await webhooks_consumer(settings)
        if done(info) or time.monotonic() > deadline:
            assert done(info), info
            return info
        await asyncio.sleep(0.05)


def settled(count: int) -> Callable[[ConsumerInfo], bool]:
    """At least ``count`` events handed out, and every one acked."""
    return lambda info: info.delivered.consumer_seq >= count and info.num_pending == 0 and info.num_ack_pending == 0


async def test_the_webhook_consumer_is_handed_only_terminal_events(make_settings):
    """No webhook configured anywhere: each job stores three events (queued, processing,
    completed), each on a subject ending with its status, and the deliverer is handed the
    completed ones only."""
    settings = hook_settings(make_settings)
    async with running_api(settings) as api, running_worker(settings):
        await webhooks_consumer(settings)  # deliver policy NEW: it must exist before the submits
        jobs = [await submit(api) for _ in range(JOBS)]
        for job_id in jobs:
            await wait_for_status(api, job_id)
        info = await consumer_when(settings, settled(JOBS))

        nc = await nats.connect(settings.nats_url)
        try:
            stored = await nc.jetstream().stream_info(names.EVENTS_STREAM, subjects_filter=names.EVENTS_SUBJECTS[0])
        finally:
            await nc.close()
    assert stored.state.messages == len(STATUSES) * JOBS
    assert info.delivered.consumer_seq == JOBS, "the worker was handed events it does not deliver"
    assert stored.state.subjects == {names.job_event_subject("default", job_id, status): 1
                                     for job_id in jobs for status in STATUSES}
    assert info.num_redelivered == 0
    assert sorted(info.config.filter_subjects) == sorted(webhooks.consumer_filter_subjects())


async def test_an_old_consumer_is_refiltered_and_events_stored_before_the_upgrade_are_delivered(
        make_settings, receiver, tmp_path: Path):
    """A previous release's pixq-webhooks (no filter) with two of its events waiting, on the
    5-token subjects of before: a worker of this release narrows the consumer in place (same
    consumer, nothing skipped), acks the queued event unsent and delivers the completed one."""
    tenants = write_tenants(tmp_path / "tenants.yaml", [
        {"name": "alpha", "keys": [key_digest("alpha-key")], "settings": {"webhook_url": receiver.url("/old")}}])
    settings = hook_settings(make_settings, tenants_file=tenants)
    job_id = str(uuid.uuid4())
    old_subject = f"{names.EVENTS_SUBJECT_PREFIX}.alpha.job.{job_id}"
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        await queue.ensure_streams(js, settings)
        before = await js.add_consumer(names.EVENTS_STREAM,
                                       queue.webhooks_consumer_config(settings).evolve(filter_subjects=None))
        assert not before.config.filter_subjects and not before.config.filter_subject
        for status, phase in (("queued", 0), ("completed", 3)):
            envelope = {"type": f"job.{status}", "timestamp": utc_now(), "tenant": "alpha", "position": [0, 1, phase],
                        "data": {"job_id": job_id, "status": status, "result": None}}
            await js.publish(old_subject, json.dumps(envelope).encode(), stream=names.EVENTS_STREAM)
    finally:
        await nc.close()

    async with running_worker(settings):
        (request,) = await receiver.wait("/old", 1)
        info = await consumer_when(settings, settled(2))
    event = verified(request, NEW)
    assert (event["type"], event["data"]["job_id"]) == ("job.completed", job_id)
    assert request.headers["webhook-id"] == f"evt_{job_id}_0_1_3"
    assert info.created == before.created, "the consumer was recreated, not updated in place"
    assert sorted(info.config.filter_subjects) == sorted(webhooks.consumer_filter_subjects())
    assert info.delivered.consumer_seq == 2 and len(receiver.requests) == 1


def test_event_subjects_carry_the_type_and_both_forms_parse():
    """Pure logic: the subject scheme, and the hub reading new and old (5-token) subjects alike."""
    job_id = "0b7e2c3a-1d2e-4f50-8a9b-0c1d2e3f4a5b"
    assert names.job_event_subject("acme", job_id, "failed") == f"pixq.events.acme.job.{job_id}.failed"
    assert names.batch_event_subject("acme", job_id) == f"pixq.events.acme.batch.{job_id}.completed"
    assert names.job_events_filter("acme", job_id) == f"pixq.events.acme.job.{job_id}.*"
    for bad in ("job.*", "job.>", "job.a.b", "job.", "thing.completed"):
        with pytest.raises(ValueError):
            names.event_subject("acme", bad, job_id)
    envelope = json.dumps({"type": "job.completed", "position": [0, 1, 3]}).encode()
    for subject in (names.job_event_subject("acme", job_id, "completed"), f"pixq.events.acme.job.{job_id}"):
        event = parse_event(subject, 7, envelope)
        assert event is not None and (event.sequence, event.tenant, event.kind, event.target) == (7, "acme", "job", job_id)
    for subject in (f"pixq.events.acme.job.{job_id}.completed.x", "pixq.events.acme.job", f"pixq.events.acme.x.{job_id}",
                    f"pixq.other.acme.job.{job_id}"):
        assert parse_event(subject, 7, envelope) is None, subject


async def test_a_job_without_callback_costs_the_deliverer_no_redis_read(make_settings):
    """A completed job with no callback_url, in a tenant with no webhook_url: its event says so
    (events.CALLBACK_HEADER), and the deliverer settles it without reading the job's record
    (HGETALL), a Redis round trip per job saved. Watched with Redis' MONITOR (HGETALLs run inside
    the status scripts are left out: those are the status writes themselves); the test reads job
    states through NATS only, so no HGETALL is the test's."""
    import redis.asyncio as redis

    settings = hook_settings(make_settings)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    reads: list[str] = []

    async def watch(monitor) -> None:
        while True:
            command = await monitor.next_command()
            if command["client_type"] != "lua" and command["command"].upper().startswith("HGETALL"):
                reads.append(command["command"])

    try:
        async with running_api(settings) as api, running_worker(settings), client.monitor() as monitor:
            await webhooks_consumer(settings)
            watcher = asyncio.create_task(watch(monitor))
            try:
                for _ in range(JOBS):
                    await submit(api)
                await consumer_when(settings, settled(JOBS))
            finally:
                watcher.cancel()
    finally:
        await client.aclose()
    assert reads == [], f"{len(reads)} record reads for {JOBS} jobs without a callback"


async def test_events_trickling_in_cost_the_deliverer_one_pull_request_per_batch(make_settings):
    """The deliverer keeps one pull request open for all its free slots and handles each event as
    it arrives, so events arriving one at a time share a request (nats-py's fetch sent one or two
    requests per event). Counted on the request subject itself, bounded by the time the trickle
    took: a request expires after FETCH_WAIT_SECONDS, so at most one per second of waiting."""
    from worker.webhooks import FETCH_WAIT_SECONDS
    settings = hook_settings(make_settings)
    trickle = 10
    async with running_api(settings) as api, running_worker(settings):
        await webhooks_consumer(settings)
        nc = await nats.connect(settings.nats_url)
        requests = 0

        async def counted(_message) -> None:
            nonlocal requests
            requests += 1
        await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{names.EVENTS_STREAM}.{names.WEBHOOKS_CONSUMER}", cb=counted)
        await nc.flush()
        try:
            started = time.monotonic()
            for count in range(1, trickle + 1):  # the next job only once the last event is settled
                await wait_for_status(api, await submit(api))
                await consumer_when(settings, settled(count))
            elapsed = time.monotonic() - started
            await nc.flush()
        finally:
            await nc.close()
    assert requests <= 2 + elapsed / FETCH_WAIT_SECONDS, (requests, round(elapsed, 2))


async def test_consume_hands_over_each_message_as_it_arrives(nats):
    """LanePuller.consume: a request for 16 messages that waits up to 30 s yields the first one
    as soon as it is stored, not when the batch is full or the request expires; a second message
    comes through the same request."""
    import nats as nats_client
    from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
    nc = await nats_client.connect(f"nats://127.0.0.1:{nats.port}")
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="SCRATCH", subjects=["scratch.>"]))
        await js.add_consumer("SCRATCH", ConsumerConfig(durable_name="reader", ack_policy=AckPolicy.EXPLICIT))
        puller = await queue.LanePuller(js, "SCRATCH", "reader").start()
        requests = await nc.subscribe("$JS.API.CONSUMER.MSG.NEXT.SCRATCH.reader")
        messages = puller.consume(16, 30.0)
        first = asyncio.ensure_future(anext(messages))
        await requests.next_msg(timeout=10)  # the request is out
        await js.publish("scratch.a", b"1")
        assert (await asyncio.wait_for(first, 10)).data == b"1"
        await js.publish("scratch.b", b"2")
        assert (await asyncio.wait_for(anext(messages), 10)).data == b"2"
        await messages.aclose()
        assert requests.pending_msgs == 0  # no second request
    finally:
        await nc.close()
