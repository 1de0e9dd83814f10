"""Outages of pixq's own dependencies never spend a job's retries (issue 14, "Must be true" 2).

With MAX_RETRIES=3 and RETRY_BACKOFF=1s,2s,4s a job has 7 s of backoff in all: before the
outage gate (worker.outage), an 8 s storage cut dead-lettered jobs that had nothing wrong with
them. Now a worker pauses its pulls, holds its in-flight jobs (in-progress acks) and runs
them again in place once the dependency answers: every job completes and none is dead-lettered.

The short cuts (8 s storage, 8 s Redis SIGSTOP, a nats-server restart) run in `make test`;
``PIXQ_LONG_OUTAGES=1`` (`make test-outages`) runs the issue's full lengths: 60 s storage, 30 s Redis.
The cut's length is the fault itself, so it is slept; every synchronisation awaits an observable.
"""

import asyncio
import os
import signal
import time
import uuid


from pixq import names
from tests.faults.harness import (LONG_OUTAGES, JetStreamProbe, StatusRecorder, accepted, get_json, metric,
                                  wait_until)

RETRIES = {"MAX_RETRIES": "3", "RETRY_BACKOFF": "1s,2s,4s", "ACK_WAIT": "3s", "OUTAGE_HOLD_MAX": "5m"}
"""The issue's retry settings: 4 deliveries and 7 s of backoff in all, shorter than every cut here."""
JOBS = 30
STORAGE_CUT = 60.0 if LONG_OUTAGES else 8.0
REDIS_STOP = 30.0 if LONG_OUTAGES else 8.0


async def _not_ready(http, worker, dependency: str):
    async def check():
        status, body = await get_json(http, f"{worker.metrics_url}/health/ready")
        return status == 503 and body["checks"][dependency] is False and body
    return await wait_until(check, 15, f"the worker to report {dependency} down")


async def _all_completed_none_dead(http, api, nats_port: int, jobs: list[str], timeout: float) -> StatusRecorder:
    recorder = StatusRecorder(http, api)
    for job_id in jobs:
        recorder.track(job_id)
    await recorder.wait_all({"completed", "failed"}, timeout=timeout)
    failed = {job: recorder.seen[job] for job in jobs if recorder.latest(job)[0] != "completed"}
    assert not failed, f"{len(failed)} of {len(jobs)} jobs failed: {failed}"
    async with JetStreamProbe(nats_port) as probe:
        assert (await probe.state(names.DLQ_STREAM)).messages == 0
    return recorder


async def test_storage_cut_longer_than_all_backoff_spends_no_retry(make_stack, http, nats, s3_endpoint, proxy):
    stack = make_stack(STORAGE_TYPE="minio", STORAGE_ENDPOINT=s3_endpoint, BUCKET_NAME=f"pixq-{uuid.uuid4().hex[:12]}",
                       MINIO_ACCESS_KEY="testing", MINIO_SECRET_KEY="testing", **RETRIES)
    _, api = stack.spawn_api()  # the API reaches S3 directly: uploads work throughout
    worker = stack.spawn_worker(STORAGE_ENDPOINT=proxy.endpoint)

    proxy.down()
    jobs = [await accepted(http, api, "small") for _ in range(JOBS)]
    await _not_ready(http, worker, "storage")
    await asyncio.sleep(STORAGE_CUT)  # the outage itself
    assert proxy.refused > 0
    down = await metric(http, worker, "pixq_worker_dependency_up", 'dependency="storage"')
    in_flight = await metric(http, worker, "pixq_worker_jobs_in_flight")
    proxy.up()

    recorder = await _all_completed_none_dead(http, api, nats.port, jobs, timeout=60)
    # It held the jobs it had (in-progress acks) and pulled no other while storage was down.
    assert down == 0 and in_flight <= 2, (down, in_flight)
    assert await metric(http, worker, "pixq_worker_outage_holds_total", 'dependency="storage"') > 0
    assert await metric(http, worker, "pixq_worker_jobs_total", 'outcome="retried"') == 0
    assert all(recorder.latest(job)[1] == 1 for job in jobs), {job: recorder.seen[job] for job in jobs}
    status, _ = await get_json(http, f"{worker.metrics_url}/health/ready")
    assert status == 200
    assert await metric(http, worker, "pixq_worker_dependency_up", 'dependency="storage"') == 1


async def test_redis_sigstop_spends_no_retry(make_stack, http, nats, redis_proc):
    stack = make_stack(**RETRIES)
    _, api = stack.spawn_api()
    worker = stack.spawn_worker()
    jobs = [await accepted(http, api, "medium") for _ in range(JOBS)]

    async def busy():
        return (await metric(http, worker, "pixq_worker_jobs_in_flight") or 0) > 0
    await wait_until(busy, 20, "the worker to have jobs in flight")
    os.kill(redis_proc.process.pid, signal.SIGSTOP)
    try:
        await _not_ready(http, worker, "redis")
        await asyncio.sleep(REDIS_STOP)  # the outage itself
        down = await metric(http, worker, "pixq_worker_dependency_up", 'dependency="redis"')
    finally:
        os.kill(redis_proc.process.pid, signal.SIGCONT)

    recorder = await _all_completed_none_dead(http, api, nats.port, jobs, timeout=90)
    assert all(recorder.latest(job)[1] == 1 for job in jobs), {job: recorder.seen[job] for job in jobs}
    assert down == 0
    assert await metric(http, worker, "pixq_worker_jobs_total", 'outcome="retried"') == 0
    assert await metric(http, worker, "pixq_worker_dependency_up", 'dependency="redis"') == 1


async def test_nats_restart_with_jobs_in_flight_spends_no_retry(make_stack, http, nats, redis_proc):
    stack = make_stack(**RETRIES)
    _, api = stack.spawn_api()
    workers = [stack.spawn_worker(), stack.spawn_worker()]
    jobs = [await accepted(http, api, "medium") for _ in range(JOBS)]

    async def busy():
        return all([(await metric(http, worker, "pixq_worker_jobs_in_flight") or 0) > 0 for worker in workers])
    await wait_until(busy, 20, "both workers to have jobs in flight")
    nats.stop()
    for worker in workers:
        await _not_ready(http, worker, "nats")
    nats.start()

    recorder = await _all_completed_none_dead(http, api, nats.port, jobs, timeout=90)
    recorder.assert_monotonic()
    for worker in workers:
        assert await metric(http, worker, "pixq_worker_jobs_total", 'outcome="retried"') == 0
        assert await metric(http, worker, "pixq_worker_jobs_total", 'outcome="dead_lettered"') == 0


# --- the gate's decision, as pure logic (a scripted probe instead of real dependencies) -------

class _Script:
    """A probe answering from a list of states, the last one repeating."""

    def __init__(self, *states: dict[str, bool]) -> None:
        self.states = list(states)
        self.calls = 0

    async def __call__(self) -> dict[str, bool]:
        self.calls += 1
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


UP = {"nats": True, "redis": True, "storage": True}
STORAGE_DOWN = {**UP, "storage": False}


def _log():
    import structlog
    return structlog.get_logger("test")


async def test_gate_holds_a_confirmed_outage_until_it_ends():
    from pixq.errors import ErrorCode, PixqError
    from worker.outage import OutageGate
    gate = OutageGate(_Script(STORAGE_DOWN, UP), hold_max=30)
    waiter = asyncio.ensure_future(gate.hold(PixqError(ErrorCode.STORAGE_UNAVAILABLE, "cut"), time.monotonic(), _log()))
    await wait_until(lambda: asyncio.sleep(0, not gate.all_up), 5, "the gate to close")
    assert not waiter.done()
    await gate.probe()  # the next probe finds storage back
    assert await asyncio.wait_for(waiter, 5) is True and gate.all_up


async def test_gate_counts_errors_that_are_not_outages():
    from pixq.errors import ErrorCode, PixqError
    from worker.outage import OutageGate
    script = _Script(UP)
    gate = OutageGate(script, hold_max=30)
    # The dependency answers the probe: the job's own failure, retried by policy.
    assert await gate.hold(PixqError(ErrorCode.STORAGE_UNAVAILABLE, "one key"), time.monotonic(), _log()) is False
    assert script.calls == 1
    # Not a dependency of pixq's (a tenant's source URL, a timeout, bad input): never probed.
    for code in (ErrorCode.SOURCE_UNAVAILABLE, ErrorCode.TIMEOUT, ErrorCode.INVALID_IMAGE, ErrorCode.INTERNAL_ERROR):
        assert await gate.hold(PixqError(code, "x"), time.monotonic(), _log()) is False
    assert script.calls == 1


async def test_gate_stops_holding_past_outage_hold_max():
    from pixq.errors import ErrorCode, PixqError
    from worker.outage import OutageGate
    gate = OutageGate(_Script(STORAGE_DOWN), hold_max=30)
    # Held since longer ago than OUTAGE_HOLD_MAX: no more waiting, the failure counts.
    assert await gate.hold(PixqError(ErrorCode.STATUS_UNAVAILABLE, "down"), time.monotonic() - 31, _log()) is False
    assert not gate.all_up
