"""The worker's per-job plumbing (issue 16): one ticker keeps every running job alive, and the
processing write is the duplicate check (pixq.status answers a refused write with the stored
record, so a duplicate delivery is settled without a separate read and without a second run).
Against real NATS and Redis, an in-process API and worker."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import nats
from aiohttp.test_utils import TestClient

from pixq import names
from pixq.jobs import JobStatus
from pixq.status import StatusStore
from tests.conftest import running_api, running_worker
from tests.fixtures import fixture
from tests.helpers import wait_for_status
from tests.source_server import Answer, SourceServer

JPEG = fixture("sharp/Landscape_1.jpg").read_bytes()
OPEN = dict(outbound_allow_private_networks=True, source_allow_http=True, source_allowed_hosts="127.0.0.1")


@contextlib.asynccontextmanager
async def stack(settings) -> AsyncIterator[TestClient]:
    async with running_api(settings) as api, running_worker(settings):
        yield api


async def submit(api: TestClient, body: dict) -> str:
    response = await api.post("/api/v1/resize", json=body)
    assert response.status == 202, await response.text()
    return (await response.json())["job_id"]


async def stream_empty(js, stream: str, timeout: float = 15.0) -> None:
    """Until ``stream`` (work-queue retention: a message leaves when acked) holds nothing."""
    deadline = time.monotonic() + timeout
    while (await js.stream_info(stream)).state.messages:
        assert time.monotonic() < deadline, f"{stream} still holds messages after {timeout}s"
        await asyncio.sleep(0.05)


async def test_a_job_running_longer_than_ack_wait_is_kept_alive_not_redelivered(make_settings):
    """The shared heartbeat ticker: a job whose input takes 2.5x ACK_WAIT to arrive runs once,
    on its first delivery (a job nobody kept alive would be redelivered after ACK_WAIT and its
    source asked again)."""
    ack_wait = 2.0
    settings = make_settings("local", ack_wait=ack_wait, **OPEN)
    async with SourceServer() as source:
        source.routes["/slow.jpg"] = Answer(body=JPEG)
        respond = source._respond

        async def slow(answer, writer):
            await asyncio.sleep(ack_wait * 2.5)  # the scenario itself: a slow source, not a sync
            await respond(answer, writer)

        source._respond = slow  # type: ignore[method-assign]
        async with stack(settings) as api:
            job_id = await submit(api, {"input": {"url": source.url("/slow.jpg")}, "parameters": {"width": 64}})
            status = await wait_for_status(api, job_id)
    assert status["status"] == "completed", status
    assert status["attempts"] == 1, status
    assert source.paths() == ["/slow.jpg"], source.paths()


async def test_a_duplicate_of_a_completed_job_is_acked_without_running_again(make_settings):
    """The job's message delivered again after it completed: the processing write is refused
    with the completed record, so the worker acks it; the status, its outputs and its events
    stay as they were."""
    settings = make_settings("local")
    key = "inputs/dup.jpg"
    (settings.storage_dir / "inputs").mkdir(parents=True, exist_ok=True)
    (settings.storage_dir / key).write_bytes(JPEG)
    nc = await nats.connect(settings.nats_url)
    js = nc.jetstream()
    published: list = []
    try:
        async with stack(settings) as api:
            async def keep(message) -> None:
                published.append(message)

            # a core subscription sees the job's message as the API published it into PIXQ_JOBS
            capture = await nc.subscribe(f"{names.JOBS_SUBJECT_PREFIX}.>", cb=keep)
            job_id = await submit(api, {"input": {"storage_key": key}, "parameters": {"width": 64}})
            done = await wait_for_status(api, job_id)
            assert done["status"] == "completed", done
            await stream_empty(js, names.JOBS_STREAM)
            await capture.unsubscribe()
            [message] = [m for m in published if job_id.encode() in m.data]
            output = settings.storage_dir / done["result"]["storage_key"]
            written = output.stat().st_mtime_ns
            events_before = (await js.stream_info(names.EVENTS_STREAM)).state.messages

            await js.publish(message.subject, message.data)  # the duplicate delivery
            await stream_empty(js, names.JOBS_STREAM)  # acked: settled, not held or retried

            again = await (await api.get(f"/api/v1/jobs/{job_id}")).json()
            assert again["status"] == "completed" and again["attempts"] == 1, again
            assert again["updated_at"] == done["updated_at"], again
            assert output.stat().st_mtime_ns == written  # not processed again
            # re-announced with the same Nats-Msg-Id: JetStream's duplicate window drops it
            assert (await js.stream_info(names.EVENTS_STREAM)).state.messages == events_before
    finally:
        await nc.close()


async def test_a_refused_status_write_answers_with_the_stored_record(make_settings):
    """pixq.status: advance_or_stored gives the record that stands ahead when it refuses, in
    the same script run; advance keeps answering None then."""
    settings = make_settings("local")
    store = StatusStore.from_settings(settings)
    try:
        await store.create("job-dup", "resize", "default", "req-1")
        applied, record = await store.advance_or_stored("job-dup", 0, 1, JobStatus.PROCESSING)
        assert applied and record["status"] == "processing" and record["attempts"] == 1
        applied, record = await store.advance_or_stored("job-dup", 0, 1, JobStatus.COMPLETED, result={"width": 9})
        assert applied and record["status"] == "completed"

        applied, record = await store.advance_or_stored("job-dup", 0, 2, JobStatus.PROCESSING)
        assert not applied
        assert record["status"] == "completed" and record["result"] == {"width": 9}
        assert record["request_id"] == "req-1" and (record["generation"], record["attempts"]) == (0, 1)
        assert await store.advance("job-dup", 0, 2, JobStatus.PROCESSING) is None
        assert (await store.get("job-dup"))["status"] == "completed"

        # an older generation is refused by a newer one, and gets the newer record
        await store.restart("job-dup", 1, "resize", "default", record["created_at"], "req-2")
        applied, record = await store.advance_or_stored("job-dup", 0, 3, JobStatus.PROCESSING)
        assert not applied and (record["generation"], record["status"]) == (1, "queued")
    finally:
        await store.close()
