"""Idempotency-Key across two API processes sharing NATS and Redis: the same key returns the same
job, a different key a new one, and concurrent submissions with one key create exactly one job."""

import asyncio

from pixq import names
from tests.faults.harness import (JetStreamProbe, image, input_files, job_keys_pattern, redis_keys, resize_form,
                                  wait_job)


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
