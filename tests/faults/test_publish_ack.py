"""A lost publish ack is resolved, not guessed.

The API (or a direct client) reaches nats-server through a proxy that can swallow everything
the server sends back: the publish arrives and is stored, its ack never comes. The publisher
sends the same message again (same Nats-Msg-Id); JetStream's PubAck says ``duplicate`` and the
job is accepted once. Only when no answer can be had at all is the publish reported as
unconfirmed (503 at the API).
"""

import asyncio
import json
import time
import uuid

import aiohttp
import pytest

from pixq import names, publish, queue
from pixq.jobs import JobInput, JobMessage, JobMetadata, JobType, utc_now
from pixq.settings import Settings
from pixq.spec import PipelineSpec, Variant
from tests.faults.harness import JetStreamProbe, get_status, image, metric, resize_form, wait_job, wait_until
from tests.faults.tcp_proxy import ToggleProxy


JOB_ACK = b'"stream":"PIXQ_JOBS"'
"""The API stores a submit's queued event (PIXQ_EVENTS, acked) before the job's message: these
tests lose the job's ack, so the proxy swallows from the first PIXQ_JOBS ack on."""

SLOW_ANSWER = aiohttp.ClientTimeout(total=publish.PUBLISH_TIMEOUT_SECONDS + publish.PUBLISH_CONFIRM_SECONDS + 20)


@pytest.fixture
def proxy(nats):
    proxy = ToggleProxy("127.0.0.1", nats.port).start()
    yield proxy
    proxy.stop()


@pytest.fixture
async def publisher(proxy, tmp_path):
    """A NATS client (and its JetStream context, streams in place) connected through ``proxy``."""
    settings = Settings(nats_url=f"nats://{proxy.endpoint}", storage_dir=tmp_path / "storage")
    nc = await queue.connect(settings, name="test-publisher")
    js = nc.jetstream()
    try:
        await queue.ensure_streams(js, settings)
        yield nc, js
    finally:
        await queue.close(nc)


def job_message() -> JobMessage:
    return JobMessage(job_id=str(uuid.uuid4()), type=JobType.RESIZE,
                      spec=PipelineSpec(variants=[Variant(name="default", width=16)]),
                      input=JobInput(storage_key="inputs/default/none"),
                      metadata=JobMetadata(created_at=utc_now()))


async def stored_sequence(probe: JetStreamProbe) -> int:
    return (await probe.state(names.JOBS_STREAM)).last_seq


async def test_publish_job_resolves_a_lost_ack_with_the_duplicate_flag(nats, proxy, publisher):
    nc, js = publisher
    async with JetStreamProbe(nats.port) as probe:
        # Clean case: an ack, no duplicate.
        first = await queue.publish_job(js, job_message())
        assert first.duplicate is not True and first.seq == 1

        # The ack of the next publish is lost on the way back.
        proxy.swallow_replies()
        message = job_message()
        publishing = asyncio.create_task(queue.publish_job(js, message))
        async def second_stored():
            return await stored_sequence(probe) >= 2
        await wait_until(second_stored, 10, "the publish to be stored", interval=0.02)
        assert await stored_sequence(probe) == 2
        proxy.reset()  # the connection breaks; the client reconnects and sends the message again
        ack = await asyncio.wait_for(publishing, publish.PUBLISH_TIMEOUT_SECONDS + publish.PUBLISH_CONFIRM_SECONDS)
        assert ack.duplicate is True and ack.seq == 2, ack
        assert await stored_sequence(probe) == 2, "the job was stored twice"
        stored = JobMessage.model_validate_json((await probe.js.get_msg(names.JOBS_STREAM, 2)).data)
        assert stored.job_id == message.job_id

        # No answer at all, however long we ask: unconfirmed (though it was in fact stored).
        proxy.swallow_replies()
        started = time.monotonic()
        with pytest.raises(publish.PublishUnconfirmed) as refused:
            await queue.publish_job(js, job_message())
        waited = time.monotonic() - started
        assert refused.value.code.value == "QUEUE_UNAVAILABLE" and refused.value.http_status == 503
        bound = publish.PUBLISH_TIMEOUT_SECONDS + publish.PUBLISH_CONFIRM_SECONDS
        assert bound - 0.5 <= waited <= bound + 3, waited
        assert await stored_sequence(probe) == 3
        proxy.reset()


async def test_publish_while_disconnected_is_refused_at_once_and_never_sent_later(nats, proxy, publisher):
    nc, js = publisher
    proxy.down()
    await wait_until(lambda: asyncio.sleep(0, not nc.is_connected), 10, "the client to notice")
    with pytest.raises(queue.PixqError) as refused:
        await queue.publish_job(js, job_message())
    assert not isinstance(refused.value, publish.PublishUnconfirmed)
    proxy.up()
    await wait_until(lambda: asyncio.sleep(0, nc.is_connected), 10, "the client to reconnect")
    await nc.flush()
    async with JetStreamProbe(nats.port) as probe:
        assert await stored_sequence(probe) == 0


async def test_api_answers_202_once_when_the_ack_is_lost(make_stack, http, nats, proxy):
    stack = make_stack()
    _, api = stack.spawn_api(NATS_URL=f"nats://{proxy.endpoint}")
    stack.spawn_worker()  # straight to nats-server
    async with JetStreamProbe(nats.port) as probe:
        proxy.swallow_replies(from_marker=JOB_ACK)
        async with asyncio.TaskGroup() as group:
            posting = group.create_task(http.post(f"{api}/api/v1/resize", data=resize_form(image("small")),
                                                  timeout=SLOW_ANSWER))
            await wait_until(lambda: stored_sequence(probe), 10, "the publish to be stored", interval=0.02)
            proxy.reset()
        response = posting.result()
        body = await response.json()
        assert response.status == 202, body
        done = await wait_job(http, api, body["job_id"], timeout=30)
        assert done["status"] == "completed" and done["attempts"] == 1, done
        assert await stored_sequence(probe) == 1, "the job was stored twice"
    events = stack.apis[0].log.read_text()
    assert '"publish_unanswered"' in events and '"duplicate": true' in events, stack.logs()


async def test_api_resolves_a_lost_ack_of_the_queued_event_and_stores_it_once(make_stack, http, nats, proxy):
    """A submit's first publish is its queued event, stored before the job's message. Its ack
    lost, the API sends it again after the reconnect (same Nats-Msg-Id), learns it was stored,
    and only then queues the job: 202, one queued event, first in the job's event order."""
    stack = make_stack()
    _, api = stack.spawn_api(NATS_URL=f"nats://{proxy.endpoint}")
    stack.spawn_worker()  # straight to nats-server
    async with JetStreamProbe(nats.port) as probe:
        async def event_stored():
            return (await probe.state(names.EVENTS_STREAM)).last_seq >= 1

        proxy.swallow_replies()
        async with asyncio.TaskGroup() as group:
            posting = group.create_task(http.post(f"{api}/api/v1/resize", data=resize_form(image("small")),
                                                  timeout=SLOW_ANSWER))
            await wait_until(event_stored, 10, "the queued event to be stored", interval=0.02)
            assert await stored_sequence(probe) == 0, "the job was published before its event was confirmed"
            proxy.reset()
        response = posting.result()
        body = await response.json()
        assert response.status == 202, body
        done = await wait_job(http, api, body["job_id"], timeout=30)
        assert done["status"] == "completed", done
        last = (await probe.state(names.EVENTS_STREAM)).last_seq
        types = [json.loads((await probe.js.get_msg(names.EVENTS_STREAM, seq)).data)["type"]
                 for seq in range(1, last + 1)]
    assert types[0] == "job.queued" and types.count("job.queued") == 1, types
    log = stack.apis[0].log.read_text()
    assert '"publish_unanswered"' in log and '"duplicate": true' in log, stack.logs()


async def test_api_unconfirmed_publish_answers_503_and_leaves_no_ghost_job(make_stack, http, nats, proxy):
    stack = make_stack()
    _, api = stack.spawn_api(NATS_URL=f"nats://{proxy.endpoint}")
    async with JetStreamProbe(nats.port) as probe:
        proxy.swallow_replies(from_marker=JOB_ACK)
        async with http.post(f"{api}/api/v1/resize", data=resize_form(image("small")),
                             timeout=SLOW_ANSWER) as response:
            body = await response.json()
        assert response.status == 503 and body["error"]["code"] == "QUEUE_UNAVAILABLE", body
        proxy.reset()
        # The message did land: the client never learnt its job id, so it must never run.
        assert await stored_sequence(probe) == 1
        ghost = JobMessage.model_validate_json((await probe.js.get_msg(names.JOBS_STREAM, 1)).data).job_id

        worker = stack.spawn_worker()

        async def consumed():
            return (await probe.state(names.JOBS_STREAM)).messages == 0
        await wait_until(consumed, 20, "the worker to take the stored message")
    status = await get_status(http, api, ghost)
    assert status is not None and status["status"] == "failed" and status["attempts"] == 0, status
    assert status["error_code"] == "QUEUE_UNAVAILABLE", status
    ran = [path for path in (stack.tmp / "storage").rglob("*") if "outputs" in path.parts and ghost in path.parts]
    assert not ran, f"the ghost job ran: {ran}"
    assert '"duplicate_delivery_skipped"' in worker.log.read_text(), stack.logs()
    assert await metric(http, worker, "pixq_worker_jobs_total") == 0


async def test_api_unconfirmed_publish_of_a_job_a_worker_already_runs_answers_202(make_stack, http, nats, proxy):
    """No ack came, but a worker has already taken the message: the status store proves the
    publish landed, so the API accepts the job rather than answering 503 for a job that runs."""
    stack = make_stack()
    _, api = stack.spawn_api(NATS_URL=f"nats://{proxy.endpoint}")
    stack.spawn_worker()  # straight to nats-server
    proxy.swallow_replies(from_marker=JOB_ACK)
    async with http.post(f"{api}/api/v1/resize", data=resize_form(image("small")), timeout=SLOW_ANSWER) as response:
        body = await response.json()
    proxy.reset()
    assert response.status == 202, body
    done = await wait_job(http, api, body["job_id"], timeout=30)
    assert done["status"] == "completed" and done["attempts"] == 1, done
