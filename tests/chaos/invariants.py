"""The invariants checked at the end of a chaos run, each a PASS/FAIL with its evidence.

1. terminal: every job the load was given an id for (a 202, or an accepted batch item) is
   ``completed`` or ``failed`` after the settle period.
2. monotonic: no job's status went backwards, on two kinds of evidence. (a) The statuses the
   API answered: attempts never decrease, within an attempt the phase (queued < processing <
   retrying < terminal) never decreases, nothing follows a terminal status (each job is read
   again after the settle, so a lasting regression shows). (b) The PIXQ_EVENTS stream, one event
   per applied status change in the status store's order: each job's event positions
   ``(generation, attempt, phase)`` never decrease in stream order (an equal one is a re-publish).
3. dlq_only_bad: every ``failed`` job and every PIXQ_DLQ entry is one of the bad inputs the load
   sent on purpose, and every good job completed.
4. no_orphans: every object under ``inputs/`` is the input of a job pixq knows (GET
   /api/v1/jobs/{id} answers 200 for the id in ``inputs/<tenant>/<id>``). An object with no job
   is an orphan; one whose LastModified lies within KILL_WINDOW before an API SIGKILL is counted
   apart as a killed API's leftover (the API died between storing the input and its status
   record or publish, where its rollback never ran), and fails the invariant all the same: the
   run reports it, it does not hide it. Such leftovers are swept by the surviving APIs
   (pixq.pending_inputs, PENDING_INPUT_GRACE 30 s here): the check first waits for the set of
   pending inputs to empty.
   A killed upload still streaming leaves only a temp file in that API's TMPDIR (counted).
5. no_500: no request got a 5xx other than 503 (an outage is a 503, never a 500).
"""

import asyncio
import datetime
import time
import json
from dataclasses import dataclass, field

import aiohttp
import nats
import redis.asyncio as aioredis
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import ServiceUnavailableError
from redis.exceptions import RedisError

from pixq import names

from tests.chaos.load import PHASE, TERMINAL, StatusLog, Submit
from tests.chaos.stack import ChaosStack
from tests.redis_sentinel import DATA_PASSWORD

KILL_WINDOW = 5.0


@dataclass
class Verdict:
    name: str
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)


def terminal(log: StatusLog) -> Verdict:
    stuck = {job: (h[-1][1:] if h else None) for job, h in log.seen.items() if not h or h[-1][1] not in TERMINAL}
    return Verdict("every accepted job is terminal", not stuck,
                   f"{len(log.seen) - len(stuck)} of {len(log.seen)} accepted jobs terminal",
                   [f"{job}: last seen {state}" for job, state in list(stuck.items())[:50]])


async def job_event_positions(nats_url: str) -> dict[str, list[tuple[int, ...]]]:
    """Every job event of PIXQ_EVENTS, in stream order: job_id -> [position, ...]."""
    nc = await nats.connect(nats_url.split(","), max_reconnect_attempts=5, connect_timeout=5)
    positions: dict[str, list[tuple[int, ...]]] = {}
    try:
        # JetStream API calls get 15 s, and a timed-out one is asked again: right after the last
        # fault the cluster may still be catching up (a short run once timed out at nats-py's 5 s).
        js = nc.jetstream(timeout=15)
        for attempt in range(1, 5):
            try:
                last = (await js.stream_info(names.EVENTS_STREAM)).state.last_seq
                sub = await js.pull_subscribe(f"{names.EVENTS_SUBJECT_PREFIX}.>", durable=None,
                                              stream=names.EVENTS_STREAM)
                break
            except (NatsTimeout, asyncio.TimeoutError, ServiceUnavailableError):
                if attempt == 4:
                    raise
        seen, idle, unavailable = 0, 0, 0
        while seen < last and idle < 3:
            try:
                messages = await sub.fetch(500, timeout=3)
            except (NatsTimeout, asyncio.TimeoutError):
                idle += 1
                continue
            except ServiceUnavailableError:
                # JetStream answered 503 for the pull (a clean run hit it once: the cluster still
                # settling after the last fault). Not "no more events": ask again, a bounded
                # number of times, paced so the retries span about 30 s.
                unavailable += 1
                if unavailable > 60:
                    raise
                await asyncio.sleep(0.5)
                continue
            for message in messages:
                envelope = json.loads(message.data)
                if envelope.get("type", "").startswith("job."):
                    positions.setdefault(envelope["data"]["job_id"], []).append(tuple(envelope["position"]))
                seen = max(seen, message.metadata.sequence.stream)
                await message.ack()
        await sub.unsubscribe()
    finally:
        await nc.close()
    return positions


def monotonic(log: StatusLog, events: dict[str, list[tuple[int, ...]]] | None = None) -> Verdict:
    bad = []
    for job_id, history in log.seen.items():
        for (_, s1, a1), (_, s2, a2) in zip(history, history[1:]):
            if s1 in TERMINAL or (a2, PHASE[s2]) <= (a1, PHASE[s1]):
                bad.append(f"{job_id}: {[(s, a) for _, s, a in history]}")
                break
    transitions = sum(max(0, len(h) - 1) for h in log.seen.values())
    summary = f"API reads: {transitions} transitions seen in {log.reads} reads, {len(bad)} backwards"
    if events is not None:
        backwards = [f"{job_id}: events in stream order {sequence}" for job_id, sequence in events.items()
                     if any(later < earlier for earlier, later in zip(sequence, sequence[1:]))]
        missing = [job for job in log.seen if job not in events]
        summary += (f"; PIXQ_EVENTS: {sum(len(v) for v in events.values())} job events of {len(events)} jobs, "
                    f"{len(backwards)} jobs backwards ({len(missing)} accepted jobs with no event)")
        bad += backwards
    return Verdict("no status moved backwards", not bad, summary, bad[:50])


def dlq_only_bad(log: StatusLog, dead: list[dict]) -> Verdict:
    details = []
    for job_id, history in log.seen.items():
        status = history[-1][1] if history else None
        if status == "failed" and not log.bad[job_id]:
            details.append(f"good job {job_id} failed: {history}")
    for entry in dead:
        if not log.bad.get(entry["job_id"], False):
            details.append(f"DLQ entry for a job that is not a bad input: {entry}")
    bad_jobs = [job for job, is_bad in log.bad.items() if is_bad]
    failed = sum(1 for job in log.seen if log.latest(job) == "failed")
    return Verdict("only genuinely bad inputs failed or are in the DLQ", not details,
                   f"{failed} failed ({len(bad_jobs)} bad inputs sent), {len(dead)} DLQ entries", details[:50])


PENDING_SWEEP_SECONDS = 60.0
"""How long the orphan check waits for the APIs to sweep pending inputs (grace 30 s + rounds)."""


async def _pending_inputs_swept(stack: ChaosStack) -> None:
    """Wait (bounded) until no submit's input is pending: the live ones finished, a killed API's
    were swept. Returns either way; what is left shows in the check below."""
    deadline = time.monotonic() + PENDING_SWEEP_SECONDS
    while time.monotonic() < deadline:
        port = await stack.redis.master_port()
        if port is not None:
            client = aioredis.Redis(port=port, **stack.redis.client_options(DATA_PASSWORD))
            try:
                if await client.zcard(names.PENDING_INPUTS_KEY) == 0:
                    return
            except (RedisError, OSError):
                pass
            finally:
                await client.aclose()
        await asyncio.sleep(0.5)


async def no_orphans(stack: ChaosStack, http: aiohttp.ClientSession, api_url: str,
                     kills: list[float], t0_wall: float, t0_mono: float) -> Verdict:
    """``kills``: the monotonic time of each API SIGKILL. S3's LastModified has whole seconds,
    hence the second of slack after a kill."""
    await _pending_inputs_swept(stack)
    client = stack.s3
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix="inputs/"):
        objects.extend(page.get("Contents", []))
    orphans, leftovers = [], []
    for obj in objects:
        key = obj["Key"]
        job_id = key.rsplit("/", 1)[-1]
        async with http.get(f"{api_url}/api/v1/jobs/{job_id}") as response:
            if response.status == 200:
                continue
            status = response.status
        written = obj["LastModified"].timestamp() - t0_wall + t0_mono  # on the run's monotonic clock
        near_kill = any(-1.0 <= kill - written <= KILL_WINDOW for kill in kills)
        (leftovers if near_kill else orphans).append(
            f"{key} (GET job: {status}, written {datetime.datetime.fromtimestamp(obj['LastModified'].timestamp(), datetime.UTC):%H:%M:%S})")
    temp_files = [str(path) for api in stack.apis for path in api.tmpdir.glob("pixq-upload-*")]
    details = [f"orphan: {line}" for line in orphans] + [f"left by a killed API: {line}" for line in leftovers]
    details += [f"temp file of a killed upload (API host, not storage): {path}" for path in temp_files]
    ok = not orphans and not leftovers
    return Verdict("no orphaned inputs in storage", ok,
                   f"{len(objects)} objects under inputs/: {len(orphans)} orphans, {len(leftovers)} left by a "
                   f"killed API; {len(temp_files)} killed-upload temp files on API hosts", details[:50])


def no_500(submits: list[Submit]) -> Verdict:
    bad = [f"{s.kind} at +{s.at:.0f}: HTTP {s.status} {s.error}" for s in submits if s.status >= 500 and s.status != 503]
    return Verdict("no 5xx other than 503", not bad, f"{len(bad)} submits answered a 5xx other than 503", bad[:50])
