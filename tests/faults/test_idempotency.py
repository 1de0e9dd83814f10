"""Idempotency-Key across two API processes sharing NATS and Redis: the same key returns the same
job, a different key a new one, and concurrent submissions with one key create exactly one job;
and a retry with the key runs a job whose first API died before publishing it."""

import asyncio
import base64
import contextlib
import hashlib
import hmac

import aiohttp
import redis.asyncio as aioredis

from pixq import names
from tests.faults.harness import (JetStreamProbe, image, input_files, job_keys_pattern, kill, metric,
                                  redis_keys, resize_form, wait_job, wait_until)
from tests.faults.tcp_proxy import ToggleProxy


async def _post(http, api: str, key: str) -> tuple[str, bool]:
    async with http.post(f"{api}/api/v1/resize", data=resize_form(image("small")),
                         headers={"Idempotency-Key": key}) as response:
        assert response.status == 202, await response.text()
        return (await response.json())["job_id"], response.headers.get("Idempotent-Replayed") == "true"


async def test_idempotency_key_holds_across_api_processes_and_concurrent_submits(
        make_stack, http, nats, redis_proc, tmp_path):
    stack = make_stack()
    _, api1 = stack.spawn_api()
    _, api2 = stack.spawn_api()
    stack.spawn_worker()

    first, replayed = await _post(http, api1, "order-1")
    assert not replayed
    again, replayed = await _post(http, api2, "order-1")
    assert (again, replayed) == (first, True)
    other, replayed = await _post(http, api2, "order-2")
    assert other != first and not replayed

    racers = await asyncio.gather(*(_post(http, (api1, api2)[i % 2], "order-3") for i in range(12)))
    assert len({job_id for job_id, _ in racers}) == 1, racers
    assert sum(1 for _, replayed in racers if not replayed) == 1, "more than one request created the job"
    raced = racers[0][0]
    assert raced not in (first, other)

    jobs = sorted([first, other, raced])
    async with JetStreamProbe(nats.port) as probe:
        assert (await probe.state(names.JOBS_STREAM)).last_seq == 3, "a duplicate job was published"
    assert sorted(key.rsplit(":", 1)[1] for key in await redis_keys(redis_proc.port, job_keys_pattern())) == jobs
    assert sorted(path.name for path in input_files(tmp_path)) == jobs, "a losing racer left its upload behind"
    for job_id in jobs:
        assert (await wait_job(http, api1, job_id, {"completed"}))["attempts"] == 1


async def die_before_publishing(stack, nats, redis_port: int, send, recorded, warm=None) -> str:
    """Start an API reaching NATS through a proxy, ``warm(api_url)`` it if asked, lose every
    NATS answer to it, ``send(api_url)`` a request, await ``recorded(redis)`` (the job id once
    the request has recorded its job), then SIGKILL that API: its job is recorded as queued and
    its message never reached JetStream. The state an API crash between the status write and
    the publish leaves."""
    proxy = ToggleProxy("127.0.0.1", nats.port).start()
    client = aioredis.Redis(port=redis_port, decode_responses=True)
    try:
        doomed, doomed_url = stack.spawn_api(NATS_URL=f"nats://{proxy.endpoint}")
        if warm is not None:
            await warm(doomed_url)
        async with JetStreamProbe(nats.port) as probe:
            published = (await probe.state(names.JOBS_STREAM)).last_seq
        proxy.swallow_replies()  # NATS never answers that API again: its publishes hang unacknowledged
        sending = asyncio.create_task(send(doomed_url))
        job_id = await wait_until(lambda: recorded(client), 15, "the job to be recorded", interval=0.01)
        kill(doomed)
        with contextlib.suppress(aiohttp.ClientError):
            await sending
        assert (await client.hget(names.job_key(job_id), "status")) == "queued"
    finally:
        proxy.stop()
        await client.aclose()
    async with JetStreamProbe(nats.port) as probe:
        assert (await probe.state(names.JOBS_STREAM)).last_seq == published, "the job's message reached JetStream"
    return job_id


async def test_a_retry_with_the_key_runs_a_job_whose_api_died_before_publishing_it(
        make_stack, http, nats, redis_proc, tmp_path):
    """The client got no answer and retries with its Idempotency-Key: the replay must queue the
    job, not answer 202 for a record no worker will ever see."""
    stack = make_stack()

    async def send(url: str) -> None:
        async with http.post(f"{url}/api/v1/resize", data=resize_form(image("small")),
                             headers={"Idempotency-Key": "order-lost"}):
            pass

    async def recorded(client) -> str | None:
        job_id = await client.get(names.idempotency_key("default", "order-lost"))
        return job_id if job_id and await client.exists(names.job_key(job_id)) else None
    job_id = await die_before_publishing(stack, nats, redis_proc.port, send, recorded)

    _, api = stack.spawn_api()
    stack.spawn_worker()
    again, replayed = await _post(http, api, "order-lost")
    assert (again, replayed) == (job_id, True)
    assert (await wait_job(http, api, job_id, {"completed"}))["attempts"] == 1
    again, replayed = await _post(http, api, "order-lost")  # once it ran, a replay only answers
    assert (again, replayed) == (job_id, True)
    async with JetStreamProbe(nats.port) as probe:
        assert (await probe.state(names.JOBS_STREAM)).last_seq == 1, "the job was published more than once"
    assert [path.name for path in input_files(tmp_path)] == [job_id]


async def test_an_img_url_whose_api_died_before_publishing_its_job_is_served_by_the_next_request(
        make_stack, http, nats, redis_proc, tmp_path):
    """/img's job id is the URL's cache key, so the next request for the URL finds the dead
    API's record: it must queue the job, not wait out IMG_WAIT for it (every request until the
    record expired, 7 days, did)."""
    key, salt = b"k" * 16, b"s" * 16
    stack = make_stack(IMG_KEY=key.hex(), IMG_SALT=salt.hex(), IMG_WAIT="10s")
    source = tmp_path / "storage" / "photos" / "a.jpg"
    source.parent.mkdir(parents=True)
    source.write_bytes(image("small"))

    def signed(path: str) -> str:
        digest = hmac.new(key, salt + path.encode(), hashlib.sha256).digest()
        return "/img/" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode() + path
    url_path = signed("/rs:fit:40:40/plain/local://photos/a.jpg@png")

    async def send(url: str) -> None:
        async with http.get(url + url_path):
            pass

    async def warm(url: str) -> None:
        """One URL made through that API, so its events hub is tailing PIXQ_EVENTS (a miss
        listens before it submits) before NATS stops answering."""
        nonlocal warm_job
        async with http.get(url + signed("/rs:fit:20:20/plain/local://photos/a.jpg@png")) as response:
            assert response.status == 200, await response.text()
        [warm_job] = [key.rsplit(":", 1)[1] for key in await redis_keys(redis_proc.port, job_keys_pattern())]

    async def recorded(client) -> str | None:
        keys = [key async for key in client.scan_iter(job_keys_pattern())]
        return next((key.rsplit(":", 1)[1] for key in keys if not key.endswith(warm_job)), None)
    warm_job = ""
    stack.spawn_worker()
    job_id = await die_before_publishing(stack, nats, redis_proc.port, send, recorded, warm)

    _, api = stack.spawn_api()
    async with http.get(api + url_path) as response:
        assert response.status == 200, await response.text()
        assert response.headers["X-Cache"] == "miss" and response.headers["Content-Type"] == "image/png"
    assert (await wait_job(http, api, job_id, {"completed"}))["attempts"] == 1


async def test_a_job_whose_api_died_before_publishing_it_is_published_by_another_api(
        make_stack, http, nats, redis_proc, tmp_path):
    """No retry at all: the client gave up. Another API's requeue round finds the job recorded
    and still waiting after REQUEUE_CHECK_AFTER, publishes the message the dead API kept, and a
    worker completes it; the surviving API counts it."""
    stack = make_stack()

    async def send(url: str) -> None:
        async with http.post(f"{url}/api/v1/resize", data=resize_form(image("small"))):
            pass

    async def recorded(client) -> str | None:
        keys = [key async for key in client.scan_iter(job_keys_pattern())]
        return keys[0].rsplit(":", 1)[1] if keys else None
    job_id = await die_before_publishing(stack, nats, redis_proc.port, send, recorded)

    survivor, api = stack.spawn_api(REQUEUE_CHECK_AFTER="16s", REQUEUE_CHECK_INTERVAL="200ms")
    stack.spawn_worker()
    assert (await wait_job(http, api, job_id, {"completed"}, timeout=40))["attempts"] == 1
    assert await metric(http, survivor, "pixq_api_unpublished_jobs_published_total") == 1
    async with JetStreamProbe(nats.port) as probe:
        assert (await probe.state(names.JOBS_STREAM)).last_seq == 1
    assert not await redis_keys(redis_proc.port, f"{names.UNPUBLISHED_KEY}*")
