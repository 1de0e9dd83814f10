"""Redis stopped and started: submissions get 503 and publish nothing; readiness names redis;
workers keep processing queued jobs and their statuses arrive through the PIXQ_STATUS outbox."""

from pixq import names
from tests.faults.harness import (JetStreamProbe, StatusRecorder, accepted, get_json, input_files, metric,
                                  submit, wait_until)

QUEUED = 8


async def test_redis_outage_refuses_submits_and_workers_finish_through_the_outbox(
        make_stack, http, nats, redis_proc, tmp_path):
    stack = make_stack()
    _, api = stack.spawn_api()
    jobs = [await accepted(http, api, "medium") for _ in range(QUEUED)]  # no worker yet: they wait queued

    redis_proc.stop()

    async def api_not_ready():
        status, body = await get_json(http, f"{api}/health/ready")
        return status == 503 and body["checks"] == {"nats": True, "redis": False, "storage": True}
    await wait_until(api_not_ready, 15, "/health/ready to report redis down")

    async with JetStreamProbe(nats.port) as probe:
        published = (await probe.state(names.JOBS_STREAM)).last_seq
        inputs = input_files(tmp_path)
        for headers in ({}, {"Idempotency-Key": "during-redis-outage"}):
            status, body = await submit(http, api, "small", headers=headers)
            assert status == 503 and body["error"]["code"] == "STATUS_UNAVAILABLE", (status, body)
        assert (await probe.state(names.JOBS_STREAM)).last_seq == published, "a refused submission was published"
        assert input_files(tmp_path) == inputs, "a refused submission left its upload behind"
        async with http.get(f"{api}/api/v1/jobs/{jobs[0]}") as response:
            assert response.status == 503

        # A worker started during the outage is live (not ready) and processes the queue anyway.
        worker = stack.spawn_worker(wait="live")
        status, body = await get_json(http, f"{worker.metrics_url}/health/ready")
        assert status == 503 and body["checks"]["redis"] is False

        async def queue_processed():
            done = await metric(http, worker, "pixq_worker_jobs_total", 'outcome="completed"') or 0
            return done == QUEUED and (await probe.state(names.JOBS_STREAM)).messages == 0
        await wait_until(queue_processed, 60, "the worker to complete every queued job while Redis is down")
        outbox = (await probe.state(names.STATUS_STREAM)).messages
        assert outbox >= QUEUED, f"only {outbox} deferred status updates for {QUEUED} completed jobs"

        redis_proc.start()
        recorder = StatusRecorder(http, api)
        for job_id in jobs:
            recorder.track(job_id)
        await recorder.wait_all({"completed"}, timeout=30)
        recorder.assert_monotonic()

        async def outbox_drained():
            return (await probe.state(names.STATUS_STREAM)).messages == 0
        await wait_until(outbox_drained, 15, "the status outbox to drain")
        assert (await probe.state(names.JOBS_STREAM)).last_seq == published

    for job_id in jobs:
        async with http.get(f"{api}/api/v1/jobs/{job_id}") as response:
            body = await response.json()
        assert body["status"] == "completed" and body["attempts"] == 1 and body["result"]["width"] > 0, body
        async with http.get(body["result"]["url"]) as download:
            assert download.status == 200
    status, _ = await get_json(http, f"{api}/health/ready")
    assert status == 200
