"""Work done once (worker.reuse): a job with the same input bytes and spec as an earlier completed
job of its tenant completes from that job's stored outputs, without processing.

Real API and worker against real nats-server and redis-server. "Without processing" is seen
from outside: the result names the job it was copied from (``reused_from``) and the worker's
``pixq_worker_jobs_reused_total`` grows by one.
"""

import json

import pytest
import redis.asyncio as redis
from aiohttp import ClientSession

from pixq import names
from pixq.jobs import JobResult
from pixq.settings import Settings
from pixq.storage import make_storage
from tests.conftest import running_api, running_worker
from tests.helpers import form, make_image, wait_for_status
from tests.servers import free_port
from worker.reuse import ReuseIndex

SPEC = {"variants": [{"name": "large", "width": 200, "format": "webp", "quality": 70},
                     {"name": "thumb", "width": 48, "height": 48, "fit": "cover", "format": "jpeg"}]}
SAME_SPEC = {"variants": [{"name": "large", "width": 200, "format": "webp", "quality": 70, "fit": "inside"},
                          {"name": "thumb", "width": 48, "height": 48, "fit": "cover", "format": "jpg",
                           "quality": 80, "gravity": "center"}]}
"""SPEC as another client writes it: defaults spelt out, aliases (jpg, center); it means the same."""
ALPHA, BETA = "alpha-secret", "beta-secret"


@pytest.fixture
def storage_type() -> str:
    return "local"


def reuse_settings(make_settings, storage_type: str = "local", **overrides) -> Settings:
    """Two tenants, the worker's /metrics served, reuse on (the other tests' stacks turn it off)."""
    return make_settings(storage_type, metrics_port=free_port(), api_keys=f"alpha={ALPHA},beta={BETA}",
                         **{"reuse_outputs": True, **overrides})


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def run_job(api, image: bytes, spec: dict, secret: str = ALPHA) -> dict:
    """Submit a pipeline job by multipart upload (each upload is a new input object) and await it."""
    response = await api.post("/api/v1/jobs", data=form(image, spec=json.dumps(spec)), headers=bearer(secret))
    assert response.status == 202, await response.text()
    status = await wait_for_status(api, (await response.json())["job_id"], headers=bearer(secret))
    assert status["status"] == "completed", status
    return status


async def reused_count(settings: Settings) -> float:
    """pixq_worker_jobs_reused_total as the worker's /metrics serves it."""
    async with ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{settings.metrics_port}/metrics") as response:
            text = await response.text()
    for line in text.splitlines():
        if line.startswith("pixq_worker_jobs_reused_total "):
            return float(line.split()[1])
    raise AssertionError("pixq_worker_jobs_reused_total is not exported")


def outputs(status: dict) -> dict[str, dict]:
    return {variant["name"]: variant for variant in status["result"]["variants"]}


@pytest.mark.parametrize("storage_type", ["local", "minio"])
async def test_a_duplicate_completes_from_the_stored_outputs(make_settings, storage_type):
    settings = reuse_settings(make_settings, storage_type)
    storage = make_storage(settings)
    image = make_image(320, 240)
    async with running_api(settings) as api, running_worker(settings):
        first = await run_job(api, image, SPEC)
        before = await reused_count(settings)
        second = await run_job(api, image, SAME_SPEC)
        assert await reused_count(settings) == before + 1

    assert "reused_from" not in first["result"]
    assert second["result"]["reused_from"] == first["job_id"]
    assert second["result"]["input"] == first["result"]["input"]
    mine, theirs = outputs(second), outputs(first)
    assert set(mine) == {"large", "thumb"}
    for name, output in mine.items():
        # Its own objects under its own job id, with the same bytes and description.
        assert output["storage_key"] == theirs[name]["storage_key"].replace(first["job_id"], second["job_id"])
        assert output["storage_key"].startswith(f"outputs/alpha/{second['job_id']}/")
        assert {k: v for k, v in output.items() if k not in ("storage_key", "url")} == \
               {k: v for k, v in theirs[name].items() if k not in ("storage_key", "url")}
        data = await storage.get_bytes(output["storage_key"], 10**7)
        assert data == await storage.get_bytes(theirs[name]["storage_key"], 10**7)
        assert len(data) == output["bytes"]


async def test_another_tenant_is_never_served_the_outputs(make_settings):
    settings = reuse_settings(make_settings)
    image = make_image(160, 120)
    async with running_api(settings) as api, running_worker(settings):
        alphas = await run_job(api, image, SPEC, ALPHA)
        # Even a record planted under beta's key that points at alpha's outputs is refused.
        client = redis.from_url(settings.redis_url, decode_responses=True)
        try:
            [key] = [k async for k in client.scan_iter(f"{names.KEY_PREFIX}:reuse:alpha:*")]
            await client.set(key.replace(":alpha:", ":beta:"), await client.get(key))
        finally:
            await client.aclose()
        before = await reused_count(settings)
        betas = await run_job(api, image, SPEC, BETA)
        assert await reused_count(settings) == before

    assert "reused_from" not in betas["result"]
    assert all(v["storage_key"].startswith(f"outputs/beta/{betas['job_id']}/") for v in outputs(betas).values())
    assert alphas["job_id"] not in json.dumps(betas)


async def test_a_different_spec_is_processed(make_settings):
    settings = reuse_settings(make_settings)
    image = make_image(160, 120)
    other = {"variants": [SPEC["variants"][0], {**SPEC["variants"][1], "quality": 81}]}
    async with running_api(settings) as api, running_worker(settings):
        await run_job(api, image, SPEC)
        before = await reused_count(settings)
        different_spec = await run_job(api, image, other)
        different_input = await run_job(api, make_image(160, 121), SPEC)
        assert await reused_count(settings) == before
    assert "reused_from" not in different_spec["result"] and "reused_from" not in different_input["result"]


async def test_a_job_whose_earlier_outputs_are_gone_is_processed(make_settings):
    settings = reuse_settings(make_settings)
    storage = make_storage(settings)
    image = make_image(160, 120)
    async with running_api(settings) as api, running_worker(settings):
        first = await run_job(api, image, SPEC)
        await storage.delete(outputs(first)["thumb"]["storage_key"])  # one of two outputs gone
        before = await reused_count(settings)
        second = await run_job(api, image, SPEC)
        assert await reused_count(settings) == before
        assert "reused_from" not in second["result"]
        for output in outputs(second).values():
            assert len(await storage.get_bytes(output["storage_key"], 10**7)) == output["bytes"]
        # The processed job is the one remembered now: the next duplicate is served from it.
        third = await run_job(api, image, SPEC)
        assert third["result"]["reused_from"] == second["job_id"]
        assert await reused_count(settings) == before + 1


async def test_reuse_outputs_false_processes_every_job(make_settings):
    settings = reuse_settings(make_settings, reuse_outputs=False)
    image = make_image(160, 120)
    async with running_api(settings) as api, running_worker(settings):
        await run_job(api, image, SPEC)
        before = await reused_count(settings)
        second = await run_job(api, image, SPEC)
        assert await reused_count(settings) == before
    assert "reused_from" not in second["result"]


async def test_an_unreadable_record_is_a_miss(make_settings):
    settings = reuse_settings(make_settings)
    image = make_image(160, 120)
    async with running_api(settings) as api, running_worker(settings):
        await run_job(api, image, SPEC)
        client = redis.from_url(settings.redis_url, decode_responses=True)
        try:
            async for key in client.scan_iter(names.REUSE_KEY_PATTERN):
                await client.set(key, "{not json")
        finally:
            await client.aclose()
        second = await run_job(api, image, SPEC)
    assert "reused_from" not in second["result"]


async def test_redis_down_is_a_miss_and_a_skipped_record():
    """The index never fails a job: with no Redis at all, a lookup finds nothing and a record
    is dropped (each with a warning), so the attempt goes on processing."""
    client = redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    index = ReuseIndex(client, ttl=60)
    try:
        assert await index.lookup("alpha", "0" * 64) is None
        await index.record("alpha", "0" * 64, "00000000-0000-4000-8000-000000000000", JobResult())
    finally:
        await client.aclose()
