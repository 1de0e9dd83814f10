"""`make bench`, section "img": on-the-fly image URLs (issue 17, item 5), in one run.

    .venv/bin/python -m bench.run --only img[,thumbor]

* **Misses against thumbor.** Every request is a new URL (its own cachebuster, ``cb:``), so each
  one is a miss: the API publishes a job, a worker processes it and the request streams the
  result. Same options as the thumbor section (fit in 512x512, JPEG Q80, metadata stripped), same
  two photos, same client (``bench.thumbor.drive``: closed loop, 4 x P keep-alive connections).
  thumbor's figure is measured in this section too, in runs alternating with pixq's, when
  thumbor is installed (``make bench`` installs it); the ratio is pixq's rps over thumbor's.
* **Hits.** One URL, already cached, asked again and again on one API process: rps and latency
  percentiles (no worker is involved).
* **Coalescing.** 50 concurrent requests for one uncached URL: how many jobs the API published,
  counted as the growth of PIXQ_JOBS' last sequence (a duplicate publish, same Nats-Msg-Id, does
  not grow it). The goal is exactly one.

URLs are signed here with Python's hmac, independently of pixq.imgproxy: imgproxy's documented
scheme, URL-safe base64 (no padding) of HMAC-SHA256(key, salt + path).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import statistics
import time
from pathlib import Path

import aiohttp
import nats

from bench.common import Inputs, LocalStack, log, median, paired_ratio, run_async
from bench.driver import stage_inputs
from bench.thumbor import Thumbor, drive
from pixq import names

KEY = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881"
SALT = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5"
OPTIONS = "rs:fit:512:512/q:80"
PHOTOS = ("photo.jpg", "gainmap.jpg")
HIT_SECONDS = 3.0
CONNECTIONS_PER_PROCESS = 4
"""Closed-loop connections per worker (and thumbor) process: a miss waits on the queue, the
worker and the completed event, so 2 per process (the thumbor section's) leaves the cores idle
between stages; 4 per process saturates both servers."""
COALESCED_REQUESTS = 50


def signed_path(options: str, source: str, extension: str = "jpg") -> str:
    """``/{signature}/{options}/plain/{source}@{extension}``, signed as imgproxy documents it."""
    path = f"/{options}/plain/{source}@{extension}"
    digest = hmac.new(bytes.fromhex(KEY), bytes.fromhex(SALT) + path.encode(), hashlib.sha256).digest()
    return "/" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode() + path


def image_url(stack: LocalStack, key: str, buster: str | None = None) -> str:
    options = OPTIONS + (f"/cb:{buster}" if buster else "")
    return f"{stack.url}/img{signed_path(options, f'local://{key}')}"


async def _timed_gets(url: str, seconds: float, concurrency: int) -> dict:
    """GET ``url`` in a closed loop for ``seconds``: rps and latency percentiles of the 200s."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                    if response.status == 200:
                        latencies.append((time.perf_counter() - started) * 1000)
                    else:
                        errors += 1
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]
    return {"requests": len(latencies), "errors": errors, "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(ordered[len(ordered) // 2], 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
            "mean_ms": round(statistics.fmean(ordered), 2)}


async def _coalesced(stack: LocalStack, url: str) -> dict:
    """COALESCED_REQUESTS concurrent GETs of one uncached URL: statuses and jobs published."""
    nc = await nats.connect(stack.env["NATS_URL"], name="pixq-bench-img")
    try:
        js = nc.jetstream()
        before = (await js.stream_info(names.JOBS_STREAM)).state.last_seq
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=COALESCED_REQUESTS)) as session:
            async def one() -> tuple[int, bytes]:
                async with session.get(url) as response:
                    return response.status, await response.read()
            answers = await asyncio.gather(*(one() for _ in range(COALESCED_REQUESTS)))
        after = (await js.stream_info(names.JOBS_STREAM)).state.last_seq
    finally:
        await nc.close()
    statuses: dict[str, int] = {}
    for status, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    bodies = {hashlib.sha256(body).hexdigest() for status, body in answers if status == 200}
    return {"requests": COALESCED_REQUESTS, "statuses": statuses, "jobs_published": after - before,
            "distinct_bodies": len(bodies)}


def measure_img(inputs: Inputs, processes: int, worker_concurrency: int, repeats: int, seconds: float,
                thumbor_exe: Path | None) -> dict:
    """Misses and thumbor alternate (pixq, thumbor, pixq, ...: the machine's speed drifts on a
    shared VM, so each pair sees the same machine), both servers up throughout, idle in turn."""
    connections = CONNECTIONS_PER_PROCESS * processes
    env = {"IMG_KEY": KEY, "IMG_SALT": SALT, "IMG_WAIT": "60s"}
    out: dict = {"options": OPTIONS, "connections": connections, "processes": processes}
    with contextlib.ExitStack() as servers:
        stack = servers.enter_context(LocalStack("img", workers=processes, worker_concurrency=worker_concurrency,
                                                 extra_env=env))
        thumbor = servers.enter_context(Thumbor(thumbor_exe, inputs, processes)) if thumbor_exe else None
        keys = stage_inputs(stack, {name: inputs.files[name] for name in PHOTOS})
        sources = [keys[name] for name in PHOTOS]
        counter = iter(range(10**9))

        def miss_urls(count: int) -> list[str]:
            return [image_url(stack, sources[i % 2], f"m{next(counter)}") for i in range(count)]

        def thumbor_urls(count: int) -> list[str]:
            assert thumbor is not None
            return thumbor.urls(PHOTOS, count)

        run_async(drive(miss_urls(2 * connections), connections))  # warm-up
        probe = run_async(drive(miss_urls(4 * connections), connections))["rps"]
        count = max(8 * processes, min(600, int(probe * seconds) // 2 * 2))
        if thumbor is not None:
            run_async(drive(thumbor_urls(2 * connections), connections))
        pixq_runs, thumbor_runs = [], []
        for _ in range(repeats):
            pixq_runs.append(run_async(drive(miss_urls(count), connections)))
            if thumbor is not None:
                thumbor_runs.append(run_async(drive(thumbor_urls(count), connections)))
        out["miss"] = {"requests": count, "runs": [r["rps"] for r in pixq_runs],
                       "rps": median([r["rps"] for r in pixq_runs]), "errors": sum(r["errors"] for r in pixq_runs)}
        log(f"img misses: {out['miss']['rps']} rps ({count} requests x {repeats}, errors {out['miss']['errors']})")
        if thumbor_runs:
            out["thumbor"] = {"requests": count, "runs": [r["rps"] for r in thumbor_runs],
                              "rps": median([r["rps"] for r in thumbor_runs]),
                              "errors": sum(r["errors"] for r in thumbor_runs)}
            out["miss_vs_thumbor"] = paired_ratio(out["miss"]["runs"], out["thumbor"]["runs"])  # run i, then i
            log(f"img misses vs thumbor: {out['miss_vs_thumbor']}x (thumbor {out['thumbor']['rps']} rps)")

        hit_url = image_url(stack, sources[0], "hit")
        run_async(drive([hit_url], 1))  # the one miss that fills the cache
        out["hit"] = run_async(_timed_gets(hit_url, HIT_SECONDS, connections))
        log(f"img hits: {out['hit']['rps']} rps, p50 {out['hit']['p50_ms']} ms, p99 {out['hit']['p99_ms']} ms")

        out["coalescing"] = run_async(_coalesced(stack, image_url(stack, sources[1], "burst")))
        log(f"img burst: {out['coalescing']}")
    return out
