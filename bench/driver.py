"""Submitting jobs to the running stack and timing them to the last completion."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from pathlib import Path

import aiohttp
import nats

from bench.common import LocalStack
from pixq import names

SUBMIT_CONCURRENCY = 8
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_cpu(stat: str) -> tuple[float, float]:
    """(user, system) CPU seconds from the text of a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat
    file (fields 14 and 15; the name in parentheses may hold spaces, so split after it)."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds(stack: LocalStack) -> dict[str, float]:
    """CPU time (user + system) used so far by each stack process and by this bench process."""
    out = {}
    for name, proc in stack.stack.children:
        try:
            out[name] = sum(stat_cpu(Path(f"/proc/{proc.pid}/stat").read_text()))
        except (OSError, IndexError):
            pass
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["bench-driver"] = usage.ru_utime + usage.ru_stime
    return out


def cpu_per_job(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    """CPU milliseconds per job by component (workers summed)."""
    out: dict[str, float] = {}
    for name, value in after.items():
        key = "workers" if name.startswith("worker-") else name
        out[key] = out.get(key, 0.0) + (value - before.get(name, value)) * 1000 / jobs
    return {key: round(value, 2) for key, value in out.items()}
POLL_SECONDS = 0.02


async def _submit_one(session: aiohttp.ClientSession, url: str, endpoint: str, params: dict,
                      key: str | None, upload: tuple[str, bytes] | None) -> str:
    if upload is not None:
        form = aiohttp.FormData()
        form.add_field("file", upload[1], filename=upload[0], content_type="application/octet-stream")
        for name, value in params.items():
            form.add_field(name, str(value))
        request = session.post(f"{url}/api/v1/{endpoint}", data=form)
    else:
        request = session.post(f"{url}/api/v1/{endpoint}",
                               json={"input": {"storage_key": key}, "parameters": params})
    async with request as response:
        body = await response.json()
        if response.status != 202:
            raise RuntimeError(f"submit failed: {response.status} {json.dumps(body)[:300]}")
        return body["job_id"]


async def run_jobs(stack: LocalStack, jobs: list[tuple[str, str, dict]], keys: dict[str, str],
                   uploads: dict[str, bytes] | None = None, timeout: float = 600.0) -> dict:
    """Submit every (endpoint, input name, params) job; wait until the workers finished them all.

    Time runs from the first submit to the moment the jobs stream is empty: it has work-queue
    retention, so a message leaves it when a worker acks it, which a worker does only after
    the output is stored and the terminal status written to Redis. The stream's state is
    asked from nats-server every 20 ms (polling the workers' /metrics or N statuses through
    the API would itself cost the measured processes CPU). Statuses are checked afterwards."""
    connector = aiohttp.TCPConnector(limit=SUBMIT_CONCURRENCY * 2)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        nc = await nats.connect(stack.env["NATS_URL"], name="pixq-bench")
        js = nc.jetstream()
        if (await js.stream_info(names.JOBS_STREAM)).state.messages:
            raise RuntimeError("the jobs stream is not empty before a timed run")
        queue: asyncio.Queue = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)
        job_ids: list[str] = []

        async def submitter() -> None:
            while not queue.empty():
                endpoint, name, params = queue.get_nowait()
                upload = (name, uploads[name]) if uploads is not None else None
                job_ids.append(await _submit_one(session, stack.url, endpoint, params, keys.get(name), upload))

        cpu_before = cpu_seconds(stack)
        started = time.perf_counter()
        submitters = [asyncio.create_task(submitter()) for _ in range(SUBMIT_CONCURRENCY)]
        deadline = started + timeout
        submitted_at = None
        while True:
            if submitted_at is None and all(task.done() for task in submitters):
                await asyncio.gather(*submitters)  # raise a submit error, if any
                submitted_at = time.perf_counter()
            if submitted_at is not None and (await js.stream_info(names.JOBS_STREAM)).state.messages == 0:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(jobs)} jobs did not finish within {timeout:.0f}s")
            await asyncio.sleep(POLL_SECONDS)
        elapsed = time.perf_counter() - started
        cpu = cpu_per_job(cpu_before, cpu_seconds(stack), len(jobs))
        await nc.close()
        statuses: dict[str, int] = {}
        for job_id in job_ids:
            async with session.get(f"{stack.url}/api/v1/jobs/{job_id}") as response:
                record = await response.json()
            status = record.get("status", f"http-{response.status}")
            if (record.get("result") or {}).get("reused_from"):
                status += " (reused: not processed)"  # REUSE_OUTPUTS on: the run timed copies
            statuses[status] = statuses.get(status, 0) + 1
    return {"jobs": len(jobs), "seconds": round(elapsed, 3), "jobs_per_s": round(len(jobs) / elapsed, 2),
            "submit_seconds": round(submitted_at - started, 3), "statuses": statuses, "cpu_ms_per_job": cpu}


def stage_inputs(stack: LocalStack, files: dict[str, Path]) -> dict[str, str]:
    """Copy inputs into the stack's storage; name -> storage_key."""
    return {name: stack.put(f"bench/{name}", path) for name, path in files.items()}
