"""A poison job kills its worker on every delivery. Workers are restarted (as Kubernetes would);
other jobs keep flowing; after MAX_RETRIES + 1 deliveries JetStream's MAX_DELIVERIES advisory,
captured by PIXQ_ADVISORIES even though no worker is alive, puts the job in the DLQ when a
worker comes back; a replay with healthy workers then completes it under the same job_id.

The crash comes from tests/faults/poison_worker.py, the real worker entry point with one fault
injected (SIGKILL itself on an input whose key contains "poison"): no hook in production code.
"""

import asyncio
import json
import signal

from nats.errors import TimeoutError as NatsTimeout

from pixq import names
from tests.faults.harness import (JetStreamProbe, StatusRecorder, accepted, get_json, get_status,
                                  image, wait_job, wait_until)
from tests.stack import Proc

MAX_RETRIES = 2
DELIVERIES = MAX_RETRIES + 1


class Supervisor:
    """Keeps ``size`` poison-shimmed workers running, restarting each that dies, until
    ``max_crashes``; then stops the rest (``stop`` awaits their clean exit)."""

    def __init__(self, stack, size: int, max_crashes: int) -> None:
        self.stack = stack
        self.size = size
        self.max_crashes = max_crashes
        self.live: list[Proc] = []
        self.crashes: list[int] = []
        self._task: asyncio.Task | None = None

    async def _spawn(self, wait: str | None) -> None:
        self.live.append(await asyncio.to_thread(self.stack.spawn_worker, "poison_worker.py", wait,
                                                 WORKER_CONCURRENCY="1"))

    async def run(self) -> None:
        for _ in range(self.size):
            await self._spawn("ready")
        while True:
            for proc in list(self.live):
                code = proc.process.poll()
                if code is None:
                    continue
                self.live.remove(proc)
                self.crashes.append(code)
                if len(self.crashes) >= self.max_crashes:
                    # The final delivery crashed: stop the others now (SIGTERM stops their pulls at
                    # once), well inside that delivery's ACK_WAIT. A pull after it would let a live
                    # worker dead-letter the job, which the test leaves to a worker coming back; a
                    # clean run under xdist's load once saw the test loop reach stop() too late.
                    for other in self.live:
                        other.signal(signal.SIGTERM)
                    return
                # Not awaited ready: a restarted worker can pull the poison job and die before its
                # health answers (a clean run saw it); the loop above counts that crash like any other.
                await self._spawn(None)
            await asyncio.sleep(0.05)

    def check(self) -> None:
        """Raise the supervisor's own failure, if it has one, rather than wait for crashes it will never see."""
        if self._task.done() and not self._task.cancelled() and self._task.exception() is not None:
            raise self._task.exception()

    def start(self) -> "Supervisor":
        self._task = asyncio.create_task(self.run())
        return self

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        for proc in self.live:
            proc.signal(signal.SIGTERM)
        for proc in self.live:
            # 0, or killed by the SIGTERM itself when it came before a restarted worker had set up
            # its handlers (restarts are not awaited ready).
            assert await asyncio.to_thread(proc.wait, 30) in (0, -signal.SIGTERM)


async def test_poison_job_dead_lettered_via_max_deliveries_advisory_then_replayed(
        make_stack, http, nats, tmp_path):
    stack = make_stack(MAX_RETRIES=str(MAX_RETRIES), ACK_WAIT="2s", RETRY_BACKOFF="0s")
    _, api = stack.spawn_api()
    poison_key = "uploads/poison-1.jpg"
    (tmp_path / "storage" / "uploads").mkdir(parents=True, exist_ok=True)
    (tmp_path / "storage" / poison_key).write_bytes(image("small"))

    supervisor = Supervisor(stack, size=2, max_crashes=DELIVERIES).start()
    await wait_until(lambda: asyncio.sleep(0, len(supervisor.live) == 2), 30, "two workers up")
    async with http.post(f"{api}/api/v1/resize",
                         json={"input": {"storage_key": poison_key}, "parameters": {"width": 32}}) as response:
        assert response.status == 202, await response.text()
        poison = (await response.json())["job_id"]

    # Healthy jobs keep flowing while the poison job takes workers down, one delivery at a time.
    others: list[str] = []
    recorder = StatusRecorder(http, api).start()
    recorder.track(poison)
    try:
        while len(supervisor.crashes) < DELIVERIES:
            supervisor.check()
            job_id = await accepted(http, api, "small")
            others.append(job_id)
            recorder.track(job_id)
            await wait_until(lambda: asyncio.sleep(0, recorder.latest(job_id) is not None), 10, "a first status")
            assert len(others) < 500, "the poison job never reached its final delivery"
        await supervisor.stop()  # every worker now gone: nobody can dead-letter the job
        assert supervisor.crashes == [-signal.SIGKILL] * DELIVERIES, supervisor.crashes
        await wait_until(lambda: asyncio.sleep(0, all(recorder.latest(job)[0] != "processing" or job == poison
                                                      for job in others)), 5, "settled statuses")
    finally:
        await recorder.stop()
    completed = [job for job in others if recorder.latest(job)[0] == "completed"]
    assert len(completed) >= 3, f"other jobs did not flow while the poison job cycled: {len(completed)}"

    body = await get_status(http, api, poison)
    assert body["status"] == "processing" and body["attempts"] == DELIVERIES, body
    late = await accepted(http, api, "small")  # no worker alive: it waits in the queue

    async with JetStreamProbe(nats.port) as probe:
        # JetStream emits MAX_DELIVERIES once the final delivery's ACK_WAIT has expired and someone
        # pulls from the consumer. Pull as a worker would, with no pixq worker (so no DLQ mover) alive.
        puller = await probe.js.pull_subscribe_bind(durable=names.WORKERS_CONSUMER, stream=names.JOBS_STREAM)
        # Healthy jobs waiting in the queue (``late``, and any submitted as the last workers
        # stopped): kept in progress, so this puller is not redelivered them (each delivery
        # spends a retry), and handed back below.
        held = []

        async def advisory_captured():
            try:
                pulled = await puller.fetch(1, timeout=0.5)
            except NatsTimeout:
                pulled = []
            for msg in pulled:
                assert json.loads(msg.data)["job_id"] != poison, "the poison job was delivered again"
                held.append(msg)
            for msg in held:
                await msg.in_progress()
            # One message per pull: an earlier queued job can come first, so wait for ``late`` too.
            return (late in [json.loads(msg.data)["job_id"] for msg in held]
                    and (await probe.state(names.ADVISORY_STREAM)).messages == 1)
        await wait_until(advisory_captured, 20,
                         "the MAX_DELIVERIES advisory in PIXQ_ADVISORIES, and the late job held")
        for msg in held:
            await msg.nak()  # for the worker started below
        await puller.unsubscribe()
        assert (await get_status(http, api, poison))["status"] == "processing"
        assert (await probe.state(names.DLQ_STREAM)).messages == 0

        # A worker started later moves it to the DLQ.
        stack.spawn_worker()
        dead = await wait_job(http, api, poison, {"failed"}, timeout=20)
        assert dead["error_code"] == "DEAD_LETTERED" and dead["attempts"] == DELIVERIES, dead
        status, entry = await get_json(http, f"{api}/api/v1/dlq/{poison}")
        assert status == 200, entry
        assert entry["reason"] == "max_deliveries" and entry["attempts"] == DELIVERIES, entry
        assert entry["message"]["input"]["storage_key"] == poison_key
        await wait_until(lambda: _state_is(probe, names.ADVISORY_STREAM, 0), 10, "the advisory acked")
        await wait_until(lambda: _state_is(probe, names.JOBS_STREAM, 0), 10, "every job acked")

    # Replay with healthy workers: same job id, a fresh retry budget, completed.
    async with http.post(f"{api}/api/v1/dlq/{poison}/replay") as response:
        assert response.status == 202, await response.text()
        assert (await response.json())["generation"] == 1
    done = await wait_job(http, api, poison, {"completed"}, timeout=20)
    assert done["job_id"] == poison and done["attempts"] == 1 and done["result"]["width"] == 32, done
    _, listing = await get_json(http, f"{api}/api/v1/dlq")
    assert listing["total"] == 0, json.dumps(listing)
    for job_id in [*others, late]:
        assert (await wait_job(http, api, job_id, {"completed"}, timeout=20))["status"] == "completed"


async def _state_is(probe: JetStreamProbe, stream: str, messages: int) -> bool:
    return (await probe.state(stream)).messages == messages
