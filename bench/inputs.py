"""Inputs: what a submit costs the API with each way of delivering the image.

One API process, no workers (jobs stay queued, so the API is measured alone), local storage,
the bench's real photos. For each path, N submits one after another; the API's CPU time
(utime + stime from /proc) over the run, per job and per MB of image:

* multipart: the image in the submit request (the API streams, sniffs and stores it);
* direct upload, API share: ``POST /api/v1/uploads`` + a submit naming the upload id (the claim
  reads the object's first 256 KiB and links it under inputs/). With S3 the bytes go from the
  client to the bucket and this is all the API does; with local storage the API also serves
  ``POST /uploads/{token}``, measured separately as the third row.
* storage_key: the image already in the bucket (the baseline).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench.common import LocalStack, log
from bench.driver import cpu_seconds


async def _one_multipart(session: aiohttp.ClientSession, url: str, data: bytes) -> None:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="photo.jpg", content_type="image/jpeg")
    form.add_field("width", "512")
    async with session.post(f"{url}/api/v1/resize", data=form) as response:
        assert response.status == 202, await response.text()


async def _grant(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.post(f"{url}/api/v1/uploads", json={"content_type": "image/jpeg"}) as response:
        assert response.status == 201, await response.text()
        return await response.json()


async def _post_upload(session: aiohttp.ClientSession, grant: dict, data: bytes) -> None:
    form = aiohttp.FormData()
    for name, value in grant["fields"].items():
        form.add_field(name, value)
    form.add_field("file", data, filename="photo.jpg", content_type="image/jpeg")
    async with session.post(grant["url"], data=form) as response:
        assert response.status in (200, 201, 204), await response.text()


async def _submit_upload(session: aiohttp.ClientSession, url: str, upload_id: str) -> None:
    async with session.post(f"{url}/api/v1/resize", json={"input": {"upload_id": upload_id},
                                                           "parameters": {"width": 512}}) as response:
        assert response.status == 202, await response.text()


async def _submit_key(session: aiohttp.ClientSession, url: str, key: str) -> None:
    async with session.post(f"{url}/api/v1/resize", json={"input": {"storage_key": key},
                                                           "parameters": {"width": 512}}) as response:
        assert response.status == 202, await response.text()


async def _measure(stack: LocalStack, data: bytes, key: str, jobs: int) -> dict:
    mb = len(data) / 1e6
    out: dict = {"image_bytes": len(data), "jobs_per_path": jobs}

    async def timed(name: str, step) -> None:
        before, started = cpu_seconds(stack)["api"], time.monotonic()
        for _ in range(jobs):
            await step()
        cpu = cpu_seconds(stack)["api"] - before
        out[name] = {"api_cpu_ms_per_job": round(cpu * 1000 / jobs, 2),
                     "api_cpu_ms_per_mb": round(cpu * 1000 / jobs / mb, 2),
                     "seconds": round(time.monotonic() - started, 2)}
        log(f"inputs {name}: {out[name]['api_cpu_ms_per_job']} ms API CPU per job "
            f"({out[name]['api_cpu_ms_per_mb']} ms per MB)")

    async with aiohttp.ClientSession() as session:
        for _ in range(5):  # warm-up: imports, connection pools, first sniff
            await _one_multipart(session, stack.url, data)
        await timed("multipart", lambda: _one_multipart(session, stack.url, data))
        await timed("storage_key", lambda: _submit_key(session, stack.url, key))
        grants = [await _grant(session, stack.url) for _ in range(2 * jobs)]
        uploaded = iter(grants)
        await timed("local_upload_endpoint", lambda: _post_upload(session, next(uploaded), data))
        claims = iter(grants[:jobs])

        async def direct() -> None:  # the API's whole share when the bytes go to S3
            await _grant(session, stack.url)
            await _submit_upload(session, stack.url, next(claims)["upload_id"])

        await timed("direct_upload_api_share", direct)
    return out


def measure_inputs(photos: dict, jobs: int) -> dict:
    """Per photo (name -> path): a small and a large input show what scales with size."""
    out = {}
    with LocalStack("inputs", workers=0) as stack:
        for name, path in photos.items():
            key = stack.put(f"inputs/default/bench-{name}", path)
            out[name] = asyncio.run(_measure(stack, path.read_bytes(), key, jobs))
    return {"photos": out}
