"""Quotas: a tenant's jobs in flight are capped (MAX_JOBS_IN_FLIGHT, or its TENANTS_FILE
override), a refusal creates nothing, the count heals itself, a batch fits whole or not at
all, a monthly megapixel budget stops submits once used, and a request body is held to
MAX_REQUEST_BYTES. Real API, redis-server and nats-server; jobs are finished through the
status store's write path as a worker finishes them, or (the budget) by a real worker."""

import asyncio
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis.asyncio as redis
from aiohttp import FormData

from api.app import create_app
from pixq import names, quotas
from pixq.jobs import JobStatus
from pixq.status import StatusStore
from pixq.storage import make_storage
from pixq.tenants import key_digest
from tests.conftest import running_api, running_worker
from tests.helpers import form, jobs_in_stream, make_image, wait_for_status

CAPPED, OTHER, METERED = "capped-secret", "other-secret", "metered-secret"
CAP = 3
"""``capped``'s max_jobs_in_flight in TENANTS_FILE; ``other`` has MAX_JOBS_IN_FLIGHT=2."""
BUDGET = 0.015
"""``metered``'s megapixels_per_month: room for two 100x100 inputs (0.01 MP each) to start."""


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def settings(make_settings, tmp_path: Path):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(json.dumps({"tenants": [
        {"name": "capped", "keys": [key_digest(CAPPED)], "settings": {"max_jobs_in_flight": CAP}},
        {"name": "other", "keys": [key_digest(OTHER)]},
        {"name": "metered", "keys": [key_digest(METERED)], "settings": {"megapixels_per_month": BUDGET}},
    ]}))
    return make_settings("local", tenants_file=tenants, max_jobs_in_flight=2)


@pytest.fixture
async def store(settings):
    status = StatusStore(redis.Redis.from_url(settings.redis_url, decode_responses=True))
    yield status
    await status.close()


async def submit(api, secret: str, image: bytes | None = None, **headers: str):
    return await api.post("/api/v1/resize", data=form(image or make_image(32, 24), width=16),
                          headers={**bearer(secret), **headers})


async def accepted(api, secret: str, image: bytes | None = None, **headers: str) -> str:
    response = await submit(api, secret, image, **headers)
    assert response.status == 202, await response.text()
    return (await response.json())["job_id"]


async def assert_quota_exceeded(response) -> None:
    assert response.status == 429, await response.text()
    assert (await response.json())["error"]["code"] == "QUOTA_EXCEEDED"
    assert response.headers["Retry-After"].isdigit() and int(response.headers["Retry-After"]) >= 1


async def refusals(api, tenant: str, quota: str) -> float:
    """pixq_quota_refusals_total{tenant, quota} as GET /metrics shows it (a process-wide counter)."""
    text = await (await api.get("/metrics")).text()
    prefix = f'pixq_quota_refusals_total{{quota="{quota}",tenant="{tenant}"}} '
    return next(float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix))


async def created(settings, store: StatusStore) -> tuple[int, int, int, int]:
    """(job statuses, stored inputs, messages in PIXQ_JOBS, batches): what a submit leaves."""
    inputs = settings.storage_dir / "inputs"
    return (len(await store.client.keys(f"{names.JOB_KEY_PREFIX}*")),
            sum(1 for path in inputs.rglob("*") if path.is_file()) if inputs.exists() else 0,
            await jobs_in_stream(settings),
            len(await store.client.keys(f"{names.KEY_PREFIX}:batch:*")))


async def finish(store: StatusStore, job_id: str) -> None:
    """What a worker writes for a job that runs and completes (worker.status_writer)."""
    assert await store.advance(job_id, 0, 1, JobStatus.PROCESSING)
    assert await store.advance(job_id, 0, 1, JobStatus.COMPLETED, result={"width": 16})


async def test_past_its_cap_a_submit_is_refused_and_creates_nothing(settings, store):
    async with running_api(settings) as api:
        jobs = [await accepted(api, CAPPED) for _ in range(CAP)]
        before = await created(settings, store)
        assert before == (CAP, CAP, CAP, 0)
        counted = await refusals(api, "capped", "jobs_in_flight")

        refused = await submit(api, CAPPED, **{"Idempotency-Key": "fourth"})
        await assert_quota_exceeded(refused)
        assert await refusals(api, "capped", "jobs_in_flight") == counted + 1
        assert await created(settings, store) == before
        assert not await store.client.exists(names.idempotency_key("capped", "fourth"))

        # Another tenant is held to its own cap (here MAX_JOBS_IN_FLIGHT=2), not to capped's.
        for _ in range(2):
            await accepted(api, OTHER)
        await assert_quota_exceeded(await submit(api, OTHER))

        # A job finishing frees its slot, once: the refused request's retry now goes through.
        await finish(store, jobs[0])
        retried = await submit(api, CAPPED, **{"Idempotency-Key": "fourth"})
        assert retried.status == 202, await retried.text()
        assert "Idempotent-Replayed" not in retried.headers
        await assert_quota_exceeded(await submit(api, CAPPED))

        # A failed job frees its slot as a completed one does.
        await store.advance(jobs[1], 0, 1, JobStatus.FAILED, error_code="INVALID_IMAGE", error="bad")
        await accepted(api, CAPPED)


async def test_concurrent_submits_never_pass_the_cap(settings, store):
    """The check and the create are one script: ten submits at once, exactly CAP accepted."""
    async with running_api(settings) as api:
        responses = await asyncio.gather(*(submit(api, CAPPED) for _ in range(10)))
        assert sorted(response.status for response in responses) == [202] * CAP + [429] * (10 - CAP)
        assert await store.client.zcard(names.in_flight_key("capped")) == CAP
        assert (await created(settings, store))[:3] == (CAP, CAP, CAP)


async def test_jobs_that_no_longer_run_do_not_hold_a_slot(settings, store):
    """States a crash (or an expiry) can leave: none keeps the tenant short."""
    async with running_api(settings) as api:
        running = [await accepted(api, CAPPED) for _ in range(CAP)]
        in_flight = names.in_flight_key("capped")
        now_ms = int(time.time() * 1000)

        # A status hash gone (expired, deleted) while its job was still in the set.
        await store.client.delete(names.job_key(running[0]))
        await accepted(api, CAPPED)
        await assert_quota_exceeded(await submit(api, CAPPED))

        # A terminal status written around the script (the set never heard of it).
        await store.client.hset(names.job_key(running[1]), mapping={"phase": 3, "status": "completed"})
        await accepted(api, CAPPED)
        await assert_quota_exceeded(await submit(api, CAPPED))

        # A batch reservation whose API died before creating the job: it counts while a
        # batch could still be on it, and no longer after RESERVATION_GRACE_SECONDS.
        await finish(store, running[2])
        await store.client.zadd(in_flight, {"r:00000000-0000-4000-8000-000000000001": now_ms})
        await assert_quota_exceeded(await submit(api, CAPPED))
        await store.client.zadd(in_flight, {"r:00000000-0000-4000-8000-000000000001": now_ms - 600_000})
        await accepted(api, CAPPED)
        assert await store.client.zcard(in_flight) == CAP


async def test_a_batch_fits_whole_or_creates_nothing(settings, store):
    storage = make_storage(settings)
    await storage.ensure_ready()
    await storage.put_bytes("uploads/capped/in.png", make_image(32, 24, ".png"), "image/png")
    item = {"type": "resize", "input": {"storage_key": "uploads/capped/in.png"}, "parameters": {"width": 16}}
    missing = {**item, "input": {"storage_key": "uploads/capped/missing.png"}}
    async with running_api(settings) as api:
        await accepted(api, CAPPED)
        before = await created(settings, store)

        response = await api.post("/api/v1/jobs/batch", json={"jobs": [item] * CAP}, headers=bearer(CAPPED))
        await assert_quota_exceeded(response)
        assert await created(settings, store) == before
        assert await store.client.zcard(names.in_flight_key("capped")) == 1

        # Two slots left: a batch of two whose one item is refused takes one; its other
        # reservation is given back, so one single submit still fits, and then none.
        response = await api.post("/api/v1/jobs/batch", json={"jobs": [item, missing]}, headers=bearer(CAPPED))
        assert response.status == 200, await response.text()
        body = await response.json()
        assert (body["accepted"], body["refused"]) == (1, 1)
        assert body["items"][1]["error"]["code"] == "INPUT_NOT_FOUND"
        await accepted(api, CAPPED)
        await assert_quota_exceeded(await submit(api, CAPPED))


async def test_a_monthly_megapixel_budget_refuses_submits_once_used(settings, store):
    usage = names.megapixels_key("metered", quotas.month_of(datetime.now(timezone.utc)))
    image = make_image(100, 100)
    async with running_api(settings) as api, running_worker(settings):
        for used in (0.01, 0.02):  # under the budget before each submit; a real worker completes it
            job_id = await accepted(api, METERED, image)
            done = await wait_for_status(api, job_id, headers=bearer(METERED))
            assert done["status"] == "completed", done
            assert float(await store.client.get(usage)) == pytest.approx(used)

        counted = await refusals(api, "metered", "megapixels")
        refused = await submit(api, METERED, image)
        await assert_quota_exceeded(refused)
        assert await refusals(api, "metered", "megapixels") == counted + 1
        assert "megapixels" in (await refused.json())["error"]["message"]
        assert int(refused.headers["Retry-After"]) <= 31 * 86400
        batch = {"jobs": [{"type": "resize", "input": {"storage_key": "uploads/metered/x.png"},
                           "parameters": {"width": 16}}]}
        await assert_quota_exceeded(await api.post("/api/v1/jobs/batch", json=batch, headers=bearer(METERED)))

        # A completion written again (a redelivery) is not counted twice; other tenants are unaffected.
        assert await store.advance(job_id, 0, 1, JobStatus.COMPLETED, tenant="metered", result=done["result"]) is None
        assert float(await store.client.get(usage)) == pytest.approx(0.02)
        await accepted(api, OTHER, image)


async def test_a_request_body_is_held_to_max_request_bytes(make_settings):
    settings = make_settings("local", max_request_bytes=50_000)
    big_json = {"input": {"storage_key": "uploads/default/in.png"}, "parameters": {"width": 16, "pad": "x" * 60_000}}
    async with running_api(settings) as api:
        response = await api.post("/api/v1/resize", json=big_json)
        assert response.status == 413, await response.text()
        assert (await response.json())["error"]["code"] == "PAYLOAD_TOO_LARGE"

        response = await api.post("/api/v1/jobs/batch", json={"jobs": [big_json]})
        assert response.status == 413 and (await response.json())["error"]["code"] == "PAYLOAD_TOO_LARGE"

        # A multipart batch is streamed: its parts together are held to the same cap.
        image = make_image(32, 24)
        data = FormData()
        data.add_field("jobs", json.dumps({"jobs": [{"type": "resize", "input": {"part": "a"},
                                                      "parameters": {"width": 16}}]}),
                       content_type="application/json")
        data.add_field("a", image, filename="a.jpg")
        data.add_field("b", b"\0" * 60_000, filename="b.bin")
        response = await api.post("/api/v1/jobs/batch", data=data)
        assert response.status == 413 and (await response.json())["error"]["code"] == "PAYLOAD_TOO_LARGE"

        # A single multipart submit too: its file and fields together, counted as they stream.
        response = await api.post("/api/v1/resize", data=form(image, width=16, note="x" * 30_000, more="y" * 30_000))
        assert response.status == 413 and (await response.json())["error"]["code"] == "PAYLOAD_TOO_LARGE"
        assert (await api.post("/api/v1/resize", data=form(image, width=16))).status == 202


@pytest.mark.parametrize("quota", ["max_jobs_in_flight: 0", "max_jobs_in_flight: yes", "max_jobs_in_flight: '10'",
                                   "megapixels_per_month: -1", "megapixels_per_month: .inf"])
def test_a_bad_quota_in_tenants_file_stops_the_api(make_settings, tmp_path: Path, capsys, quota: str):
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(f"tenants:\n  - name: a\n    keys: ['{key_digest('k')}']\n    settings:\n      {quota}\n")
    with pytest.raises(SystemExit) as exit_info:
        create_app(make_settings("local", tenants_file=tenants))
    assert exit_info.value.code == 2
    assert "invalid configuration: TENANTS_FILE:" in capsys.readouterr().err


def test_budget_arithmetic():
    """Pure parts of the budget: a job's megapixels, and when a used-up month renews."""
    assert quotas.input_megapixels({"input": {"width": 2000, "height": 1000, "frames": 3}}) == 2.0
    assert quotas.input_megapixels({"input": {"width": 100, "height": 100}}) == 0.01
    for unknown in (None, "", {}, {"input": None}, {"input": {"width": 0, "height": 5}},
                    {"input": {"width": "9", "height": 5}}, {"input": {"width": True, "height": 5}}):
        assert quotas.input_megapixels(unknown) is None
    assert quotas.month_of(datetime(2026, 12, 31, 23, 59, 30, tzinfo=timezone.utc)) == "2026-12"
    assert quotas.seconds_to_next_month(datetime(2026, 12, 31, 23, 59, 30, tzinfo=timezone.utc)) == 30
    assert quotas.seconds_to_next_month(datetime(2026, 2, 1, tzinfo=timezone.utc)) == 28 * 86400
