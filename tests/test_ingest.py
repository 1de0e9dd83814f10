"""Bucket events: recorded MinIO event documents (tests/fixtures/minio-events) published to
PIXQ_INGEST start a preset job for an object under an ingest prefix, with no API call; the
same object version never makes a second job; pixq's own outputs, other prefixes, other
buckets, removals and malformed documents are acked and start nothing; a claim left by a crash
(before the job was published) is finished on redelivery. Real API, workers, nats-server,
redis-server, local storage and moto S3."""

import asyncio
import hashlib
import json
import time
from pathlib import Path
from urllib.parse import quote_plus

import nats
import pytest
import redis.asyncio as aioredis
from nats.js.errors import NotFoundError

from pixq import names
from pixq.status import StatusStore
from pixq.storage import make_storage
from tests.conftest import running_api, running_worker
from tests.helpers import make_image, wait_for_status
from worker.ingest import ingest_job_id, parse_event

EVENTS_DIR = Path(__file__).parent / "fixtures" / "minio-events"
SUBJECT = "pixq.ingest.minio"
KEY = "incoming/catalogue/summer sale/shoe+1.jpg"
PRESETS = """
presets:
  - name: catalogue
    version: 3
    variants: [{name: thumb, width: 40}, {name: large, width: 100, format: webp}]
ingest:
  - prefix: incoming/catalogue/
    preset: catalogue
    tenant: catalogue
"""


def recorded(name: str, bucket: str | None = None, key: str | None = None, etag: str | None = None) -> bytes:
    """A recorded MinIO document with this test's bucket, key and ETag (everything else as recorded)."""
    document = json.loads((EVENTS_DIR / name).read_text())
    record = document["Records"][0]["s3"]
    if bucket is not None:
        record["bucket"]["name"] = bucket
        record["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    if key is not None:
        record["object"]["key"] = quote_plus(key, safe="")  # as MinIO encodes it
    if etag is not None:
        record["object"]["eTag"] = etag
    document["Key"] = f"{record['bucket']['name']}/{key if key is not None else document['Key'].partition('/')[2]}"
    return json.dumps(document).encode()


@pytest.fixture
def ingest_settings(make_settings, tmp_path, storage_type):
    path = tmp_path / "presets.yaml"
    path.write_text(PRESETS)
    return make_settings(storage_type, presets_file=path)


async def put_object(settings, key: str, data: bytes) -> str:
    """Store the object the event names (as the bucket would hold it); its ETag (MD5 of a single PUT)."""
    storage = make_storage(settings)
    await storage.ensure_ready()
    await storage.put_bytes(key, data, "image/jpeg")
    return hashlib.md5(data).hexdigest()


async def publish(settings, *documents: bytes) -> int:
    """Publish as MinIO does (core NATS publish to its subject, captured by PIXQ_INGEST); the last sequence."""
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        sequence = 0
        for document in documents:
            sequence = (await js.publish(SUBJECT, document, stream=names.INGEST_STREAM)).seq
        return sequence
    finally:
        await nc.close()


async def consumer_reaches(settings, condition, what: str, timeout: float = 20.0) -> None:
    """Await ``condition(consumer info)`` on the ingest consumer (a condition with a deadline);
    info is None until the worker has created the consumer."""
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = await js.consumer_info(names.INGEST_STREAM, names.INGEST_CONSUMER)
            except NotFoundError:
                info = None
            if info is not None and condition(info):
                return
            assert time.monotonic() < deadline, f"ingest consumer: {what}: {info}"
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def all_handled(settings, sequence: int, timeout: float = 20.0) -> None:
    """Await the ingest consumer acking everything up to ``sequence``."""
    await consumer_reaches(settings, lambda info: info.ack_floor.stream_seq >= sequence and info.num_ack_pending == 0
                           and info.num_pending == 0, f"did not ack up to {sequence}", timeout)


async def tenant_jobs(api, tenant: str = "catalogue") -> list[dict]:
    response = await api.get(f"/api/v1/jobs?tenant={tenant}&limit=100")
    assert response.status == 200, await response.text()
    return (await response.json())["items"]


async def first_job(api, timeout: float = 20.0) -> dict:
    """The tenant's job, found through its history (GET /api/v1/jobs), once it exists."""
    deadline = time.monotonic() + timeout
    while not (items := await tenant_jobs(api)):
        assert time.monotonic() < deadline, "no job appeared for the bucket event"
        await asyncio.sleep(0.05)
    return items[0]


async def test_bucket_event_starts_one_preset_job(ingest_settings):
    data = make_image(320, 240)
    async with running_api(ingest_settings) as api:
        etag = await put_object(ingest_settings, KEY, data)
        document = recorded("put.json", bucket=ingest_settings.bucket_name, key=KEY, etag=etag)
        # The same notification twice before any worker runs: both wait in the stream.
        await publish(ingest_settings, document, document)
        async with running_worker(ingest_settings):
            job = await first_job(api)
            status = await wait_for_status(api, job["job_id"])
            assert status["status"] == "completed", status
            assert status["type"] == "pipeline"
            assert status["preset"] == {"name": "catalogue", "version": 3}
            assert {(v["name"], v["width"], v["format"]) for v in status["result"]["variants"]} == \
                {("thumb", 40, "jpeg"), ("large", 100, "webp")}
            assert status["result"]["variants"][0]["storage_key"].startswith(f"outputs/catalogue/{job['job_id']}/")
            assert job["job_id"] == ingest_job_id(ingest_settings.bucket_name, KEY, etag)
            # And once more after it completed: still one job.
            await all_handled(ingest_settings, await publish(ingest_settings, document))
            jobs = await tenant_jobs(api)
            assert [item["job_id"] for item in jobs] == [job["job_id"]]

            # A new version of the object (another ETag) is another job.
            etag2 = await put_object(ingest_settings, KEY, make_image(200, 150))
            await publish(ingest_settings, recorded("put.json", bucket=ingest_settings.bucket_name, key=KEY,
                                                    etag=etag2))
            deadline = time.monotonic() + 20
            while len(jobs := await tenant_jobs(api)) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert (await wait_for_status(api, jobs[0]["job_id"]))["status"] == "completed"


@pytest.mark.parametrize("storage_type", ["local"])
async def test_events_that_start_nothing_are_acked(ingest_settings):
    bucket = ingest_settings.bucket_name
    valid_key = "incoming/catalogue/poster.jpg"
    async with running_api(ingest_settings) as api, running_worker(ingest_settings):
        etag = await put_object(ingest_settings, valid_key, make_image(160, 120))
        output_key = "outputs/catalogue/0b6c3d1e-52a4-5f0e-9d3c-7a1e2b4c6d8f/thumb.jpg"
        await put_object(ingest_settings, output_key, make_image(40, 30))
        ignored = [
            recorded("output-put.json", bucket=bucket),                               # pixq's own output
            recorded("put.json", bucket=bucket, key="incoming/other/x.jpg", etag="ab"),  # no ingest prefix
            recorded("put.json", bucket="someone-elses", key=valid_key, etag=etag),   # another bucket
            recorded("delete.json", bucket=bucket, key=valid_key),                    # not a create
            recorded("put.json", bucket=bucket, key="incoming/catalogue/../../etc/passwd", etag="ab"),
            b"not json at all",
            b'{"EventName": "s3:ObjectCreated:Put", "Records": []}',
            b'{"Records": [{"s3": {"bucket": {}}}]}',
            b"[1, 2, 3]",
        ]
        await all_handled(ingest_settings, await publish(ingest_settings, *ignored))
        assert await tenant_jobs(api) == []
        # The loop is still alive: a good event after them runs (multipart ETag and all).
        await publish(ingest_settings, recorded("complete-multipart.json", bucket=bucket, key=valid_key,
                                                etag=f"{etag}-2"))
        job = await first_job(api)
        assert (await wait_for_status(api, job["job_id"]))["status"] == "completed"
        nc = await nats.connect(ingest_settings.nats_url)
        try:
            info = await nc.jetstream().consumer_info(names.INGEST_STREAM, names.INGEST_CONSUMER)
            assert info.num_redelivered == 0  # acked, never retried
        finally:
            await nc.close()
        assert len(await tenant_jobs(api)) == 1


@pytest.mark.parametrize("storage_type", ["local"])
async def test_a_claim_left_by_a_crash_is_finished(ingest_settings):
    """A worker claimed the object version and created the status, then died before publishing:
    the redelivered notification publishes the same job (and only it)."""
    key = "incoming/catalogue/crashed.jpg"
    async with running_api(ingest_settings) as api:
        etag = await put_object(ingest_settings, key, make_image(160, 120))
        bucket = ingest_settings.bucket_name
        job_id = ingest_job_id(bucket, key, etag)
        client = aioredis.from_url(ingest_settings.redis_url)
        status = StatusStore.from_settings(ingest_settings)
        try:
            await client.set(names.ingest_claim_key(bucket, key, etag), job_id)
            await status.create(job_id, "pipeline", "catalogue", "ingest-crashed")
        finally:
            await client.aclose()
            await status.close()
        assert [item["job_id"] for item in await tenant_jobs(api)] == [job_id]
        assert (await (await api.get(f"/api/v1/jobs/{job_id}")).json())["status"] == "queued"
        async with running_worker(ingest_settings):
            await publish(ingest_settings, recorded("put.json", bucket=bucket, key=key, etag=etag))
            assert (await wait_for_status(api, job_id))["status"] == "completed"
        assert [item["job_id"] for item in await tenant_jobs(api)] == [job_id]


async def handed_back(settings, sequence: int) -> None:
    """Await the ingest consumer having delivered ``sequence`` and had it handed back, unacked."""
    await consumer_reaches(settings, lambda info: info.delivered.stream_seq >= sequence
                           and info.ack_floor.stream_seq < sequence and (info.num_redelivered or 0) >= 1,
                           f"{sequence} was not handed back")


@pytest.mark.parametrize("storage_type", ["local"])
async def test_a_notification_waits_out_a_redis_outage(ingest_settings, redis_proc):
    """Redis down when the notification arrives: no job, the notification is handed back (not
    acked, not dropped), and once Redis is back it starts exactly one job, which completes."""
    key = "incoming/catalogue/outage.jpg"
    async with running_api(ingest_settings) as api, running_worker(ingest_settings):
        etag = await put_object(ingest_settings, key, make_image(160, 120))
        await all_handled(ingest_settings, 0)  # the worker's consumer exists
        redis_proc.stop()
        sequence = await publish(ingest_settings, recorded("put.json", bucket=ingest_settings.bucket_name, key=key,
                                                           etag=etag))
        await handed_back(ingest_settings, sequence)
        redis_proc.start()
        job = await first_job(api, timeout=30)
        assert job["job_id"] == ingest_job_id(ingest_settings.bucket_name, key, etag)
        assert (await wait_for_status(api, job["job_id"]))["status"] == "completed"
        await all_handled(ingest_settings, sequence)
        assert [item["job_id"] for item in await tenant_jobs(api)] == [job["job_id"]]


def test_parse_recorded_documents():
    [put] = parse_event((EVENTS_DIR / "put.json").read_bytes())
    assert (put.event_name, put.bucket, put.key, put.etag, put.size) == (
        "s3:ObjectCreated:Put", "pixq", "incoming/catalogue/summer sale/shoe+1.jpg",
        "5d41402abc4b2a76b9719d911017c592", 48213)
    [multipart] = parse_event((EVENTS_DIR / "complete-multipart.json").read_bytes())
    assert multipart.etag.endswith("-2")
    [removed] = parse_event((EVENTS_DIR / "delete.json").read_bytes())
    assert removed.event_name == "s3:ObjectRemoved:Delete" and removed.etag == ""
