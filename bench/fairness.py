"""Fair sharing: an interactive job's latency behind another tenant's batch backlog.

The whole local stack (pixq.devstack: API, P worker processes, NATS, Redis, local storage),
two tenants. Tenant ``alpha`` queues BACKLOG batch jobs through the batch endpoint
(``priority`` batch, the batch default); then tenant ``beta`` submits interactive jobs one at
a time, each after the previous one completed, while alpha's backlog is still at least
MIN_BACKLOG_SHARE of what it was. Latency is the job's own ``updated_at - created_at`` when it
completes (server timestamps: submit accepted to completed written), read with the status
long-poll, so no client polling interval is in it.

For scale: the same job on the idle stack (before the backlog), which is about one job's
processing time plus the queue's overhead; and what a FIFO queue would make beta wait, the
backlog ahead of it divided by the batch throughput measured meanwhile.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime
from pathlib import Path

import aiohttp
import nats

from bench.common import LocalStack, log
from pixq import names

KEYS = {"alpha": "bench-alpha-key", "beta": "bench-beta-key"}
ENV = {"API_KEYS": ",".join(f"{tenant}={key}" for tenant, key in KEYS.items()), "RATE_LIMIT": "off",
       "RATE_LIMIT_PER_IP": "off", "PRIORITY_WEIGHTS": "interactive=4,batch=1"}
BATCH_ITEMS = 100
BATCH_REQUESTS_AT_ONCE = 4
MIN_BACKLOG_SHARE = 0.25
"""Interactive samples are taken only while alpha has at least this share of its backlog queued."""
WIDTH = 512


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 1)


def _auth(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[tenant]}"}


def _job(tenant: str) -> dict:
    return {"type": "resize", "input": {"storage_key": f"inputs/{tenant}/photo.jpg"}, "parameters": {"width": WIDTH}}


async def _interactive_ms(session: aiohttp.ClientSession, url: str) -> float:
    """Submit one beta job and follow it to completion; its server-side latency in ms."""
    body = _job("beta")
    async with session.post(f"{url}/api/v1/resize", headers=_auth("beta"),
                            json={"input": body["input"], "parameters": body["parameters"]}) as response:
        assert response.status == 202, await response.text()
        job_id = (await response.json())["job_id"]
    etag = ""
    while True:
        headers = {**_auth("beta"), **({"If-None-Match": etag} if etag else {})}
        async with session.get(f"{url}/api/v1/jobs/{job_id}?wait=30s", headers=headers) as response:
            if response.status == 304:
                continue
            document = await response.json()
            etag = response.headers["ETag"]
        if document["status"] == "completed":
            return (_epoch(document["updated_at"]) - _epoch(document["created_at"])) * 1000
        assert document["status"] in ("queued", "processing"), document


async def _batch_backlog(js) -> int:
    """Alpha's batch jobs not yet finished: pending plus held by workers on pixq-workers-batch."""
    info = await js.consumer_info(names.JOBS_STREAM, names.BATCH_WORKERS_CONSUMER)
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


async def _queue_backlog(session: aiohttp.ClientSession, url: str, total: int) -> float:
    """Submit ``total`` alpha jobs through the batch endpoint; the seconds it took."""
    started = time.monotonic()
    gate = asyncio.Semaphore(BATCH_REQUESTS_AT_ONCE)

    async def one(size: int) -> None:
        async with gate, session.post(f"{url}/api/v1/jobs/batch", headers=_auth("alpha"),
                                      json={"jobs": [_job("alpha") for _ in range(size)]}) as response:
            answer = await response.json()
            assert response.status == 200 and answer["accepted"] == size, answer

    sizes = [min(BATCH_ITEMS, total - start) for start in range(0, total, BATCH_ITEMS)]
    await asyncio.gather(*(one(size) for size in sizes))
    return time.monotonic() - started


async def _measure(stack: LocalStack, backlog: int, samples: int, idle_samples: int) -> dict:
    nc = await nats.connect(stack.env["NATS_URL"])
    js = nc.jetstream()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            for _ in range(3):  # warm-up: imports, connection pools, first decode
                await _interactive_ms(session, stack.url)
            idle = [await _interactive_ms(session, stack.url) for _ in range(idle_samples)]
            log(f"fairness: idle interactive latency p50 {_percentile(idle, 0.5)} ms")

            submit_seconds = await _queue_backlog(session, stack.url, backlog)
            queued_at_start = await _batch_backlog(js)
            log(f"fairness: {backlog} batch jobs queued in {submit_seconds:.1f}s; {queued_at_start} not yet finished")
            latencies: list[float] = []
            ahead: list[int] = []
            started = time.monotonic()
            while len(latencies) < samples:
                waiting = await _batch_backlog(js)
                if waiting < backlog * MIN_BACKLOG_SHARE:
                    break
                ahead.append(waiting)
                latencies.append(await _interactive_ms(session, stack.url))
            seconds = time.monotonic() - started
            drained = queued_at_start - await _batch_backlog(js)
    finally:
        await nc.close()
    batch_jobs_per_s = drained / seconds if seconds else 0.0
    fifo_ms = statistics.mean(ahead) / batch_jobs_per_s * 1000 if batch_jobs_per_s and ahead else None
    out = {
        "backlog_jobs": backlog, "backlog_submit_seconds": round(submit_seconds, 2),
        "samples": len(latencies), "idle_samples": len(idle),
        "idle_ms": {"p50": _percentile(idle, 0.5), "p99": _percentile(idle, 0.99)},
        "interactive_ms": ({"p50": _percentile(latencies, 0.5), "p99": _percentile(latencies, 0.99),
                            "max": round(max(latencies), 1)} if latencies else None),
        "batch_backlog_during_samples": {"max": max(ahead, default=0), "min": min(ahead, default=0)},
        "batch_jobs_per_s_meanwhile": round(batch_jobs_per_s, 1),
        "fifo_wait_estimate_ms": round(fifo_ms) if fifo_ms else None,
    }
    log(f"fairness: interactive latency behind the backlog {out['interactive_ms']} ms over {len(latencies)} jobs; "
        f"batch {out['batch_jobs_per_s_meanwhile']} jobs/s meanwhile; FIFO would wait ~{out['fifo_wait_estimate_ms']} ms")
    return out


def measure_fairness(photo: Path, quick: bool, workers: int, worker_concurrency: int) -> dict:
    backlog = 400 if quick else 2000
    samples = 10 if quick else 50
    with LocalStack("fairness", workers=workers, worker_concurrency=worker_concurrency, extra_env=ENV) as stack:
        for tenant in KEYS:
            stack.put(f"inputs/{tenant}/photo.jpg", photo)
        figures = asyncio.run(_measure(stack, backlog, samples, 5 if quick else 20))
    return {"config": {"worker_processes": workers, "worker_concurrency": worker_concurrency,
                       "priority_weights": ENV["PRIORITY_WEIGHTS"], "photo_bytes": photo.stat().st_size,
                       "resize_width": WIDTH},
            **figures}
