"""API CPU per submit: what the API, nats-server and redis-server spend on one job, by input path.

``python -m bench.api_cpu`` starts a LocalStack with no workers (jobs stay queued, so only the
submit path is measured), sends N submits from C concurrent clients and reads each process's
CPU time (utime + stime from /proc) before and after. CPU time, not wall time: it stays
meaningful on a shared, busy machine, where a jobs/s figure would be noise. Prints JSON:

* ``storage_key``: JSON submits naming an object already in storage; api, nats, redis and their
  sum in CPU ms per submit, with rate limits off and on (the shape of the defaults, a
  per-IP and a per-tenant limit, with amounts no run reaches: the Redis work per request is the
  same whatever the amount, and the defaults would refuse a bench's rate with 429s);
* ``multipart``: multipart submits of a 0.8 MB JPEG and a 10 MB PNG; api CPU ms per upload
  and per MB uploaded (nats and redis too);
* ``local_upload``: the same files to local storage's direct upload endpoint
  (``POST /uploads/{token}``, grants issued beforehand): the upload alone, no job.

``--profile`` adds py-spy's top frames of the API (self and inclusive) for each path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp

from bench.common import CORPUS, PHOTOS, WORK, LocalStack, ensure_py_spy, log
from bench.driver import cpu_seconds

PROCESSES = ("api", "nats", "redis")
LIMITS_ON = {"RATE_LIMIT": "100000/second", "RATE_LIMIT_PER_IP": "200000/second"}


def _inputs() -> dict[str, bytes]:
    """The JPEG photo as is, and the same photo as a PNG (large, so per-MB costs show)."""
    import pyvips
    jpeg = CORPUS / PHOTOS["photo"]
    png = WORK / "api_cpu" / "photo.png"
    if not png.exists():
        png.parent.mkdir(parents=True, exist_ok=True)
        pyvips.Image.new_from_file(str(jpeg)).pngsave(str(png))
    return {"photo.jpg": jpeg.read_bytes(), "photo.png": png.read_bytes()}


async def _run(url: str, jobs: int, concurrency: int, send) -> None:
    """``jobs`` calls of ``send(session, url)`` from ``concurrency`` clients, each one checked."""
    queue = iter(range(jobs))

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            await send(session, url)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))


def _storage_key_sender(key: str):
    body = json.dumps({"input": {"storage_key": key}, "parameters": {"width": 512}}).encode()

    async def send(session: aiohttp.ClientSession, url: str) -> None:
        async with session.post(f"{url}/api/v1/resize", data=body,
                                headers={"Content-Type": "application/json"}) as response:
            assert response.status == 202, await response.text()
    return send


def _multipart_sender(name: str, data: bytes, content_type: str):
    async def send(session: aiohttp.ClientSession, url: str) -> None:
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name, content_type=content_type)
        form.add_field("width", "512")
        async with session.post(f"{url}/api/v1/resize", data=form) as response:
            assert response.status == 202, await response.text()
    return send


def _local_upload_sender(stack: LocalStack, count: int, data: bytes, content_type: str):
    """``POST /uploads/{token}`` (local storage's direct upload endpoint), each to its own grant,
    issued beforehand so that only the upload itself is measured."""

    async def issue() -> list[dict]:
        async with aiohttp.ClientSession() as session:
            grants = []
            for _ in range(count):
                async with session.post(f"{stack.url}/api/v1/uploads", json={"content_type": content_type}) as response:
                    assert response.status == 201, await response.text()
                    grants.append(await response.json())
            return grants

    grants = iter(asyncio.run(issue()))

    async def send(session: aiohttp.ClientSession, url: str) -> None:
        grant = next(grants)
        form = aiohttp.FormData()
        for name, value in grant["fields"].items():
            form.add_field(name, value)
        form.add_field("file", data, filename="photo", content_type=content_type)
        async with session.post(grant["url"], data=form) as response:
            assert response.status in (200, 201, 204), await response.text()
    return send


def _measure(stack: LocalStack, jobs: int, concurrency: int, send, profile: Path | None = None) -> dict:
    asyncio.run(_run(stack.url, min(20, jobs), concurrency, send))  # warm-up: imports, pools, first sniff
    recorder = _start_profile(stack.pid("api"), profile) if profile else None
    before = cpu_seconds(stack)
    started = time.monotonic()
    asyncio.run(_run(stack.url, jobs, concurrency, send))
    seconds = time.monotonic() - started
    after = cpu_seconds(stack)
    out = {name: round((after[name] - before[name]) * 1000 / jobs, 3) for name in PROCESSES}
    out["total"] = round(sum(out[name] for name in PROCESSES), 3)
    out["driver"] = round((after["bench-driver"] - before["bench-driver"]) * 1000 / jobs, 3)
    out["jobs"], out["seconds"] = jobs, round(seconds, 2)
    if recorder is not None:
        out["profile"] = _stop_profile(recorder, profile)
    return out


def _start_profile(pid: int, path: Path) -> subprocess.Popen | None:
    py_spy = ensure_py_spy()
    if py_spy is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    recorder = subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                                 "--nonblocking", "--output", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # py-spy attaches
    return recorder


def _stop_profile(recorder: subprocess.Popen, path: Path) -> dict:
    from bench.throughput import summarise_profile
    recorder.send_signal(2)  # SIGINT: py-spy writes its output and exits
    try:
        recorder.wait(timeout=30)
    except subprocess.TimeoutExpired:
        recorder.kill()
    if not path.exists():
        return {"error": (recorder.stderr.read() if recorder.stderr else "")[-500:]}
    return summarise_profile(path, top=15)


def measure(jobs: int, upload_jobs: int, concurrency: int, profile: bool, paths: set[str]) -> dict:
    inputs = _inputs()
    profiles = WORK / "api_cpu" / "profiles"
    out: dict = {"concurrency": concurrency, "storage_key": {}, "multipart": {}, "local_upload": {}}
    for label, env in (("rate_limits_off", {}), ("rate_limits_on", LIMITS_ON)):
        if label == "rate_limits_on" and "storage_key" not in paths:
            continue
        # No worker ever begins these jobs, so the API's requeue round would read and publish
        # again (deduplicated) each one 30 s after its submit: work a stack with workers never
        # does (a job's processing write takes it off that list). Kept out of the measurement.
        stack = LocalStack(f"api-cpu-{label}", workers=0, extra_env={"REQUEUE_CHECK_AFTER": "3600", **env})
        with contextlib.ExitStack() as cleanup, stack:  # the stack stops first, then its files go
            # Every upload stays in storage (no worker): ≈ 4.5 GB at the defaults, removed after.
            cleanup.callback(shutil.rmtree, stack.root, True)
            if "storage_key" in paths:
                key = stack.put("inputs/default/bench-photo.jpg", CORPUS / PHOTOS["photo"])
                out["storage_key"][label] = _measure(stack, jobs, concurrency, _storage_key_sender(key),
                                                     profiles / f"storage_key-{label}.txt" if profile else None)
                log(f"api_cpu storage_key {label}: {out['storage_key'][label]['total']} ms per submit "
                    f"(api {out['storage_key'][label]['api']})")
            if label != "rate_limits_off" or "multipart" not in paths:
                continue
            for name, data in inputs.items():
                content_type = "image/png" if name.endswith(".png") else "image/jpeg"
                figures = _measure(stack, upload_jobs, concurrency, _multipart_sender(name, data, content_type),
                                   profiles / f"multipart-{name}.txt" if profile else None)
                mb = len(data) / 1e6
                figures["mb"] = round(mb, 3)
                figures["api_ms_per_mb"] = round(figures["api"] / mb, 3)
                out["multipart"][name] = figures
                log(f"api_cpu multipart {name}: api {figures['api']} ms per upload, "
                    f"{figures['api_ms_per_mb']} ms per MB")
                sender = _local_upload_sender(stack, upload_jobs + min(20, upload_jobs), data, content_type)
                figures = _measure(stack, upload_jobs, concurrency, sender,
                                   profiles / f"local_upload-{name}.txt" if profile else None)
                figures["mb"] = round(mb, 3)
                figures["api_ms_per_mb"] = round(figures["api"] / mb, 3)
                out["local_upload"][name] = figures
                log(f"api_cpu local_upload {name}: api {figures['api']} ms per upload, "
                    f"{figures['api_ms_per_mb']} ms per MB")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="storage_key submits per run")
    parser.add_argument("--upload-jobs", type=int, default=200, help="multipart uploads per photo")
    parser.add_argument("--concurrency", type=int, default=8, help="clients submitting at once")
    parser.add_argument("--profile", action="store_true", help="py-spy top frames of the API per path")
    parser.add_argument("--paths", default="storage_key,multipart", help="comma-separated: storage_key, multipart")
    args = parser.parse_args()
    # The stack's processes inherit stdout: their log lines go to stderr, so stdout is the JSON alone.
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        figures = measure(args.jobs, args.upload_jobs, args.concurrency, args.profile, set(args.paths.split(",")))
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
