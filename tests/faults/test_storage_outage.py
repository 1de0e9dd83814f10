"""S3 storage unreachable for a while (workers reach moto through a proxy we cut): the worker
turns unready, holds the jobs it took (`processing`, attempt 1: no retry spent, worker.outage)
and pulls no other; once storage forwards again every job completes on its first attempt."""

import uuid


from tests.faults.harness import StatusRecorder, accepted, get_json, metric, wait_job, wait_until

JOBS = 4


async def test_storage_outage_holds_jobs_then_completes_on_first_attempt(make_stack, http, s3_endpoint, proxy):
    stack = make_stack(STORAGE_TYPE="minio", STORAGE_ENDPOINT=s3_endpoint, BUCKET_NAME=f"pixq-{uuid.uuid4().hex[:12]}",
                       MINIO_ACCESS_KEY="testing", MINIO_SECRET_KEY="testing",
                       MAX_RETRIES="6", RETRY_BACKOFF="0s,1s,2s")
    _, api = stack.spawn_api()  # the API talks to S3 directly: uploads work throughout
    worker = stack.spawn_worker(STORAGE_ENDPOINT=proxy.endpoint)

    proxy.down()
    jobs = [await accepted(http, api, "small") for _ in range(JOBS)]
    recorder = StatusRecorder(http, api)
    for job_id in jobs:
        recorder.track(job_id)
    recorder.start()
    try:
        async def held():
            return (await metric(http, worker, "pixq_worker_outage_holds_total", 'dependency="storage"') or 0) >= 1
        await wait_until(held, 30, "the worker to hold a job it took")
        status, ready = await get_json(http, f"{worker.metrics_url}/health/ready")
        assert status == 503 and ready["checks"]["storage"] is False, ready
        assert proxy.refused > 0
        await recorder.poll_once()
        # At most WORKER_CONCURRENCY (2) jobs taken, each held at its first attempt; the rest untouched.
        seen = {job_id: recorder.latest(job_id) for job_id in jobs}
        assert set(seen.values()) <= {("processing", 1), ("queued", 0)}, seen
        assert 1 <= list(seen.values()).count(("processing", 1)) <= 2, seen

        proxy.up()
        await recorder.wait_all({"completed"}, timeout=45)
    finally:
        await recorder.stop()
    recorder.assert_monotonic()
    for job_id in jobs:
        history = [status for _, status, _ in recorder.seen[job_id]]
        assert "retrying" not in history, history
        assert recorder.latest(job_id) == ("completed", 1), recorder.seen[job_id]
        body = await wait_job(http, api, job_id, {"completed"})
        assert body["error_code"] is None and "next_attempt_at" not in body, body
        async with http.get(body["result"]["url"]) as download:
            assert download.status == 200 and len(await download.read()) == body["result"]["bytes"]


async def test_a_hold_past_outage_hold_max_counts_as_an_attempt(make_stack, http, s3_endpoint, proxy):
    stack = make_stack(STORAGE_TYPE="minio", STORAGE_ENDPOINT=s3_endpoint, BUCKET_NAME=f"pixq-{uuid.uuid4().hex[:12]}",
                       MINIO_ACCESS_KEY="testing", MINIO_SECRET_KEY="testing",
                       MAX_RETRIES="6", RETRY_BACKOFF="0s,1s", OUTAGE_HOLD_MAX="1s")
    _, api = stack.spawn_api()
    worker = stack.spawn_worker(STORAGE_ENDPOINT=proxy.endpoint)

    proxy.down()
    job_id = await accepted(http, api, "small")
    # Held for 1 s, then counted: `retrying` after attempt 1, handed back (nak); the paused worker
    # pulls it again only once storage answers.
    body = await wait_job(http, api, job_id, {"retrying"}, timeout=30)
    assert body["error_code"] == "STORAGE_UNAVAILABLE" and body["attempts"] == 1 and body["next_attempt_at"], body
    assert "outage_hold_expired" in worker.log.read_text()
    proxy.up()
    done = await wait_job(http, api, job_id, {"completed"}, timeout=30)
    assert done["attempts"] == 2, done
