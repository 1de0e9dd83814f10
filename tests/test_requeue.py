"""Jobs recorded and maybe never published (pixq.intake.requeue_unpublished): the API keeps a
job's message in Redis from its status record until a worker writes the job's status; every
API publishes again the jobs still waiting after REQUEUE_CHECK_AFTER, and JetStream's duplicate
window tells a job already queued (nothing added) from one its API never published.

Real nats-server, redis-server, API and worker. The round is called here with ``older_than=0``
so no test waits REQUEUE_CHECK_AFTER; tests/faults/test_idempotency.py runs the whole thing
(an API killed before its publish, another API's round, the job completed)."""

import uuid

import pytest
import redis.asyncio as redis

from pixq import intake, names
from pixq.deps import Dependencies
from pixq.jobs import JobInput, JobMessage, JobMetadata, JobType, Priority, utc_now
from pixq.publish import PUBLISH_CONFIRM_SECONDS, PUBLISH_TIMEOUT_SECONDS
from pixq.spec import to_pipeline
from pixq.settings import REQUEUE_CHECK_AFTER_MIN, ConfigError, load_settings
from tests.conftest import running_api, running_worker
from tests.helpers import form, make_image, wait_for_status


async def submit(api) -> str:
    reply = await api.post("/api/v1/resize", data=form(make_image(120, 90), width=40))
    assert reply.status == 202, await reply.text()
    return (await reply.json())["job_id"]


async def kept(client: redis.Redis, job_id: str) -> tuple[bool, bool]:
    """(in the unpublished set, its message kept)."""
    return (await client.zscore(names.UNPUBLISHED_KEY, job_id) is not None,
            bool(await client.exists(names.unpublished_message_key(job_id))))


async def test_a_queued_job_is_checked_not_published_twice_and_a_begun_one_is_forgotten(make_settings):
    settings = make_settings("local")
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    deps = await Dependencies.open(settings, client_name="test-requeue")
    try:
        async with running_api(settings) as api:
            waiting = await submit(api)  # no worker yet: it stays queued
            assert await kept(client, waiting) == (True, True)
            stream = await deps.js.stream_info(names.JOBS_STREAM)
            assert stream.state.messages == 1

            round_ = await intake.requeue_unpublished(deps.nc, deps.js, deps.status, older_than=0)
            assert round_ == intake.Requeued(checked=1, published=0)  # a duplicate: it was queued
            assert (await deps.js.stream_info(names.JOBS_STREAM)).state.last_seq == stream.state.last_seq
            assert await kept(client, waiting) == (False, False)  # surely queued: forgotten
            assert await intake.requeue_unpublished(deps.nc, deps.js, deps.status, older_than=0) == \
                intake.Requeued(0, 0)

            async with running_worker(settings):
                assert (await wait_for_status(api, waiting, {"completed"}))["attempts"] == 1
                begun = await submit(api)
                assert (await wait_for_status(api, begun, {"completed"}))["attempts"] == 1
            assert await kept(client, begun) == (False, False)  # the worker's first write let it go
            assert not [key async for key in client.scan_iter(f"{names.UNPUBLISHED_KEY}*")]
    finally:
        await deps.close()
        await client.aclose()


async def test_a_recorded_job_missing_from_the_stream_is_published_once(make_settings):
    """What an API killed between its status write and its publish leaves, written here through
    the status store as that API wrote it: the round publishes it, and a worker completes it."""
    settings = make_settings("local")
    source = settings.storage_dir / "inputs" / "default" / "photo.jpg"
    source.parent.mkdir(parents=True)
    source.write_bytes(make_image(120, 90))
    job_id, created_at = str(uuid.uuid4()), utc_now()
    message = JobMessage(job_id=job_id, type=JobType.RESIZE, spec=to_pipeline(JobType.RESIZE, {"width": 40}),
                         input=JobInput(storage_key="inputs/default/photo.jpg"),
                         metadata=JobMetadata(created_at=created_at, request_id="req-dead-api"))
    deps = await Dependencies.open(settings, client_name="test-requeue")
    try:
        await deps.status.create(job_id, "resize", "default", "req-dead-api", created_at=created_at,
                                 message=message.model_dump_json().encode())
        assert (await deps.js.stream_info(names.JOBS_STREAM)).state.messages == 0

        round_ = await intake.requeue_unpublished(deps.nc, deps.js, deps.status, older_than=0)
        assert round_ == intake.Requeued(checked=1, published=1)
        assert (await deps.js.stream_info(names.JOBS_STREAM)).state.messages == 1
        async with running_api(settings) as api, running_worker(settings):
            done = await wait_for_status(api, job_id, {"completed"})
            assert done["attempts"] == 1
    finally:
        await deps.close()


async def test_a_record_enqueue_creates_keeps_its_message_as_the_api_submit_does(make_settings):
    """intake.enqueue creates the record when none exists (a bucket event; a replay whose first
    API died before recording the job). It keeps the job's message with that record, so that if
    this process dies before its publish too, another API's round publishes the job."""
    settings = make_settings("local")
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    deps = await Dependencies.open(settings, client_name="test-requeue")
    job_id = str(uuid.uuid4())
    try:
        record = await intake.enqueue(deps.nc, deps.js, deps.status, job_id=job_id, job_type=JobType.RESIZE,
                                      tenant="default", spec=to_pipeline(JobType.RESIZE, {"width": 40}),
                                      job_input=JobInput(storage_key="inputs/default/photo.jpg"),
                                      request_id="req-enqueue", priority=Priority.BATCH.value)
        assert await kept(client, job_id) == (True, True)
        message = JobMessage.model_validate_json(await client.get(names.unpublished_message_key(job_id)))
        assert (message.job_id, message.metadata.created_at, message.metadata.request_id, message.priority) == \
            (job_id, record["created_at"], "req-enqueue", Priority.BATCH)
        # The kept message is the one enqueue published (same Nats-Msg-Id): the round adds nothing.
        assert await intake.requeue_unpublished(deps.nc, deps.js, deps.status, older_than=0) == \
            intake.Requeued(checked=1, published=0)
        assert (await deps.js.stream_info(names.JOBS_STREAM)).state.messages == 1
    finally:
        await deps.close()
        await client.aclose()


def test_requeue_check_after_stays_above_the_publish_bound(monkeypatch, capsys):
    """A round must never race a live API's publish (its first 5 s and 10 s of re-sends)."""
    assert REQUEUE_CHECK_AFTER_MIN > PUBLISH_TIMEOUT_SECONDS + PUBLISH_CONFIRM_SECONDS
    monkeypatch.setenv("REQUEUE_CHECK_AFTER", "5s")
    with pytest.raises(ConfigError):
        load_settings()
    assert "invalid configuration: REQUEUE_CHECK_AFTER: " in capsys.readouterr().err
    monkeypatch.setenv("REQUEUE_CHECK_AFTER", "16s")
    assert load_settings().requeue_check_after == 16.0
