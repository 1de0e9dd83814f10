"""Test helpers: generated images and awaiting a job's terminal status through the public API."""

import asyncio
import time

import pyvips
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from nats.aio.client import Client as NATS

from pixq import names

TERMINAL = {"completed", "failed"}


def make_image(width: int = 640, height: int = 480, fmt: str = ".jpg") -> bytes:
    """A gradient with a colour cast, so crops and resizes have checkable pixels."""
    x = pyvips.Image.xyz(width, height)
    image = (x[0] * 255 / max(1, width - 1)).bandjoin([x[1] * 255 / max(1, height - 1), x[0] * 0 + 128])
    return image.cast("uchar").copy(interpretation="srgb").write_to_buffer(fmt)


def form(image: bytes, filename: str = "in.jpg", **fields) -> FormData:
    data = FormData()
    data.add_field("file", image, filename=filename, content_type="application/octet-stream")
    for key, value in fields.items():
        data.add_field(key, str(value))
    return data


async def wait_for_status(client: TestClient, job_id: str, statuses: set[str] = TERMINAL,
                          timeout: float = 30.0, headers: dict | None = None) -> dict:
    """Poll GET /api/v1/jobs/{id} until its status is in ``statuses`` (event await with a deadline)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        response = await client.get(f"/api/v1/jobs/{job_id}", headers=headers or {})
        assert response.status == 200, await response.text()
        body = await response.json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout}s; saw {seen}")


async def resize_completes(client: TestClient, **fields) -> dict:
    """Submit a small resize (120x90 to width 40) and await its completed status."""
    response = await client.post("/api/v1/resize", data=form(make_image(120, 90), width=40, **fields))
    assert response.status == 202, await response.text()
    status = await wait_for_status(client, (await response.json())["job_id"])
    assert status["status"] == "completed", status
    return status


async def jobs_in_stream(settings) -> int:
    """Messages in PIXQ_JOBS: what a refused or rolled-back submit must not have added."""
    nc = NATS()
    await nc.connect(settings.nats_url)
    try:
        return (await nc.jetstream().stream_info(names.JOBS_STREAM)).state.messages
    finally:
        await nc.close()
