"""Latency of one job on an idle stack (issue 16, item 4): submit to the `job.completed` event.

One 6 MP JPEG (sharp's 2569067123_aca715a2ee_o.jpg, ``photo.jpg``), fit 512x512 JPEG Q80 by
JSON storage_key submit, one job at a time after a warm-up. The client holds the tenant's
event stream (``GET /api/v1/events``) open from the start, so no event can be missed between
the 202 and a subscription, and times each job from the moment its request is sent to the
moment its ``job.completed`` event arrives: what a client waiting for its result sees.

The floor is the same job's engine time: ``worker.imaging.process`` on the same bytes and
spec in a spawned process with the worker's libvips settings (one thread, cache off), one job
at a time, measured in the same run, before and after the stack samples (the stack is idle
then: nothing else runs). The target is p50 ≤ engine p50 + 15 ms; the raw pyvips job time
(bench.raw.one_job) is recorded beside it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import aiohttp

from bench.common import Inputs, LocalStack, log
from bench.driver import stage_inputs
from bench.notifications import _sse_events
from bench.raw import RawPool

PHOTO = "photo.jpg"
PARAMS = {"width": 512, "height": 512, "format": "jpeg", "quality": 80}
WARMUP = 10


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))], 2)


def _summary(values: list[float]) -> dict:
    return {"count": len(values), "p50": _percentile(values, 0.5), "p99": _percentile(values, 0.99),
            "min": round(min(values), 2), "max": round(max(values), 2), "mean": round(statistics.fmean(values), 2)}


async def _sequential(stack: LocalStack, key: str, count: int) -> dict:
    """``count`` jobs one after another: (submit → 202) and (submit → job.completed) in ms."""
    completed: dict[str, float] = {}
    reused: set[str] = set()
    arrived = asyncio.Condition()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        async with session.get(f"{stack.url}/api/v1/events") as stream:
            if stream.status != 200:
                raise RuntimeError(f"event stream: {stream.status} {await stream.text()}")

            async def read() -> None:
                async for name, data in _sse_events(stream):
                    if name in ("job.completed", "job.failed"):
                        received = time.perf_counter()
                        event = json.loads(data)
                        if (event["data"].get("result") or {}).get("reused_from"):
                            reused.add(event["data"]["job_id"])
                        async with arrived:
                            completed[event["data"]["job_id"]] = received if name == "job.completed" else -1.0
                            arrived.notify_all()

            reader = asyncio.create_task(read())
            accepted_ms, done_ms = [], []
            body = {"input": {"storage_key": key}, "parameters": PARAMS}
            try:
                for _ in range(count):
                    sent = time.perf_counter()
                    async with session.post(f"{stack.url}/api/v1/resize", json=body) as response:
                        answer = await response.json()
                        if response.status != 202:
                            raise RuntimeError(f"submit failed: {response.status} {answer}")
                    accepted_ms.append((time.perf_counter() - sent) * 1000)
                    job_id = answer["job_id"]
                    async with arrived:
                        await asyncio.wait_for(arrived.wait_for(lambda: job_id in completed), 60)
                    if completed[job_id] < 0:
                        raise RuntimeError(f"job {job_id} failed")
                    done_ms.append((completed[job_id] - sent) * 1000)
            finally:
                reader.cancel()
    if reused:  # REUSE_OUTPUTS on: such a job is a copy of an earlier one's outputs, not a latency
        raise RuntimeError(f"{len(reused)} of {count} jobs completed from reused outputs (REUSE_OUTPUTS on?)")
    return {"accepted_ms": accepted_ms, "completed_ms": done_ms}


def measure_latency(inputs: Inputs, workers: int, worker_concurrency: int, count: int) -> dict:
    """Engine floor and stack latency of the same job, in one run (module docstring)."""
    job = ("resize", PHOTO, dict(PARAMS))
    with RawPool(1, {PHOTO: str(inputs.files[PHOTO])}) as pool:
        pool.job_times([job] * WARMUP, "engine")
        pool.job_times([job] * WARMUP, "raw")
        engine = pool.job_times([job] * count, "engine")
        raw = pool.job_times([job] * count, "raw")
        with LocalStack("latency", workers=workers, worker_concurrency=worker_concurrency) as stack:
            key = stage_inputs(stack, {PHOTO: inputs.files[PHOTO]})[PHOTO]
            asyncio.run(_sequential(stack, key, WARMUP))
            stack_ms = asyncio.run(_sequential(stack, key, count))
        engine += pool.job_times([job] * count, "engine")
        raw += pool.job_times([job] * count, "raw")
    out = {"photo": PHOTO, "params": PARAMS, "jobs": count, "warmup": WARMUP, "workers": workers,
           "worker_concurrency": worker_concurrency,
           "completed_ms": _summary(stack_ms["completed_ms"]), "accepted_ms": _summary(stack_ms["accepted_ms"]),
           "engine_ms": _summary(engine), "raw_ms": _summary(raw)}
    out["p50_over_engine_ms"] = round(out["completed_ms"]["p50"] - out["engine_ms"]["p50"], 2)
    log(f"latency: submit -> job.completed p50 {out['completed_ms']['p50']} ms, p99 {out['completed_ms']['p99']} ms; "
        f"engine p50 {out['engine_ms']['p50']} ms, raw p50 {out['raw_ms']['p50']} ms "
        f"(+{out['p50_over_engine_ms']} ms over the engine)")
    return out
