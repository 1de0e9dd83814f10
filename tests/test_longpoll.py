"""Long-poll: GET /api/v1/jobs/{id} with an ETag, If-None-Match and ?wait=.

Real API, worker, nats-server and redis-server. Proven here: the ETag names the status
position and changes with it; a matching If-None-Match answers 304 (at once, or after
?wait= when nothing changes); a change during the wait answers 200 at once with the new
document and ETag; a waiting request reads Redis a bounded number of times (it wakes on the
job's events, it does not poll); bad waits are 422; other tenants get 404; shutdown answers
waiting requests.
"""

import asyncio
import time

import pytest
import redis.asyncio as redis

from api.events_hub import EVENTS_HUB, end_streams
from tests.conftest import running_worker
from tests.helpers import form, make_image, wait_for_status

ACME, GLOBEX = "acme-key", "globex-key"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def settings(make_settings):
    return make_settings("local", api_keys={ACME: "acme", GLOBEX: "globex"})


async def submit(api) -> str:
    response = await api.post("/api/v1/resize", data=form(make_image(120, 90), width=40), headers=bearer(ACME))
    assert response.status == 202, await response.text()
    return (await response.json())["job_id"]


async def get(api, job_id: str, query: str = "", etag: str | None = None, secret: str = ACME):
    headers = bearer(secret) | ({"If-None-Match": etag} if etag else {})
    return await api.get(f"/api/v1/jobs/{job_id}{query}", headers=headers)


async def listening(api, count: int = 1) -> None:
    """Until ``count`` requests wait on the hub (a condition polled with a deadline)."""
    hub = api.server.app[EVENTS_HUB]
    async with asyncio.timeout(10):
        while hub.listeners < count:
            await asyncio.sleep(0.01)


async def test_etag_names_the_status_and_a_match_is_not_modified(api, settings):
    job_id = await submit(api)
    queued = await get(api, job_id)
    assert queued.status == 200 and queued.headers["ETag"] == '"0-0-0"'
    assert queued.headers["Cache-Control"] == "no-cache"
    same = await get(api, job_id, etag='"0-0-0"')
    assert same.status == 304 and same.headers["ETag"] == '"0-0-0"' and await same.read() == b""
    for header in ('W/"0-0-0"', '"1-2-3", "0-0-0"', "*"):
        assert (await get(api, job_id, etag=header)).status == 304, header
    assert (await get(api, job_id, etag='"0-0-1"')).status == 200

    async with running_worker(settings):
        done = await wait_for_status(api, job_id, headers=bearer(ACME))
    response = await get(api, job_id)
    assert response.headers["ETag"] == '"0-1-3"'  # attempt 1, terminal phase
    assert (await response.json())["status"] == done["status"] == "completed"


@pytest.mark.parametrize("if_none_match", ["current", "*"])
async def test_wait_answers_as_soon_as_the_status_changes(api, settings, if_none_match):
    job_id = await submit(api)  # no worker: it stays queued until one starts
    etag = (await get(api, job_id)).headers["ETag"]
    waiting = asyncio.create_task(get(api, job_id, "?wait=30s", etag if if_none_match == "current" else "*"))
    await listening(api)
    async with running_worker(settings):
        # Answered by the change, long before the 30 s wait would have ended.
        response = await asyncio.wait_for(waiting, 20)
        await wait_for_status(api, job_id, headers=bearer(ACME))
    assert response.status == 200
    body = await response.json()
    # The new document with its own ETag: processing (attempt 1) or, if the job was that quick, completed.
    assert (body["status"], response.headers["ETag"]) in (("processing", '"0-1-1"'), ("completed", '"0-1-3"'))


async def test_wait_ends_with_304_when_nothing_changes_without_polling_redis(api, settings, redis_proc):
    job_id = await submit(api)
    etag = (await get(api, job_id)).headers["ETag"]
    client = redis.Redis(port=redis_proc.port)
    try:
        await client.config_resetstat()
        started = time.monotonic()
        response = await get(api, job_id, "?wait=1500ms", etag)
        elapsed = time.monotonic() - started
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    assert response.status == 304 and response.headers["ETag"] == etag and await response.read() == b""
    assert elapsed >= 1.4  # it did wait
    # One read to authorise, one after listening, one for the answer: never a polling loop.
    assert stats.get("cmdstat_hgetall", {}).get("calls", 0) <= 3, stats.get("cmdstat_hgetall")


async def test_wait_without_a_matching_etag_answers_at_once(api):
    job_id = await submit(api)
    for etag in (None, '"9-9-9"'):
        response = await asyncio.wait_for(get(api, job_id, "?wait=30s", etag), 5)
        assert response.status == 200 and response.headers["ETag"] == '"0-0-0"'


async def test_wait_is_validated_and_tenant_scoped(api):
    job_id = await submit(api)
    for wait in ("soon", "-1s", "30x", "1e3"):
        response = await get(api, job_id, f"?wait={wait}", '"0-0-0"')
        assert response.status == 422, wait
        assert (await response.json())["error"]["code"] == "INVALID_PARAMETERS"
    theirs = await get(api, job_id, "?wait=1s", '"0-0-0"', secret=GLOBEX)
    assert theirs.status == 404 and (await theirs.json())["error"]["code"] == "NOT_FOUND"
    assert (await get(api, "00000000-0000-4000-8000-000000000000", "?wait=1s", '"0-0-0"')).status == 404


async def test_shutdown_answers_waiting_requests(api):
    job_id = await submit(api)
    waiting = asyncio.create_task(get(api, job_id, "?wait=60s", '"0-0-0"'))
    await listening(api)
    await end_streams(api.server.app)
    response = await asyncio.wait_for(waiting, 10)
    assert response.status == 304


def test_wait_is_capped_at_a_minute():
    from aiohttp.test_utils import make_mocked_request

    from api.handlers.jobs import LONG_POLL_MAX_SECONDS, _long_poll_wait

    assert _long_poll_wait(make_mocked_request("GET", "/api/v1/jobs/x?wait=2h")) == LONG_POLL_MAX_SECONDS == 60
    assert _long_poll_wait(make_mocked_request("GET", "/api/v1/jobs/x?wait=250ms")) == 0.25
    assert _long_poll_wait(make_mocked_request("GET", "/api/v1/jobs/x")) == 0
