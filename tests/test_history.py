"""GET /api/v1/jobs: each tenant's history, newest first, in cursor pages that never repeat or
skip a job while new ones arrive."""

from pathlib import Path

import pytest

from tests.conftest import running_api
from tests.helpers import make_image
from tests.test_tenants import ALPHA, BETA, OPS, bearer, tenants_file  # noqa: F401 (fixture)


async def submit_by_key(api, secret: str, key: str, job_type: str = "resize") -> str:
    parameters = {"width": 16} if job_type == "resize" else {"x": 0, "y": 0, "width": 8, "height": 8}
    response = await api.post(f"/api/v1/{job_type}", json={"input": {"storage_key": key}, "parameters": parameters},
                              headers=bearer(secret))
    assert response.status == 202, await response.text()
    return (await response.json())["job_id"]


async def pages(api, secret: str, query: str = "", between=None) -> list[list[str]]:
    seen, cursor = [], None
    while True:
        url = f"/api/v1/jobs?limit=7{query}" + (f"&cursor={cursor}" if cursor else "")
        response = await api.get(url, headers=bearer(secret))
        assert response.status == 200, await response.text()
        body = await response.json()
        seen.append([item["job_id"] for item in body["items"]])
        if between:
            await between()
        cursor = body["next_cursor"]
        if not cursor:
            return seen


async def test_history_pages_each_job_once_while_jobs_arrive(make_settings, tenants_file: Path):  # noqa: F811
    settings = make_settings("local", tenants_file=tenants_file)
    for tenant in ("alpha", "beta"):
        path = settings.storage_dir / "inputs" / tenant / "photo.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make_image(32, 32))
    async with running_api(settings) as api:
        alpha_jobs = [await submit_by_key(api, ALPHA, "inputs/alpha/photo.jpg", "crop" if i % 3 == 0 else "resize")
                      for i in range(24)]
        beta_jobs = [await submit_by_key(api, BETA, "inputs/beta/photo.jpg") for _ in range(3)]
        arrivals: list[str] = []

        async def arrive() -> None:
            arrivals.append(await submit_by_key(api, ALPHA, "inputs/alpha/photo.jpg"))

        listed = await pages(api, ALPHA, between=arrive)
        flat = [job for page in listed for job in page]
        assert [len(page) for page in listed[:3]] == [7, 7, 7]
        assert flat == list(reversed(alpha_jobs))  # newest first, each once, no arrival, no other tenant

        # Filters: type, status, and the creation range (inclusive after, exclusive before).
        crops = [job for page in await pages(api, ALPHA, "&type=crop") for job in page]
        assert crops == [job for i, job in reversed(list(enumerate(alpha_jobs))) if i % 3 == 0]
        assert [job for page in await pages(api, BETA, "&status=queued") for job in page] == beta_jobs[::-1]
        assert [job for page in await pages(api, BETA, "&status=completed") for job in page] == []
        first = await (await api.get(f"/api/v1/jobs/{alpha_jobs[5]}", headers=bearer(ALPHA))).json()
        since = first["created_at"].replace("Z", "%2B00:00")
        recent = [job for page in await pages(api, ALPHA, f"&created_after={since}") for job in page]
        assert set(alpha_jobs[5:]) <= set(recent) and not set(alpha_jobs[:5]) & set(recent)

        # An admin sees every tenant, or one; a user may not ask for another tenant.
        everyone = {job for page in await pages(api, OPS) for job in page}
        assert set(alpha_jobs + beta_jobs + arrivals) == everyone
        assert {job for page in await pages(api, OPS, "&tenant=beta") for job in page} == set(beta_jobs)
        assert (await api.get("/api/v1/jobs?tenant=alpha", headers=bearer(BETA))).status == 403

        for query in ("cursor=bm9wZQ", "cursor=%2A", "limit=0", "limit=101", "limit=%C2%B2", "status=done",
                      "type=x", "created_after=yesterday"):
            response = await api.get(f"/api/v1/jobs?{query}", headers=bearer(ALPHA))
            assert response.status == 422, query
            assert (await response.json())["error"]["code"] == "INVALID_PARAMETERS"


async def test_a_created_job_is_indexed_with_its_status_and_expired_entries_are_trimmed(redis_proc):
    """The history entries are written by the same script as the job's status (no second round
    trip, no job without its entry): a create adds the job to its tenant's history and the
    admin's, and drops entries older than the status TTL; a refused (exclusive) create adds nothing."""
    import time

    import redis.asyncio as redis

    from pixq import names
    from pixq.status import JobExists, StatusStore

    client = redis.Redis(port=redis_proc.port, decode_responses=True)
    store = StatusStore(client, job_ttl=60)
    keys = (names.tenant_jobs_key("acme"), names.ALL_JOBS_KEY)
    now_ms = int(time.time() * 1000)
    for key in keys:
        await client.zadd(key, {"expired-job": now_ms - 120_000, "recent-job": now_ms - 30_000})
    try:
        await store.create("job-1", "resize", "acme", "req-1")
        for key in keys:
            assert await client.zrange(key, 0, -1) == ["recent-job", "job-1"], key
        with pytest.raises(JobExists):
            await store.create("job-1", "resize", "other", "req-2", exclusive=True)
        assert await client.zcard(names.tenant_jobs_key("other")) == 0
    finally:
        await client.aclose()
