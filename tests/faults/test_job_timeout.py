"""JOB_TIMEOUT: an attempt past it is abandoned (libvips cancelled, its thread freed) and retried,
then dead-lettered with TIMEOUT; the worker stays live and keeps processing other jobs."""

from tests.faults.harness import accepted, get_json, metric, wait_job, wait_until

JOB_TIMEOUT = 1.0


async def test_job_timeout_abandons_the_attempt_retries_and_worker_stays_healthy(make_stack, http):
    stack = make_stack(JOB_TIMEOUT=f"{JOB_TIMEOUT:g}s", MAX_RETRIES="1", RETRY_BACKOFF="1s", WORKER_CONCURRENCY="1")
    _, api = stack.spawn_api()
    worker = stack.spawn_worker()

    slow = await accepted(http, api, "slow")  # ~3 s of libvips work: every attempt times out
    await wait_job(http, api, slow, {"processing"}, timeout=20)
    # With one slot, these only run once the slow attempt has been abandoned.
    behind = [await accepted(http, api, "small") for _ in range(3)]
    retrying = await wait_job(http, api, slow, {"retrying"}, timeout=10)
    assert retrying["error_code"] == "TIMEOUT" and retrying["attempts"] == 1 and retrying["next_attempt_at"], retrying
    for job_id in behind:
        done = await wait_job(http, api, job_id, {"completed"}, timeout=10)
        assert done["attempts"] == 1, done

    dead = await wait_job(http, api, slow, {"failed"}, timeout=20)
    assert dead["error_code"] == "DEAD_LETTERED" and dead["attempts"] == 2 and "TIMEOUT" in dead["error"], dead
    status, entry = await get_json(http, f"{api}/api/v1/dlq/{slow}")
    assert status == 200 and entry["error_code"] == "TIMEOUT" and entry["reason"] == "retries_exhausted", entry

    # Still healthy, and libvips really stopped: were the two timed-out attempts still running,
    # they would hold both of the pool's threads (WORKER_CONCURRENCY + 1) and these would time out too.
    status, live = await get_json(http, f"{worker.metrics_url}/health/live")
    assert status == 200, live
    after = [await accepted(http, api, "small") for _ in range(3)]
    for job_id in after:
        done = await wait_job(http, api, job_id, {"completed"}, timeout=10)
        assert done["attempts"] == 1, done

    async def idle():
        return await metric(http, worker, "pixq_worker_jobs_in_flight") == 0
    await wait_until(idle, 5, "no job in flight")
    assert worker.process.poll() is None
