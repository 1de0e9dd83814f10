"""Redis stopped and started: submissions get 503 and publish nothing; readiness names redis;
a worker started during the outage takes no job until Redis answers (worker.outage: a job it
took could not have its status recorded), then every queued job completes on its first attempt.
(Statuses of jobs already in flight when Redis goes away travel through the PIXQ_STATUS outbox:
tests/faults/test_outage_retries.py, the Redis SIGSTOP test.)"""

from pixq import names
from tests.faults.harness import (JetStreamProbe, StatusRecorder, accepted, get_json, input_files, metric,
                                  submit, wait_until)

QUEUED = 8


async def test_redis_outage_refuses_submits_and_a_worker_waits_for_redis(
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

        # A worker started during the outage is live (not ready) and takes no job: its first
        # probe (before its first pull) found Redis down.
        worker = stack.spawn_worker(wait="live")
        status, body = await get_json(http, f"{worker.metrics_url}/health/ready")
        assert status == 503 and body["checks"]["redis"] is False
        assert await metric(http, worker, "pixq_worker_dependency_up", 'dependency="redis"') == 0
        info = await probe.js.consumer_info(names.JOBS_STREAM, names.WORKERS_CONSUMER)
        assert (info.num_pending, info.num_ack_pending, info.delivered.consumer_seq) == (QUEUED, 0, 0), info
        assert await metric(http, worker, "pixq_worker_jobs_total", 'outcome="completed"') == 0

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
