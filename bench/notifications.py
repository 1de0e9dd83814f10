"""Notifications: event latency to an SSE client, 1,000 SSE connections on one API process,
and webhooks to a receiver that is down for 60 s.

Each part runs the whole local stack (pixq.devstack: API, workers, NATS, Redis, local
storage) with quiet logs, and measures from outside it, as a client would.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from datetime import datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.common import LocalStack, free_port, log, proc_status
from bench.driver import cpu_seconds

SECRET = "whsec_" + "cGl4cS1iZW5jaC1zZWNyZXQtMzItYnl0ZXMtbG9uZyE="
WEBHOOK_ENV = {"WEBHOOK_SECRETS": SECRET, "OUTBOUND_ALLOW_PRIVATE_NETWORKS": "true"}
TINY_KEY = "inputs/default/tiny.jpg"
IN_FLIGHT = 64


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 2)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _tiny_jpeg(root: Path) -> Path:
    import pyvips
    path = root / "tiny.jpg"
    pyvips.Image.black(64, 48).add(120).cast("uchar").write_to_file(str(path))
    return path


async def _sse_events(response: aiohttp.ClientResponse):
    """Yield ``(event_name, data)`` for each SSE event (comments and ids skipped)."""
    name, data = "message", []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


async def _submit_paced(session: aiohttp.ClientSession, url: str, rate: float, seconds: float,
                        params: dict | None = None, extra: dict | None = None) -> list[str]:
    """Submit storage_key resizes at ``rate`` per second for ``seconds`` (at most IN_FLIGHT
    unanswered at once, so an API slower than ``rate`` shows as a lower achieved rate rather
    than an ever-growing pile of open requests); the job ids."""
    job_ids: list[str] = []
    start = time.monotonic()
    count = int(rate * seconds)
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        body = {"input": {"storage_key": TINY_KEY}, "parameters": params or {"width": 32}, **(extra or {})}
        async with slots, session.post(f"{url}/api/v1/resize", json=body) as response:
            answer = await response.json()
            if response.status != 202:
                raise RuntimeError(f"submit failed: {response.status} {answer}")
            job_ids.append(answer["job_id"])

    tasks = []
    for index in range(count):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the load generator, not synchronising a test
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return job_ids


# --- 1. event latency -----------------------------------------------------------------


async def _latency(stack: LocalStack, rate: float, seconds: float) -> dict:
    latencies: dict[str, list[float]] = {}
    terminal: set[str] = set()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        async with session.get(f"{stack.url}/api/v1/events") as stream:
            assert stream.status == 200, await stream.text()
            job_ids: list[str] = []

            async def read() -> None:
                async for name, data in _sse_events(stream):
                    received = time.time()
                    event = json.loads(data)
                    if not name.startswith("job."):
                        continue
                    written = _epoch(event["data"]["updated_at"])
                    latencies.setdefault(name, []).append((received - written) * 1000)
                    if name in ("job.completed", "job.failed"):
                        terminal.add(event["data"]["job_id"])
                        if job_ids and terminal >= set(job_ids):
                            return

            reader = asyncio.create_task(read())
            before = cpu_seconds(stack)
            started = time.monotonic()
            job_ids.extend(await _submit_paced(session, stack.url, rate, seconds))
            submit_seconds = time.monotonic() - started
            await asyncio.wait_for(reader, 300)
            elapsed = time.monotonic() - started
            after = cpu_seconds(stack)
    every = [value for values in latencies.values() for value in values]
    return {"rate_target": rate, "jobs": len(job_ids), "submit_rate": round(len(job_ids) / submit_seconds, 1),
            "seconds_to_last_terminal": round(elapsed, 2), "events": len(every),
            "latency_ms": {"p50": _percentile(every, 0.5), "p99": _percentile(every, 0.99),
                           "max": round(max(every), 2)},
            "by_type_ms": {name: {"p50": _percentile(values, 0.5), "p99": _percentile(values, 0.99),
                                  "count": len(values)} for name, values in sorted(latencies.items())},
            "api_cpu_s": round(after.get("api", 0) - before.get("api", 0), 2)}


def measure_event_latency(rate: float, seconds: float) -> dict:
    with LocalStack("events-latency", workers=2) as stack:
        stack.put(TINY_KEY, _tiny_jpeg(stack.root))
        result = asyncio.run(_latency(stack, rate, seconds))
    log(f"event latency at {rate:g} jobs/s: p50 {result['latency_ms']['p50']} ms, "
        f"p99 {result['latency_ms']['p99']} ms over {result['events']} events")
    return result


# --- 2. 1,000 SSE connections ------------------------------------------------------------


def _api_usage(stack: LocalStack) -> tuple[int, float]:
    """(RSS bytes, CPU seconds) of the API process."""
    return proc_status(stack.pid("api"))["VmRSS"] * 1024, cpu_seconds(stack)["api"]


async def _many(stack: LocalStack, connections: int, idle_seconds: float, rate: float, seconds: float) -> dict:
    rss_idle, _ = _api_usage(stack)
    connector = aiohttp.TCPConnector(limit=0)
    counts = [0] * connections
    opened = asyncio.Event()
    ready = 0

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        async def listen(index: int) -> None:
            nonlocal ready
            async with session.get(f"{stack.url}/api/v1/events", params={"status": "completed"}) as stream:
                if stream.status != 200:
                    raise RuntimeError(f"SSE refused: {stream.status} {await stream.text()}")
                ready += 1
                if ready == connections:
                    opened.set()
                async for name, _ in _sse_events(stream):
                    if name == "job.completed":
                        counts[index] += 1

        started = time.monotonic()
        listeners = [asyncio.create_task(listen(index)) for index in range(connections)]
        await asyncio.wait_for(opened.wait(), 120)
        open_seconds = time.monotonic() - started
        rss_open, cpu_before_idle = _api_usage(stack)
        await asyncio.sleep(idle_seconds)  # measuring an idle window: heartbeats only
        _, cpu_after_idle = _api_usage(stack)
        job_ids = await _submit_paced(session, stack.url, rate, seconds)
        deadline = time.monotonic() + 120
        while min(counts) < len(job_ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        busy_seconds = time.monotonic() - started - open_seconds - idle_seconds
        rss_busy, cpu_after_busy = _api_usage(stack)
        for listener in listeners:
            listener.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
    return {"connections": connections, "seconds_to_open_all": round(open_seconds, 2),
            "api_rss_mib": {"idle_no_stream": round(rss_idle / 2**20, 1), "with_streams": round(rss_open / 2**20, 1),
                            "after_events": round(rss_busy / 2**20, 1)},
            "api_rss_kib_per_connection": round((rss_open - rss_idle) / 1024 / connections, 1),
            "api_cpu_percent_idle": round((cpu_after_idle - cpu_before_idle) / idle_seconds * 100, 2),
            "jobs": len(job_ids), "rate": rate, "events_fanned_out": len(job_ids) * connections,
            "api_cpu_percent_while_fanning_out": round((cpu_after_busy - cpu_after_idle) / busy_seconds * 100, 1),
            "api_cpu_us_per_event_delivered": round((cpu_after_busy - cpu_after_idle) * 1e6
                                                    / max(1, len(job_ids) * connections), 1),
            "every_connection_got_every_event": min(counts) == len(job_ids),
            "fewest_events_on_a_connection": min(counts)}


def measure_sse_connections(connections: int, idle_seconds: float, rate: float, seconds: float) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * connections + 1024)), hard))
    with LocalStack("events-sse", workers=1) as stack:  # the API inherits the raised file limit
        stack.put(TINY_KEY, _tiny_jpeg(stack.root))
        result = asyncio.run(_many(stack, connections, idle_seconds, rate, seconds))
    log(f"{connections} SSE connections: API RSS {result['api_rss_mib']}, idle CPU "
        f"{result['api_cpu_percent_idle']}%, fanning out {result['api_cpu_percent_while_fanning_out']}%")
    return result


# --- 3. a webhook receiver down for 60 s ----------------------------------------------------


async def _outage(stack: LocalStack, jobs: int, down_seconds: float) -> dict:
    port = free_port()
    received: dict[str, list[float]] = {}
    """webhook-id -> arrival times of its successful deliveries (one each, unless a retry repeats)."""
    done = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        received.setdefault(request.headers["webhook-id"], []).append(time.monotonic())
        await request.read()
        if len(received) >= jobs:
            done.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        job_ids = await _submit_paced(session, stack.url, 20, jobs / 20,
                                      extra={"callback_url": f"http://127.0.0.1:{port}/hook"})
        await asyncio.sleep(max(0.0, started + down_seconds - time.monotonic()))  # the outage itself
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        up = time.monotonic()
        try:
            await asyncio.wait_for(done.wait(), 3 * 3600)
        finally:
            all_in = time.monotonic()
            await runner.cleanup()
        attempts, ids_stable = [], True
        for job_id in job_ids:
            async with session.get(f"{stack.url}/api/v1/jobs/{job_id}/deliveries") as response:
                items = (await response.json())["deliveries"]
            attempts.append(len(items))
            ids_stable &= len({item["webhook_id"] for item in items}) == 1
    return {"jobs": jobs, "receiver_down_seconds": down_seconds, "delivered": len(received),
            "every_event_delivered": len(received) == jobs,
            "duplicate_deliveries": sum(len(times) - 1 for times in received.values()),
            "webhook_ids_unchanged_across_attempts": ids_stable,
            "attempts_per_event": {"min": min(attempts), "max": max(attempts)},
            "seconds_from_receiver_up_to_last_delivery": round(all_in - up, 1),
            "backoff": "WEBHOOK_BACKOFF default (5s,30s,2m,10m,…)"}


def measure_webhook_outage(jobs: int, down_seconds: float) -> dict:
    with LocalStack("events-webhooks", workers=2, extra_env=WEBHOOK_ENV) as stack:
        stack.put(TINY_KEY, _tiny_jpeg(stack.root))
        result = asyncio.run(_outage(stack, jobs, down_seconds))
    log(f"webhooks after a {down_seconds:g}s outage: {result['delivered']}/{jobs} delivered, "
        f"last one {result['seconds_from_receiver_up_to_last_delivery']}s after the receiver came back")
    return result


def measure_notifications(quick: bool) -> dict:
    return {
        "latency": measure_event_latency(200, 3 if quick else 15),
        "sse": measure_sse_connections(200 if quick else 1000, 5 if quick else 20, 10, 2 if quick else 5),
        "webhooks": measure_webhook_outage(10 if quick else 50, 10 if quick else 60),
    }
