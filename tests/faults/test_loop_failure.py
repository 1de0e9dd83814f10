"""A half-dead worker does not run on: when one of its loops can no longer work (here: its
durable consumer is deleted under it), the pixq-worker process exits non-zero, so Kubernetes
restarts it; the restarted worker recreates the consumer and processes jobs again."""

import json

import pytest

from pixq import names
from tests.faults.harness import LONG_OUTAGES, JetStreamProbe, accepted, exited, wait_job, wait_until

# Each case waits ~15 s for the loop to confirm its consumer is gone (pixq.queue.Puller), so
# `make test` runs one consumer per kind of loop (job lanes, outbox); `make test-outages` all four.
ALL_LOOPS = [
    (names.JOBS_STREAM, names.WORKERS_CONSUMER, {"consumer", "gauges"}),
    (names.STATUS_STREAM, names.STATUS_CONSUMER, {"outbox_drainer"}),
    (names.JOBS_STREAM, names.BATCH_WORKERS_CONSUMER, {"consumer", "gauges"}),
    (names.ADVISORY_STREAM, names.ADVISORY_CONSUMER, {"advisory_mover"}),
]


@pytest.mark.parametrize("stream, consumer, loops", ALL_LOOPS if LONG_OUTAGES else ALL_LOOPS[:2])
async def test_worker_exits_non_zero_when_a_loop_loses_its_consumer(make_stack, http, nats, stream, consumer,
                                                                     loops):
    stack = make_stack()
    _, api = stack.spawn_api()
    worker = stack.spawn_worker()
    async with JetStreamProbe(nats.port) as probe:
        await probe.js.delete_consumer(stream, consumer)
        # The loops notice a deleted consumer within seconds (an idle pull checks it every 5 s);
        # the bound is generous because clean-clone runs on a loaded 2-core machine took > 30 s.
        (code,) = await wait_until(exited(worker), 60, f"the worker to exit after {consumer} was deleted")
        assert code == 1, stack.logs()
        events = [json.loads(line) for line in worker.log.read_text().splitlines() if line.startswith("{")]
        failed = {event.get("loop") for event in events if event.get("event") == "worker_loop_failed"}
        assert failed & loops, (failed, stack.logs())
        assert any(event.get("event") == "worker_exiting" for event in events), stack.logs()

        # As Kubernetes would: start it again. It recreates the consumer and serves jobs.
        stack.spawn_worker()
        assert (await probe.js.consumer_info(stream, consumer)).name == consumer
    job_id = await accepted(http, api, "small")
    done = await wait_job(http, api, job_id, timeout=30)
    assert done["status"] == "completed", done
