"""The pull loop: fetch as many jobs as there are free slots, handle each, ack only when done.

Two lanes (pixq.jobs.Priority), one durable consumer each: free slots are shared out by
PRIORITY_WEIGHTS with a smooth weighted round robin (LaneSchedule) while both lanes have work,
and a lane that turns out empty leaves its slots to the other. A worker never asks JetStream
for more jobs than it has free slots, so an interactive job never waits behind batch jobs a
worker holds without running them: it waits at most until one slot frees (about one job's
processing time when every slot is busy), and every PRIORITY_WEIGHTS cycle of slots gives
batch work its share, so batch work never starves behind a steady stream of interactive jobs.

Per job: mark processing, run the attempt, write the outputs, mark completed, then ack.
A terminal status whose event could not be published is not acked: the redelivery finds the
job done, announces it again (pixq.lifecycle, idempotent) and acks it then.
Failures follow worker.retry: permanent codes fail the job at once; transient ones are
nak'ed with RETRY_BACKOFF's delay (JetStream redelivers; the worker never sleeps on a job)
until the final attempt, which goes to the DLQ.

Outages are not failures (worker.outage): while storage, Redis or NATS is down the loop pulls
nothing, and an attempt that fails because of the outage is held on its delivery (in-progress
acks go on) and runs again in place once every dependency answers, up to OUTAGE_HOLD_MAX.
No nak, so JetStream counts no delivery and the job's retries stay whole.
"""

import asyncio
import json
import time

import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from pydantic import ValidationError

from pixq import names, queue
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import TERMINAL_STATUSES, JobMessage, JobResult, JobStatus, Priority, parse_priority_weights
from pixq.settings import Settings
from pixq.status import StatusStore
from worker.dead_letter import dead_letter, dlq_entry, publish_dead
from worker.execute import JobRunner
from worker.metrics import IN_FLIGHT, JOB_SECONDS, JOBS
from worker.outage import OutageGate
from worker.retry import is_final_attempt, next_attempt_at, retry_delay
from worker.status_writer import StatusWriter, Written, announce_logged

log = structlog.get_logger("pixq.worker")

IDLE_WAIT_SECONDS = 0.5
"""With both lanes empty, how long one pull waits on the interactive lane for a new job; a batch
job arriving meanwhile waits at most this long for an idle worker. (Waiting on both lanes at
once would leave the other lane's request open on the server after the first answer, and its
late job would exceed the worker's free slots.)"""
FULL_WAIT_SECONDS = 5.0
ANNOUNCE_RETRY_SECONDS = 1.0
"""Delay before a finished job whose event was not published is redelivered to announce it."""


async def _cancel(tasks: set[asyncio.Task]) -> None:
    """Cancel jobs and wait until each has handed its message back (nak)."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


class LaneSchedule:
    """Which lane each free slot goes to: smooth weighted round robin (as nginx balances
    upstreams). Each slot, every lane gains its weight in credit; the richest lane (interactive
    on a tie) takes the slot and pays the total weight. With interactive=4,batch=1 the slots go
    I, I, B, I, I, and so on, across pulls. ``reset`` clears the credits when a lane ran dry, so
    that a lane that was empty for a while does not come back with a burst of saved-up turns."""

    def __init__(self, weights: dict[Priority, int]) -> None:
        self.weights = weights
        self.total = sum(weights.values())
        self.credit = {lane: 0 for lane in weights}

    def share(self, slots: int) -> dict[Priority, int]:
        counts = {lane: 0 for lane in self.weights}
        for _ in range(slots):
            for lane, weight in self.weights.items():
                self.credit[lane] += weight
            lane = max(self.credit, key=lambda name: (self.credit[name], name is Priority.INTERACTIVE))
            self.credit[lane] -= self.total
            counts[lane] += 1
        return counts

    def reset(self) -> None:
        self.credit = {lane: 0 for lane in self.weights}


class Consumer:
    def __init__(self, settings: Settings, js: JetStreamContext, status: StatusStore, writer: StatusWriter,
                 runner: JobRunner, gate: OutageGate) -> None:
        self.settings = settings
        self.gate = gate
        self.js = js
        self.status = status
        self.writer = writer
        self.runner = runner
        self.tasks: set[asyncio.Task] = set()
        self.last_fetch = time.monotonic()
        self.schedule = LaneSchedule(parse_priority_weights(settings.priority_weights))
        self.lanes: dict[Priority, queue.LanePuller] = {}
        self.heartbeats: dict[int, Msg] = {}
        """Messages of the jobs running now (by id: a Msg is not hashable), kept alive by the one
        _heartbeat ticker."""

    async def run(self, stop: asyncio.Event) -> None:
        """Pull until ``stop`` is set, then drain in-flight jobs within WORKER_SHUTDOWN_GRACE.

        If the loop itself fails or is cancelled (another worker loop failed), the jobs in
        flight are cancelled and handed back to JetStream before the exception goes on."""
        for lane, (durable, _) in queue.LANES.items():
            self.lanes[lane] = await queue.LanePuller(self.js, names.JOBS_STREAM, durable).start()
        concurrency = self.settings.worker_concurrency
        heartbeat = asyncio.create_task(self._heartbeat(), name="worker-heartbeat")
        try:
            while not stop.is_set():
                self.last_fetch = time.monotonic()
                free = concurrency - len(self.tasks)
                if free <= 0:
                    # Also wake on stop: a full worker must start its grace at SIGTERM, not when a job
                    # ends; and come round every few seconds, so /health/live (last_fetch) never
                    # mistakes long, healthy jobs for a wedged loop.
                    stopping = asyncio.ensure_future(stop.wait())
                    await asyncio.wait({*self.tasks, stopping}, timeout=FULL_WAIT_SECONDS,
                                       return_when=asyncio.FIRST_COMPLETED)
                    stopping.cancel()
                    continue
                if not self.gate.all_up:
                    # A dependency is down: take no job (it could only fail, or wait here while
                    # another worker might run it); come round every few seconds for /health/live.
                    await self._paused(stop)
                    continue
                messages = await self.take(free)
                if not messages:
                    messages = await self.lanes[Priority.INTERACTIVE].pull(1, IDLE_WAIT_SECONDS)
                for message in messages:
                    if stop.is_set():
                        await self._hand_back(message)
                        continue
                    task = asyncio.create_task(self.handle(message))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
        except BaseException:
            await self.abandon()
            raise
        else:
            await self.drain()
        finally:
            heartbeat.cancel()

    async def take(self, free: int) -> list[Msg]:
        """At most ``free`` jobs, shared between the lanes by the schedule: interactive first,
        then batch with its share plus whatever interactive left unused, then interactive again
        with whatever batch left. Immediate answers only (no_wait): [] when both lanes are empty."""
        interactive, batch = self.lanes[Priority.INTERACTIVE], self.lanes[Priority.BATCH]
        share = self.schedule.share(free)
        wanted_interactive = share[Priority.INTERACTIVE]
        taken = await interactive.pull(wanted_interactive) if wanted_interactive else []
        wanted_batch = free - len(taken)
        from_batch = await batch.pull(wanted_batch) if wanted_batch else []
        dry = len(taken) < wanted_interactive or len(from_batch) < wanted_batch
        if len(from_batch) < wanted_batch and len(taken) == wanted_interactive:
            taken += await interactive.pull(wanted_batch - len(from_batch))
        if dry:
            self.schedule.reset()
        return taken + from_batch

    async def _paused(self, stop: asyncio.Event) -> None:
        """Wait until every dependency answers again, stop is set, or FULL_WAIT_SECONDS pass."""
        stopping = asyncio.ensure_future(stop.wait())
        recovered = asyncio.ensure_future(self.gate.wait_up(FULL_WAIT_SECONDS))
        await asyncio.wait({stopping, recovered}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        recovered.cancel()

    async def abandon(self) -> None:
        """Cancel every job in flight now; each hands its message back (nak)."""
        await _cancel(set(self.tasks))

    async def drain(self) -> None:
        """Finish what is in flight within the grace; hand the rest back to JetStream at once."""
        if not self.tasks:
            return
        log.info("draining", in_flight=len(self.tasks), grace_seconds=self.settings.worker_shutdown_grace)
        _, pending = await asyncio.wait(self.tasks, timeout=self.settings.worker_shutdown_grace)
        await _cancel(pending)

    async def _hand_back(self, message: Msg) -> None:
        await queue.settle(message.nak())

    async def _heartbeat(self) -> None:
        """Tell JetStream every job in flight is alive, so ACK_WAIT only bounds *dead* workers.

        One ticker for all jobs rather than a task per job (a task and a timer per job cost CPU
        on every job, issue 16); a job that started just before a tick gets its first in-progress
        early, which only restarts its ack timer sooner."""
        interval = max(1.0, self.settings.ack_wait / 3)
        while True:
            await asyncio.sleep(interval)
            for message in list(self.heartbeats.values()):
                await queue.settle(message.in_progress())

    async def handle(self, message: Msg) -> None:
        attempt = message.metadata.num_delivered
        try:
            job = JobMessage.model_validate_json(message.data)
        except ValidationError as exc:
            await self._quarantine(message, attempt, str(exc))
            return
        job_log = log.bind(job_id=job.job_id, request_id=job.metadata.request_id, tenant=job.tenant,
                           attempt=attempt)
        if done := await self._begin(job, attempt, job_log):
            # A duplicate or late delivery of a finished job (or of an older replay generation),
            # or a job marked failed by an API whose publish went unconfirmed (it answered 503).
            # Never run it then.
            await self._settle_done(message, job, done)
            return
        self.heartbeats[id(message)] = message
        IN_FLIGHT.inc()
        started = time.perf_counter()
        try:
            await self._finish(message, await self._attempt(job, attempt, job_log))
            JOBS.labels(job.type.value, "completed").inc()
            job_log.info("job_completed", seconds=round(time.perf_counter() - started, 4))
        except asyncio.CancelledError:
            await self._hand_back(message)
            job_log.info("job_handed_back", reason="shutdown")
            raise
        except PixqError as exc:
            await self._failed(message, job, attempt, exc, job_log)
        except Exception as exc:  # a bug, not the input's fault: retry, then DLQ
            job_log.exception("job_crashed")
            await self._failed(message, job, attempt, PixqError(ErrorCode.INTERNAL_ERROR, repr(exc)), job_log)
        finally:
            self.heartbeats.pop(id(message), None)
            IN_FLIGHT.dec()
            JOB_SECONDS.labels(job.type.value).observe(time.perf_counter() - started)

    async def _attempt(self, job: JobMessage, attempt: int, job_log) -> Written:
        """Run the job and record it completed; an outage holds it and runs it again in place
        (same delivery, same attempt) once the dependencies answer (worker.outage)."""
        held_since: float | None = None
        while True:
            try:
                result: JobResult = await self.runner.run(job)
                return await self.writer.write(job, attempt, JobStatus.COMPLETED, result=result.stored())
            except PixqError as exc:
                held_since = held_since or time.monotonic()
                if not await self.gate.hold(exc, held_since, job_log):
                    raise

    async def _finish(self, message: Msg, written: Written) -> None:
        """Ack a job whose terminal status is recorded, unless its event is still unpublished:
        then hand it back, so the redelivery announces it (and a restart loses no event)."""
        if written is Written.UNANNOUNCED:
            await queue.settle(message.nak(delay=ANNOUNCE_RETRY_SECONDS))
        else:
            await message.ack()

    async def _settle_done(self, message: Msg, job: JobMessage, record: dict) -> None:
        """A delivery of a job already terminal (``record``, as _begin found it): announce
        its status again (a no-op within the events' duplicate window) before acking, in case
        the first announcement failed."""
        if record["generation"] == job.metadata.generation and not await announce_logged(self.js, self.status, record):
            await queue.settle(message.nak(delay=ANNOUNCE_RETRY_SECONDS))
            return
        await message.ack()

    async def _begin(self, job: JobMessage, attempt: int, job_log) -> dict | None:
        """Mark the job processing; that write is also the duplicate check (pixq.status refuses
        it when the stored status is ahead, and answers with the stored record). Returns that
        record when this is a duplicate or late delivery of a finished job (or of an older
        replay generation); None when the job is to run, including when Redis is down (then
        it runs anyway: outputs are idempotent) or a refusal came from a later, unfinished
        attempt."""
        try:
            written, record = await self.writer.write_or_stored(job, attempt, JobStatus.PROCESSING)
        except PixqError as exc:
            job_log.warning("status_write_skipped", status=JobStatus.PROCESSING.value, error=exc.message)
            return None
        if written is not Written.REFUSED or record is None:
            return None
        if record["generation"] > job.metadata.generation or (
                record["generation"] == job.metadata.generation and record["status"] in TERMINAL_STATUSES):
            job_log.info("duplicate_delivery_skipped", status=record["status"])
            return record
        return None

    async def _record(self, job: JobMessage, attempt: int, status: JobStatus, job_log, **fields) -> bool:
        """Best-effort status write for non-terminal states: an outage must not stop processing.
        False only when Redis answered that the stored status is ahead of this one."""
        try:
            return await self.writer.write(job, attempt, status, **fields)
        except PixqError as exc:
            job_log.warning("status_write_skipped", status=status.value, error=exc.message)
            return True

    async def _failed(self, message: Msg, job: JobMessage, attempt: int, error: PixqError, job_log) -> None:
        try:
            if not error.transient:
                await self._finish(message, await self.writer.write(job, attempt, JobStatus.FAILED,
                                                                    error_code=error.code.value, error=error.message))
                JOBS.labels(job.type.value, "failed").inc()
                job_log.info("job_failed", error_code=error.code.value, error=error.message)
            elif is_final_attempt(attempt, self.settings.max_retries):
                await self._finish(message, await dead_letter(self.js, self.writer, job, attempt, error,
                                                              reason="retries_exhausted"))
            else:
                delay = retry_delay(attempt, self.settings.retry_backoff)
                await self._record(job, attempt, JobStatus.RETRYING, job_log, error_code=error.code.value,
                                   error=error.message, next_attempt_at=next_attempt_at(delay))
                await message.nak(delay=delay)
                JOBS.labels(job.type.value, "retried").inc()
                job_log.warning("job_retrying", error_code=error.code.value, error=error.message, delay=delay)
        except (PixqError, NatsError, OSError) as exc:
            # Could not record the outcome (Redis or NATS down): let JetStream redeliver later.
            job_log.warning("outcome_not_recorded", error=str(exc))
            try:
                await message.nak(delay=retry_delay(attempt, self.settings.retry_backoff) or 1.0)
            except (NatsError, OSError):
                pass

    async def _quarantine(self, message: Msg, attempt: int, problem: str) -> None:
        """A message that is not a job cannot get a status; keep it in the DLQ for an operator."""
        try:
            body = json.loads(message.data)
        except ValueError:
            body = {"raw": message.data.decode("utf-8", "replace")}
        if not isinstance(body, dict) or not names.is_job_id(str(body.get("job_id"))):
            body = {"job_id": names.quarantine_id(message.metadata.sequence.stream), "raw": body}
        log.error("invalid_job_message", job_id=body["job_id"], problem=problem[:500])
        try:
            await publish_dead(self.js, dlq_entry(body, ErrorCode.INVALID_REQUEST.value, problem[:2000], attempt,
                                                  reason="invalid_message"))
            await message.ack()
        except (PixqError, NatsError, OSError):
            await self._hand_back(message)
