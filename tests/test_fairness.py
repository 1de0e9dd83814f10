"""Priorities and fair sharing (issue 13, "Fair sharing"), with real processes: nats-server,
redis-server, pixq-api and pixq-worker.

Jobs travel in two lanes: interactive (the default) and batch (the default of a batch). A
worker shares its free slots between the lanes by PRIORITY_WEIGHTS (interactive=4,batch=1)
and never holds more jobs than it has free slots. So:

* tenant beta's interactive job, submitted while tenant alpha's batch backlog keeps the worker
  busy, starts after at most WORKER_CONCURRENCY of alpha's jobs (those that were already being
  fetched), and completes while most of alpha's backlog is still queued;
* with interactive work always waiting, batch jobs still get one slot in five.

Order comes from PIXQ_EVENTS, the stream every status change is published to (what SSE and
webhooks read): its sequence is the order in which the worker started and finished jobs. Every
assertion is on that order and on counts, never on time.
"""

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nats as nats_client
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from pixq import names, queue
from pixq.jobs import Priority, parse_priority_weights
from tests.conftest import running_api, running_worker
from tests.faults.harness import wait_until
from tests.helpers import form, make_image, wait_for_status
from tests.stack import Stack, stack_env
from worker.consumer import LaneSchedule

CONCURRENCY = 2
KEYS = {"alpha": "alpha-key", "beta": "beta-key"}
BATCH_ITEMS = 100
"""A batch's most items (pixq.batches.MAX_ITEMS)."""


@dataclass
class Event:
    kind: str
    """``queued``, ``processing``, ``completed``..."""
    tenant: str
    job_id: str


@pytest.fixture
def stack(nats, redis_proc, tmp_path: Path):
    env = stack_env(nats.port, redis_proc.port, tmp_path, WORKER_CONCURRENCY=str(CONCURRENCY),
                    API_KEYS=",".join(f"{tenant}={key}" for tenant, key in KEYS.items()),
                    PRIORITY_WEIGHTS="interactive=4,batch=1", RATE_LIMIT="off", RATE_LIMIT_PER_IP="off",
                    LOG_LEVEL="warning")
    stack = Stack(env, tmp_path)
    # Each tenant's input, under its own prefix: a few hundred jobs need no upload each. Large
    # enough that a job takes a while, so a backlog of hundreds lasts longer than a submit.
    for tenant in KEYS:
        source = tmp_path / "storage" / "inputs" / tenant / "source.jpg"
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(make_image(2000, 1500))
    stack.start_api()
    yield stack
    stack.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def _auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


def _item(tenant: str, **extra) -> dict:
    return {"type": "resize", "input": {"storage_key": f"inputs/{tenant}/source.jpg"},
            "parameters": {"width": 1200, "format": "webp"}, **extra}


async def submit_batches(http: aiohttp.ClientSession, stack: Stack, tenant: str, count: int) -> list[str]:
    """``count`` batch jobs (default priority) in batches of BATCH_ITEMS; their job ids."""
    job_ids: list[str] = []
    while len(job_ids) < count:
        size = min(BATCH_ITEMS, count - len(job_ids))
        async with http.post(f"{stack.api_url}/api/v1/jobs/batch", headers=_auth(tenant),
                             json={"jobs": [_item(tenant) for _ in range(size)]}) as response:
            body = await response.json()
            assert response.status == 200 and body["accepted"] == size, body
        job_ids += [item["job_id"] for item in body["items"]]
    return job_ids


async def submit(http: aiohttp.ClientSession, stack: Stack, tenant: str, **extra) -> str:
    body = {key: value for key, value in _item(tenant, **extra).items() if key != "type"}
    async with http.post(f"{stack.api_url}/api/v1/resize", headers=_auth(tenant), json=body) as response:
        body = await response.json()
        assert response.status == 202, body
        return body["job_id"]


async def status(http: aiohttp.ClientSession, stack: Stack, tenant: str, job_id: str) -> str:
    async with http.get(f"{stack.api_url}/api/v1/jobs/{job_id}", headers=_auth(tenant)) as response:
        return (await response.json())["status"]


class EventLog:
    """Reads PIXQ_EVENTS from the start, in stream order (an ephemeral consumer, no acks)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events: list[Event] = []

    async def __aenter__(self) -> "EventLog":
        self.nc = await nats_client.connect(f"nats://127.0.0.1:{self.port}")
        js = self.nc.jetstream()
        self.subscription = await js.pull_subscribe(
            f"{names.EVENTS_SUBJECT_PREFIX}.>", stream=names.EVENTS_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                                  inactive_threshold=60.0, mem_storage=True))
        return self

    async def __aexit__(self, *exc) -> None:
        await self.nc.close()

    async def read(self) -> list[Event]:
        """Every job event published up to now, in stream order (not those still coming: a
        busy worker publishes them faster than a reader that waits for quiet would stop)."""
        waiting = (await self.subscription.consumer_info()).num_pending
        while waiting > 0:
            messages = await self.subscription.fetch(min(256, waiting), timeout=5)
            waiting -= len(messages)
            for message in messages:
                event = json.loads(message.data)
                if event["type"].startswith("job."):
                    self.events.append(Event(event["type"].removeprefix("job."), event["tenant"],
                                             event["data"]["job_id"]))
        return self.events

    def index(self, kind: str, job_id: str) -> int:
        return next(i for i, event in enumerate(self.events) if event.kind == kind and event.job_id == job_id)

    def count(self, kind: str, tenant: str, start: int = 0, stop: int | None = None) -> int:
        return sum(1 for event in self.events[start:stop] if event.kind == kind and event.tenant == tenant)


async def lane_subjects(port: int) -> dict[str, int]:
    """Messages waiting in PIXQ_JOBS per subject (which lane each job was published to)."""
    nc = await nats_client.connect(f"nats://127.0.0.1:{port}")
    try:
        info = await nc.jetstream().stream_info(names.JOBS_STREAM, subjects_filter=f"{names.JOBS_SUBJECT_PREFIX}.>")
        return dict(info.state.subjects or {})
    finally:
        await nc.close()


async def test_interactive_job_overtakes_another_tenants_batch_backlog(stack, http, nats):
    backlog = 300
    stack.start_worker()
    await submit_batches(http, stack, "alpha", backlog)
    async with EventLog(nats.port) as log:
        # The worker is busy with alpha's batch work (and is to stay so: most of it is queued).
        await wait_until(lambda: _read_count(log, "completed", "alpha", CONCURRENCY), 30, "alpha's first jobs done")
        beta = await submit(http, stack, "beta")
        await wait_until(lambda: _status_is(http, stack, "beta", beta, "completed"), 60, "beta's job completed")
        await log.read()

    queued, started, done = (log.index(kind, beta) for kind in ("queued", "processing", "completed"))
    overtaken_by = log.count("processing", "alpha", queued, started)
    assert overtaken_by <= CONCURRENCY, (
        f"{overtaken_by} of alpha's batch jobs started between beta's submit and beta's start")
    finished_first = log.count("completed", "alpha", 0, done)
    assert finished_first < backlog // 2, (
        f"{finished_first} of alpha's {backlog} batch jobs finished before beta's interactive job")


async def test_batch_work_still_progresses_behind_steady_interactive_work(stack, http, nats):
    """Both lanes full before the worker starts: the weighted pulls alone decide the order."""
    interactive_jobs, batch_jobs = 40, 40
    await submit_batches(http, stack, "alpha", batch_jobs)
    await asyncio.gather(*(submit(http, stack, "beta") for _ in range(interactive_jobs)))
    assert await lane_subjects(nats.port) == {names.job_subject("resize", "batch"): batch_jobs,
                                              names.job_subject("resize"): interactive_jobs}

    stack.start_worker()
    observed = 25
    """Starts observed: fewer than interactive_jobs, so the interactive lane is never empty."""
    async with EventLog(nats.port) as log:
        await wait_until(lambda: _read_count(log, "processing", None, observed), 60, f"{observed} jobs started")
    started = [event for event in log.events if event.kind == "processing"][:observed]
    batch_started = sum(1 for event in started if event.tenant == "alpha")
    # interactive=4,batch=1: one start in five is a batch job (5 of 25), whatever the timing
    # of slots freeing up; the bounds leave a pull's worth of slack either side.
    assert CONCURRENCY + 1 <= batch_started <= observed // 5 + CONCURRENCY, [event.tenant for event in started]


async def test_priority_field_picks_the_lane_and_is_checked(stack, http, nats):
    """No worker runs: each accepted job stays on the subject of its lane."""
    # A single submit: interactive unless it says batch, as a JSON field or a multipart form field.
    await submit(http, stack, "beta")
    await submit(http, stack, "beta", priority="batch")
    async with http.post(f"{stack.api_url}/api/v1/resize", headers=_auth("beta"),
                         data=form(make_image(64, 48), width=16, priority="batch")) as response:
        assert response.status == 202, await response.text()
    # A batch: batch unless the batch or an item says otherwise; an item's own priority wins.
    async with http.post(f"{stack.api_url}/api/v1/jobs/batch", headers=_auth("alpha"), json={
            "jobs": [_item("alpha"), _item("alpha", priority="interactive"), _item("alpha", priority="urgent")]}
            ) as response:
        body = await response.json()
        assert response.status == 200 and body["accepted"] == 2, body
        assert body["items"][2]["error"]["code"] == "INVALID_PARAMETERS", body
    async with http.post(f"{stack.api_url}/api/v1/jobs/batch", headers=_auth("alpha"), json={
            "priority": "interactive", "jobs": [_item("alpha"), _item("alpha", priority="batch")]}) as response:
        assert response.status == 200 and (await response.json())["accepted"] == 2

    assert await lane_subjects(nats.port) == {names.job_subject("resize"): 1 + 1 + 1,
                                              names.job_subject("resize", "batch"): 2 + 1 + 1}

    # Anything else is the client's mistake: 422, and nothing is queued.
    single = {key: value for key, value in _item("beta").items() if key != "type"}
    for url, payload in ((f"{stack.api_url}/api/v1/resize", {**single, "priority": "high"}),
                         (f"{stack.api_url}/api/v1/resize", {**single, "priority": 1}),
                         (f"{stack.api_url}/api/v1/jobs/batch", {"priority": "low", "jobs": [_item("beta")]})):
        async with http.post(url, headers=_auth("beta"), json=payload) as response:
            body = await response.json()
            assert response.status == 422 and body["error"]["code"] == "INVALID_PARAMETERS", body
    async with http.post(f"{stack.api_url}/api/v1/resize", headers=_auth("beta"),
                         data=form(make_image(64, 48), width=16, priority="soon")) as response:
        assert response.status == 422, await response.text()
    assert sum((await lane_subjects(nats.port)).values()) == 7


async def test_upgrade_keeps_the_queue_and_batch_jobs_dead_letter_and_replay_in_their_lane(make_settings, nats):
    """From before priorities (one unfiltered pixq-workers) to two lanes, in place; then the
    batch lane's MAX_DELIVERIES advisory, DLQ and replay, as for interactive jobs."""
    admin = {"Authorization": "Bearer admin-secret"}
    settings = make_settings("local", max_retries=0, admin_api_keys={"admin-secret": "ops"},
                             api_keys={"user-secret": "user"})
    user = {"Authorization": "Bearer user-secret"}
    nc = await nats_client.connect(f"nats://127.0.0.1:{nats.port}")
    js = nc.jetstream()
    before_priorities = ConsumerConfig(
        durable_name=names.WORKERS_CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait, max_deliver=1, max_ack_pending=queue.MAX_ACK_PENDING, max_waiting=512)
    try:
        async with running_api(settings) as api:
            # The previous release's consumer, with a job queued on it.
            await js.add_consumer(names.JOBS_STREAM, before_priorities)
            accepted = await api.post("/api/v1/resize", data=form(make_image(64, 48), width=16), headers=user)
            assert accepted.status == 202, await accepted.text()
            waiting = (await accepted.json())["job_id"]
            async with running_worker(settings):
                assert (await wait_for_status(api, waiting, headers=user))["status"] == "completed"
            lanes = {durable: (await js.consumer_info(names.JOBS_STREAM, durable)).config.filter_subject
                     for durable in (names.WORKERS_CONSUMER, names.BATCH_WORKERS_CONSUMER)}
            assert lanes == {names.WORKERS_CONSUMER: "pixq.jobs.*", names.BATCH_WORKERS_CONSUMER: "pixq.jobs.batch.>"}

            # A batch job whose only delivery is never finished: the batch lane's advisory.
            accepted = await api.post("/api/v1/resize", data=form(make_image(64, 48), width=16, priority="batch"),
                                      headers=user)
            batch_job = (await accepted.json())["job_id"]
            lane = await queue.LanePuller(js, names.JOBS_STREAM, names.BATCH_WORKERS_CONSUMER).start()
            (message,) = await lane.pull(1, 5)
            await message.nak()
            assert await lane.pull(1, 0.5) == []  # a pull after the last delivery emits MAX_DELIVERIES

            async def advisory_stored():
                return (await js.stream_info(names.ADVISORY_STREAM)).state.messages == 1
            await wait_until(advisory_stored, 20, "the batch lane's MAX_DELIVERIES advisory")
            async with running_worker(settings):
                dead = await wait_for_status(api, batch_job, headers=user)
            assert dead["status"] == "failed" and dead["error_code"] == "DEAD_LETTERED", dead
            entry = await (await api.get(f"/api/v1/dlq/{batch_job}", headers=admin)).json()
            assert entry["reason"] == "max_deliveries" and entry["message"]["priority"] == "batch", entry

            replayed = await api.post(f"/api/v1/dlq/{batch_job}/replay", headers=admin)
            assert replayed.status == 202, await replayed.text()
            assert await lane_subjects(nats.port) == {names.job_subject("resize", "batch"): 1}
            async with running_worker(settings):
                done = await wait_for_status(api, batch_job, {"completed"}, headers=user)
            assert done["status"] == "completed"
    finally:
        await nc.close()


async def _read_count(log: EventLog, kind: str, tenant: str | None, at_least: int) -> bool:
    await log.read()
    return sum(1 for event in log.events if event.kind == kind and tenant in (None, event.tenant)) >= at_least


async def _status_is(http: aiohttp.ClientSession, stack: Stack, tenant: str, job_id: str, wanted: str) -> bool:
    return await status(http, stack, tenant, job_id) == wanted


# Pure logic: the slot schedule and the weights' parser.

def test_schedule_gives_each_lane_its_weight_and_no_saved_up_burst():
    schedule = LaneSchedule(parse_priority_weights("interactive=4,batch=1"))
    turns = [lane for _ in range(10) for lane, count in schedule.share(1).items() for _ in range(count)]
    assert turns == [Priority.INTERACTIVE] * 2 + [Priority.BATCH] + [Priority.INTERACTIVE] * 4 + \
        [Priority.BATCH] + [Priority.INTERACTIVE] * 2
    assert schedule.share(5) == {Priority.INTERACTIVE: 4, Priority.BATCH: 1}
    # After a lane ran dry the turn restarts: interactive first, never a burst of batch turns.
    for _ in range(7):
        schedule.share(1)
    schedule.reset()
    assert schedule.share(1) == {Priority.INTERACTIVE: 1, Priority.BATCH: 0}
    assert LaneSchedule(parse_priority_weights("interactive=1,batch=1")).share(4) == {
        Priority.INTERACTIVE: 2, Priority.BATCH: 2}


@pytest.mark.parametrize("value, problem", [
    ("interactive=4", "batch missing"), ("interactive=0,batch=1", "would starve"), ("batch=1,batch=2", "twice"),
    ("interactive=x,batch=1", "whole number"), ("urgent=1,batch=1", "expected interactive=<n>,batch=<n>"),
    ("", "expected"), ("interactive=4,batch=1001", "1 to 1000")])
def test_priority_weights_are_checked(value, problem):
    with pytest.raises(ValueError, match=problem):
        parse_priority_weights(value)
    assert parse_priority_weights(" Batch=2 , interactive=3 ") == {Priority.INTERACTIVE: 3, Priority.BATCH: 2}
