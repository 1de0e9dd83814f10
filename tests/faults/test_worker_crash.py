"""A worker SIGKILLed mid-job: its jobs come back after ACK_WAIT, every job completes once
as far as anyone can see, and no status ever moves backwards (duplicates are skipped)."""

import asyncio
import time

from pixq import names
from pixq.jobs import JobMessage
from tests.faults.harness import (MEDIUM_SPEC, JetStreamProbe, StatusRecorder, accepted, get_status, kill,
                                  metric, wait_until)

ACK_WAIT = 2.0
JOBS = 40


async def test_sigkill_mid_job_redelivers_within_ack_wait_and_statuses_stay_monotonic(make_stack, http, nats):
    stack = make_stack(ACK_WAIT=f"{ACK_WAIT:g}s", WORKER_CONCURRENCY="2")
    _, api = stack.spawn_api()
    jobs = await asyncio.gather(*(accepted(http, api, "medium") for _ in range(JOBS)))
    recorder = StatusRecorder(http, api)
    for job_id in jobs:
        recorder.track(job_id)
    recorder.start()
    try:
        victim = stack.spawn_worker()
        survivor = stack.spawn_worker()

        async def victim_busy():
            return (await metric(http, victim, "pixq_worker_jobs_in_flight") or 0) > 0
        await wait_until(victim_busy, 20, "the victim worker to have jobs in flight")
        kill(victim)
        killed_at = time.monotonic()
        assert victim.process.returncode == -9

        await recorder.wait_all({"completed"}, timeout=90)
        await recorder.poll_once()  # one more look at every finished job
    finally:
        await recorder.stop()
    recorder.assert_monotonic()

    # The victim's in-flight jobs were delivered again (attempt 2) to the survivor, within ACK_WAIT
    # of the kill (plus polling and a little scheduling slack), not after some longer timeout.
    redelivered = {job_id: next(t for t, _, attempts in recorder.seen[job_id] if attempts >= 2)
                   for job_id in jobs if recorder.latest(job_id)[1] >= 2}
    assert redelivered, f"no job was redelivered after the kill:\n{stack.logs()}"
    for job_id, seen_at in redelivered.items():
        assert seen_at - killed_at <= ACK_WAIT + 3.0, (job_id, seen_at - killed_at, recorder.seen[job_id])
    assert all(recorder.latest(job_id)[1] <= 2 for job_id in jobs)

    # Duplicates of finished jobs: the same Nats-Msg-Id is dropped by JetStream's duplicate
    # window; a different one is delivered, and the worker skips it without touching the status.
    completed_before = await metric(http, survivor, "pixq_worker_jobs_total", 'outcome="completed"')
    sample = jobs[:3]
    before = {job_id: await get_status(http, api, job_id) for job_id in sample}
    async with JetStreamProbe(nats.port) as probe:
        first_seq = (await probe.state(names.JOBS_STREAM)).last_seq
        for job_id in sample:
            message = JobMessage.model_validate({
                "job_id": job_id, "type": "pipeline", "spec": MEDIUM_SPEC,
                "input": {"storage_key": names.input_object_key("default", job_id)},
                "metadata": {"created_at": before[job_id]["created_at"], "request_id": "duplicate"}})
            payload = message.model_dump_json().encode()
            same_id = await probe.js.publish(names.job_subject("pipeline"), payload,
                                             headers={"Nats-Msg-Id": f"{job_id}:0"})
            assert same_id.duplicate, "JetStream stored a publish repeating a Nats-Msg-Id"
            other_id = await probe.js.publish(names.job_subject("pipeline"), payload,
                                              headers={"Nats-Msg-Id": f"{job_id}:dup"})
            assert not other_id.duplicate
        assert (await probe.state(names.JOBS_STREAM)).last_seq == first_seq + len(sample)

        async def duplicates_consumed():
            info = await probe.js.consumer_info(names.JOBS_STREAM, names.WORKERS_CONSUMER)
            return info.num_pending == 0 and info.num_ack_pending == 0 and (
                await probe.state(names.JOBS_STREAM)).messages == 0
        await wait_until(duplicates_consumed, 20, "the duplicate deliveries to be acked")

    skipped = survivor.log.read_text().count('"duplicate_delivery_skipped"')
    assert skipped >= len(sample), stack.logs()
    for job_id in sample:
        after = await get_status(http, api, job_id)
        assert after == {**before[job_id], "result": after["result"]}  # urls are minted per read
        assert after["result"]["storage_key"] == before[job_id]["result"]["storage_key"]
    assert await metric(http, survivor, "pixq_worker_jobs_total", 'outcome="completed"') == completed_before
