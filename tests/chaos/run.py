"""The order of a chaos run: start the stack, run the load with faults injected one at a time
for ``seconds``, heal whatever a failed recovery left broken, stop the load, let the system
settle (bounded), read every job once more, then check the invariants and build the report.

Faults go on past ``seconds`` only until every kind has been injected once (so the 60 s run in
`make test` covers all of them); the load runs as long as the faults do.
"""

import asyncio
import datetime
import logging
import random
import time
from pathlib import Path

import aiohttp

from tests.chaos import invariants
from tests.chaos.faults import KINDS, Injector, Supervisor
from tests.chaos.load import Load, StatusLog, seeds
from tests.chaos.report import Report
from tests.chaos.stack import ChaosStack, start
from tests.redis_sentinel import restart_as_replica

GAP = (1.0, 5.0)
"""Seconds of plain load between two faults (drawn uniformly)."""


async def heal(stack: ChaosStack) -> None:
    """Undo what a fault whose recovery failed may have left: a node down or frozen, a Redis
    node down, the storage proxy cut, an API down."""
    for node in stack.cluster.nodes:
        if node.frozen:
            node.thaw()
        if not node.running:
            await asyncio.to_thread(node.start)
    for data in stack.redis.data_nodes():
        if data.process is None or data.process.poll() is not None:
            master = await stack.redis.master_port()
            if master is not None and master != data.port:
                await asyncio.to_thread(restart_as_replica, data, master)
            else:
                await asyncio.to_thread(data.start)
    await asyncio.to_thread(stack.proxy.up)
    for api in stack.apis:
        if api.proc is None or api.proc.process.poll() is not None:
            await asyncio.to_thread(stack.start_api, api)


async def settle(log: StatusLog, timeout: float) -> float:
    """Poll every unfinished job until none is left or ``timeout``; returns the seconds it took."""
    started = time.monotonic()
    while log.unfinished() and time.monotonic() - started < timeout:
        await log.poll_once()
        await asyncio.sleep(0.2)  # polling cadence
    return time.monotonic() - started


async def dead_letters(http: aiohttp.ClientSession, api_url: str) -> list[dict]:
    entries, offset = [], 0
    while True:
        async with http.get(f"{api_url}/api/v1/dlq", params={"limit": "100", "offset": str(offset)}) as response:
            assert response.status == 200, (response.status, await response.text())
            page = await response.json()
        entries.extend(page["items"])
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return entries


async def run(seconds: float, seed: int, tmp: Path, settle_timeout: float = 120.0, concurrency: int = 3,
              pace: float = 0.6, hold_scale: float = 1.0, api_kill_under_load: bool = True,
              out=None) -> Report:
    """``api_kill_under_load=False`` drains the victim API of the load's requests before the kill
    (only the big upload is cut): a kill landing in the milliseconds between an input stored and
    its job recorded leaves an orphan (tests/chaos/invariants.py), a real but rare outcome that
    would make a fixed-seed test in `make test` flaky; the full run keeps the load on."""
    out = out or (lambda line: print(line, flush=True))  # progress lines as they happen, also into a file
    rng = random.Random(seed)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log, one line per S3 call
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    out(f"chaos: seed {seed}, {seconds:.0f} s, logs in {tmp}")
    stack = await asyncio.to_thread(start, tmp, seeds())
    t0, t0_wall = time.monotonic(), time.time()
    out(f"chaos: stack up ({len(stack.apis)} APIs, {len(stack.live_workers())} workers, 3 NATS nodes, "
        f"Redis master+replica+3 sentinels, S3)")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            log = StatusLog(http, stack, random.Random(seed + 1)).start()
            supervisor = Supervisor(stack, t0).start()
            injector = Injector(stack, rng, http, supervisor, t0, hold_scale, api_kill_under_load)
            load = injector.load = Load(http, stack, random.Random(seed + 2), log, concurrency, pace, t0).start()
            try:
                deadline = t0 + seconds
                while time.monotonic() < deadline or injector.first_round_left():
                    gap = rng.uniform(*GAP) * hold_scale
                    await asyncio.sleep(min(gap, max(0.0, deadline - time.monotonic()))
                                        if not injector.first_round_left() else gap)  # load between faults
                    if time.monotonic() >= deadline and not injector.first_round_left():
                        break
                    fault = await injector.inject(injector.next_kind())
                    out(f"chaos: +{fault.at:5.0f} s {fault.kind}: {fault.detail or fault.error} ({fault.took:.1f} s)")
                await heal(stack)
            finally:
                await load.stop()
            load_seconds = time.monotonic() - t0
            out(f"chaos: load stopped after {load_seconds:.0f} s, {len(log.seen)} jobs accepted; settling")
            settled = await settle(log, settle_timeout)
            await supervisor.stop()
            await log.stop()
            await log.poll_once(everything=True)
            api_url = stack.live_apis()[0].url
            dead = await dead_letters(http, api_url)
            kills = [t0 + upload["at"] for upload in injector.killed_uploads]
            orphans = await invariants.no_orphans(stack, http, api_url, kills, t0_wall, t0)
            events = await invariants.job_event_positions(stack.cluster.url)
            verdicts = [invariants.terminal(log), invariants.monotonic(log, events), invariants.dlq_only_bad(log, dead),
                        orphans, invariants.no_500(load.submits)]
            report = Report(seed, load_seconds, started, injector.faults, load.submits, log, dead, verdicts,
                            supervisor.self_exits, injector.killed_uploads, settled, seconds)
            report.extra["processes"] = (f"2 pixq-api, 3 pixq-worker (MAX_RETRIES=3, RETRY_BACKOFF=1s,2s,4s, "
                                         f"ACK_WAIT=3s); {stack.procs.spawned} workers started in all, "
                                         f"{stack.restarts} API restarts")
            report.extra["dependencies"] = ("3 nats-server nodes (JetStream, every stream R3, NATS_URL lists all "
                                            "three); Redis master + replica + 3 sentinels (REDIS_SENTINELS); "
                                            "S3 (moto) with the workers behind a cuttable TCP proxy")
            report.extra["fault kinds"] = ", ".join(KINDS)
            report.extra["API kills"] = ("with the load's requests in flight" if api_kill_under_load
                                         else "after the load's requests to it finished (only the upload cut)")
            return report
    finally:
        await asyncio.to_thread(stack.stop)
