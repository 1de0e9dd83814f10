"""SIGTERM: a worker stops pulling, finishes in-flight jobs within WORKER_SHUTDOWN_GRACE, hands
back (naks) what it cannot finish so another worker takes it at once, and exits 0; the API
finishes an upload that is still arriving when SIGTERM lands, then exits 0."""

import asyncio
import signal
import time

import aiohttp

from tests.faults.harness import (SPECS, accepted, exited, get_status, image, input_files, metric, pipeline_form,
                                  submit, wait_job, wait_until)
from tests.stack import http_status

ACK_WAIT = 30.0
"""Long on purpose: a hand-back that only worked through ACK_WAIT expiry would blow the deadlines."""


async def test_worker_sigterm_finishes_in_flight_then_hands_back_the_rest(make_stack, http):
    stack = make_stack(ACK_WAIT=f"{ACK_WAIT:g}s")
    _, api = stack.spawn_api()
    slow = [await accepted(http, api, "slow") for _ in range(2)]
    queued = [await accepted(http, api, "small") for _ in range(3)]

    # Grace long enough: both in-flight jobs finish, nothing more is pulled, exit 0.
    patient = stack.spawn_worker(WORKER_CONCURRENCY="2", WORKER_SHUTDOWN_GRACE="60s")

    async def both_in_flight():
        return await metric(http, patient, "pixq_worker_jobs_in_flight") == 2
    await wait_until(both_in_flight, 20, "two slow jobs in flight")
    patient.signal(signal.SIGTERM)
    assert await wait_until(exited(patient), 60, "the worker to exit") == (0,), stack.logs()
    for job_id in slow:
        body = await get_status(http, api, job_id)
        assert body["status"] == "completed" and body["attempts"] == 1, body
    for job_id in queued:
        body = await get_status(http, api, job_id)
        assert body["status"] == "queued" and body["attempts"] == 0, body  # it stopped pulling

    # Grace too short: the job is handed back at the end of the grace and another worker
    # starts it at once (attempt 2), long before ACK_WAIT.
    hasty = stack.spawn_worker(WORKER_CONCURRENCY="1", WORKER_SHUTDOWN_GRACE="1s")
    for job_id in queued:
        await wait_job(http, api, job_id, {"completed"}, timeout=20)
    cut = await accepted(http, api, "slow")
    await wait_job(http, api, cut, {"processing"}, timeout=20)
    stack.spawn_worker(WORKER_CONCURRENCY="1")  # idle until the hand-back
    signalled = time.monotonic()
    hasty.signal(signal.SIGTERM)
    await wait_job(http, api, cut, {"processing", "completed"}, timeout=10, where=lambda b: b["attempts"] == 2)
    taken_over = time.monotonic() - signalled
    assert taken_over < 1.0 + 4.0 < ACK_WAIT, taken_over
    assert await wait_until(exited(hasty), 10, "the hasty worker to exit") == (0,), stack.logs()
    exit_after = time.monotonic() - signalled
    assert exit_after < 1.0 + 2.5, f"exit took {exit_after:.1f}s: libvips kept running past the grace"
    assert '"job_handed_back"' in hasty.log.read_text()
    done = await wait_job(http, api, cut, {"completed"}, timeout=30)
    assert done["attempts"] == 2, done


async def test_api_sigterm_drains_a_request_in_progress(make_stack, http, redis_proc, tmp_path):
    """The request has arrived and its handler is mid-way (its upload received, its first Redis
    write, the input's pending mark, held by Redis frozen with SIGSTOP) when SIGTERM lands: it
    still gets its 202."""
    stack = make_stack()
    api_proc, api = stack.spawn_api(API_SHUTDOWN_GRACE="20s")
    stack.spawn_worker()
    redis_proc.process.send_signal(signal.SIGSTOP)
    request = asyncio.create_task(submit(http, api, "small"))
    try:
        async def in_handler():  # the API is handling it (the scrape counts itself too)
            return (await metric(http, api_proc, "pixq_api_requests_in_flight") or 0) >= 2
        await wait_until(in_handler, 10, "the API to be handling the submit")
        assert not input_files(tmp_path)  # held before its input is stored
        api_proc.signal(signal.SIGTERM)

        async def listener_closed():  # shutdown has begun: no new connections accepted
            return await asyncio.to_thread(http_status, f"{api}/health/live") == 0
        await wait_until(listener_closed, 3, "the API to stop listening after SIGTERM")
        assert api_proc.process.poll() is None and not request.done()
    finally:
        redis_proc.process.send_signal(signal.SIGCONT)
    status, answer = await asyncio.wait_for(request, 15)
    assert status == 202, answer
    assert await wait_until(exited(api_proc), 20, "the API to exit") == (0,), stack.logs()

    # The job it accepted on its way out was really queued: a second API reports it completed.
    _, api2 = stack.spawn_api()
    done = await wait_job(http, api2, answer["job_id"], {"completed"}, timeout=20)
    assert done["attempts"] == 1


async def test_api_sigterm_drains_an_upload_still_arriving(make_stack, http):
    """The listener closes at SIGTERM, but an upload whose body is still arriving completes
    (api.main drains in-flight requests before aiohttp's shutdown, which stops reading bodies)."""
    stack = make_stack()
    api_proc, api = stack.spawn_api(API_SHUTDOWN_GRACE="20s")
    form = pipeline_form(image("medium"), SPECS["medium"])
    payload = form()
    body = b"".join([chunk async for chunk in _payload_bytes(payload)])
    half = len(body) // 2
    first_half_sent = asyncio.Event()
    release = asyncio.Event()

    async def trickle():
        yield body[:half]
        first_half_sent.set()
        await release.wait()
        yield body[half:]

    async def upload():
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{api}/api/v1/jobs", data=trickle(),
                                    headers={"Content-Type": payload.content_type}) as response:
                return response.status, await response.json()

    request = asyncio.create_task(upload())
    await asyncio.wait_for(first_half_sent.wait(), 10)

    async def upload_in_flight():  # the API is handling it (the scrape counts itself too)
        return (await metric(http, api_proc, "pixq_api_requests_in_flight") or 0) >= 2
    # Only then SIGTERM: a request the API has not begun by then is not one it owes an answer
    await wait_until(upload_in_flight, 10, "the API to be handling the upload")
    api_proc.signal(signal.SIGTERM)

    async def listener_closed():
        return await asyncio.to_thread(http_status, f"{api}/health/live") == 0
    await wait_until(listener_closed, 10, "the API to stop listening after SIGTERM")
    release.set()
    try:
        status, answer = await asyncio.wait_for(request, 10)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise AssertionError(f"the upload was cut by the shutdown: {exc!r}") from None
    assert status == 202, answer
    assert await wait_until(exited(api_proc), 10, "the API to exit") == (0,)


async def _payload_bytes(payload):
    class Sink:
        def __init__(self):
            self.chunks = []

        async def write(self, chunk):
            self.chunks.append(bytes(chunk))

    sink = Sink()
    await payload.write(sink)
    for chunk in sink.chunks:
        yield chunk
