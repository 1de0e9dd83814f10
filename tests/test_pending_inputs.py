"""An API killed mid-submit leaves no input behind for good (pixq.pending_inputs): a multipart
submit marks its input key before storing it and unmarks it once the job exists; every API
sweeps marks older than PENDING_INPUT_GRACE, deleting the inputs no job names.

Real redis-server, nats-server and API, local storage and S3 (moto). What a killed API leaves
(an object under inputs/ and its mark) is written here directly, as the SIGKILL would leave it;
the chaos run (tests/chaos, "no orphaned inputs") hits the same window at random."""

import time
import uuid

import pytest
import redis.asyncio as redis

from pixq import names
from pixq.storage import make_storage
from tests.conftest import running_api
from tests.faults.harness import wait_until
from tests.helpers import form, make_image

pytestmark = pytest.mark.timeout(60)


async def exists(storage, key: str) -> bool:
    return await storage.size(key) is not None


async def test_a_submit_leaves_no_mark_and_a_killed_submits_input_is_swept(make_settings, storage_type):
    settings = make_settings(storage_type, pending_input_grace=1.0, pending_input_sweep_interval=0.1)
    storage = make_storage(settings)
    await storage.ensure_ready()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        async with running_api(settings) as api:
            reply = await api.post("/api/v1/resize", data=form(make_image(120, 90), width=40))
            assert reply.status == 202, await reply.text()
            job_id = (await reply.json())["job_id"]
            kept = names.input_object_key("default", job_id)
            assert await client.zcard(names.PENDING_INPUTS_KEY) == 0  # unmarked once the job existed
            assert await exists(storage, kept)

            # What a killed API leaves: an input with no job, and its mark from before the grace.
            orphan = names.input_object_key("default", str(uuid.uuid4()))
            await storage.put_bytes(orphan, make_image(20, 20), "image/jpeg")
            # A mark whose unmark was lost, for an input whose job exists: never deleted.
            await client.zadd(names.PENDING_INPUTS_KEY, {orphan: time.time() - 5, kept: time.time() - 5})

            async def swept() -> bool:
                return await client.zcard(names.PENDING_INPUTS_KEY) == 0
            await wait_until(swept, 10, "the pending inputs to be swept")
            assert not await exists(storage, orphan)
            assert await exists(storage, kept)
            status = await api.get(f"/api/v1/jobs/{job_id}")
            assert status.status == 200
    finally:
        await client.aclose()
