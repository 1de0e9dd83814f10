"""Batches: POST /api/v1/jobs/batch (JSON and multipart) and GET /api/v1/batches/{id}.

Every item is accepted exactly as a single submit would be, independently of the others, and
a batch fires exactly one ``batch.completed``, read here from PIXQ_EVENTS itself, once every
accepted item is terminal. Real API, workers, nats-server, redis-server (and moto S3)."""

import asyncio
import json
import tempfile
import time
from pathlib import Path

import nats
import pytest
from aiohttp import FormData
from nats.js.errors import NotFoundError

from pixq import names
from pixq.storage import make_storage
from tests.conftest import running_api, running_worker
from tests.helpers import make_image, wait_for_status
from pixq.tenants import key_digest
from tests.test_tenants import ALPHA, BETA, OPS, bearer, write_tenants

NOT_AN_IMAGE = b"this is plain text, not an image " * 20


async def put_objects(settings, objects: dict[str, bytes]) -> None:
    storage = make_storage(settings)
    await storage.ensure_ready()
    for key, data in objects.items():
        await storage.put_bytes(key, data, "application/octet-stream")


async def post_batch(api, jobs: list, headers: dict | None = None, **extra) -> dict:
    response = await api.post("/api/v1/jobs/batch", json={"jobs": jobs, **extra}, headers=headers or {})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert response.headers["Location"] == f"/api/v1/batches/{body['batch_id']}"
    return body


async def get_batch(api, batch_id: str, headers: dict | None = None) -> dict:
    response = await api.get(f"/api/v1/batches/{batch_id}", headers=headers or {})
    assert response.status == 200, await response.text()
    return await response.json()


async def batch_completes(api, batch_id: str, timeout: float = 60.0, headers: dict | None = None) -> dict:
    """Await the batch's completed status through GET (a condition with a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = await get_batch(api, batch_id, headers)
        if body["status"] == "completed":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch {batch_id} not completed after {timeout}s: {body}")


async def batch_events(nats_port: int, tenant: str, batch_id: str) -> tuple[int, dict | None]:
    """How many events PIXQ_EVENTS holds on the batch's subject, and the last one."""
    subject = names.batch_event_subject(tenant, batch_id)
    client = await nats.connect(f"nats://127.0.0.1:{nats_port}")
    try:
        js = client.jetstream()
        info = await js.stream_info(names.EVENTS_STREAM, subjects_filter=subject)
        count = (info.state.subjects or {}).get(subject, 0)
        try:
            last = json.loads((await js.get_last_msg(names.EVENTS_STREAM, subject)).data)
        except NotFoundError:
            last = None
        return count, last
    finally:
        await client.close()


@pytest.fixture
def tenants(tmp_path: Path) -> Path:
    return write_tenants(tmp_path / "tenants.yaml", [
        {"name": "alpha", "role": "user", "keys": [key_digest(ALPHA)]},
        {"name": "beta", "role": "user", "keys": [key_digest(BETA)]},
        {"name": "ops", "role": "admin", "keys": [key_digest(OPS)]}])


def resize(key: str, width: int = 16, **extra) -> dict:
    return {"type": "resize", "input": {"storage_key": key}, "parameters": {"width": width}, **extra}


async def test_items_are_independent_and_the_batch_completes_once(make_settings, nats):
    settings = make_settings("local")
    await put_objects(settings, {"uploads/a.jpg": make_image(64, 48), "uploads/b.png": make_image(32, 32, ".png"),
                                 "uploads/text.jpg": NOT_AN_IMAGE})
    async with running_api(settings) as api:
        async with running_worker(settings):  # an earlier job, finished before the batch
            response = await api.post("/api/v1/resize", json={"input": {"storage_key": "uploads/a.jpg"},
                                                              "parameters": {"width": 8}},
                                      headers={"Idempotency-Key": "earlier-1"})
            earlier = (await response.json())["job_id"]
            assert (await wait_for_status(api, earlier))["status"] == "completed"

        body = await post_batch(api, [
            resize("uploads/a.jpg"),
            {"type": "crop", "input": {"storage_key": "uploads/a.jpg"},
             "parameters": {"x": 0, "y": 0, "width": 500, "height": 500}},  # fails at the worker
            resize("uploads/text.jpg"),  # not an image: fails at the worker
            {"type": "pipeline", "input": {"storage_key": "uploads/b.png"},
             "spec": {"variants": [{"name": "thumb", "width": 8}]}},
            resize("uploads/nope.jpg"),
            {"type": "rotate", "input": {"storage_key": "uploads/a.jpg"}},
            resize("uploads/a.jpg", callback_url="ftp://example.com/hook"),
            resize("uploads/a.jpg", idempotency_key="earlier-1"),
            {"type": "resize", "input": {"part": "file"}, "parameters": {"width": 8}},
            resize("uploads/a.jpg", width=0),
            "not an object",
        ])
        items = body["items"]
        assert [item["index"] for item in items] == list(range(11))
        assert (body["accepted"], body["refused"], body["tracked"]) == (5, 6, True)
        tracked = [items[i]["job_id"] for i in (0, 1, 2, 3)]
        assert all(items[i] == {"index": i, "job_id": tracked[i], "status": "queued", "replayed": False}
                   for i in range(4))
        assert items[7] == {"index": 7, "job_id": earlier, "status": "completed", "replayed": True}
        assert {i: items[i]["error"]["code"] for i in (4, 5, 6, 8, 9, 10)} == {
            4: "INPUT_NOT_FOUND", 5: "INVALID_PARAMETERS", 6: "INVALID_PARAMETERS", 8: "INVALID_REQUEST",
            9: "INVALID_PARAMETERS", 10: "INVALID_REQUEST"}
        batch_id = body["batch_id"]

        # No worker yet: the batch runs, and no batch.completed exists.
        running = await get_batch(api, batch_id)
        assert running["status"] == "running" and running["completed_at"] is None
        assert running["job_ids"] == [*tracked, earlier] and running["total"] == 5
        assert (running["counts"]["queued"], running["counts"]["completed"]) == (4, 1)
        assert await batch_events(nats.port, "default", batch_id) == (0, None)
        job = await (await api.get(f"/api/v1/jobs/{tracked[0]}")).json()
        assert job["batch_id"] == batch_id

        async with running_worker(settings):
            done = await batch_completes(api, batch_id)
        assert done["completed_at"] and done["job_ids"] == [*tracked, earlier]
        assert {k: v for k, v in done["counts"].items() if v} == {"completed": 3, "failed": 2}
        failed = [await (await api.get(f"/api/v1/jobs/{tracked[i]}")).json() for i in (1, 2)]
        assert [job["status"] for job in failed] == ["failed", "failed"]
        assert failed[0]["error_code"] == "CROP_OUT_OF_BOUNDS"
        assert failed[1]["error_code"] in {"UNSUPPORTED_MEDIA_TYPE", "INVALID_IMAGE"}

        count, event = await batch_events(nats.port, "default", batch_id)
        assert count == 1
        assert event["type"] == "batch.completed" and event["tenant"] == "default"
        assert event["data"]["batch_id"] == batch_id and event["data"]["status"] == "completed"
        assert event["data"]["counts"] == done["counts"] and event["data"]["job_ids"] == done["job_ids"]


async def test_a_batch_with_nothing_to_track_completes_at_once(make_settings, nats):
    settings = make_settings("local")
    await put_objects(settings, {"uploads/a.jpg": make_image(32, 32)})
    async with running_api(settings) as api:  # no worker: nothing ever finishes
        response = await api.post("/api/v1/resize", json={"input": {"storage_key": "uploads/a.jpg"},
                                                          "parameters": {"width": 8}},
                                  headers={"Idempotency-Key": "k-1"})
        earlier = (await response.json())["job_id"]
        body = await post_batch(api, [resize("uploads/a.jpg", idempotency_key="k-1"), resize("uploads/gone.jpg")])
        assert (body["accepted"], body["refused"]) == (1, 1)
        assert body["items"][0] == {"index": 0, "job_id": earlier, "status": "queued", "replayed": True}
        # A replayed job was accepted before the batch existed: listed, not waited for.
        done = await get_batch(api, body["batch_id"])
        assert done["status"] == "completed" and done["job_ids"] == [earlier] and done["counts"]["queued"] == 1
        count, event = await batch_events(nats.port, "default", body["batch_id"])
        assert count == 1 and event["data"]["job_ids"] == [earlier]

        refused = await post_batch(api, [{"type": "resize"}, {"type": "nope"}])
        assert (refused["accepted"], refused["refused"]) == (0, 2)
        nothing = await get_batch(api, refused["batch_id"])
        assert nothing["status"] == "completed" and nothing["total"] == 0
        assert (await batch_events(nats.port, "default", refused["batch_id"]))[0] == 1


async def test_batch_requests_that_no_item_can_answer(make_settings, tenants: Path):
    settings = make_settings("local", tenants_file=tenants)
    async with running_api(settings) as api:
        one = [resize("inputs/alpha/none.jpg")]
        cases = [
            ({"data": "jobs", "headers": {"Content-Type": "text/plain"}}, 415, "UNSUPPORTED_MEDIA_TYPE"),
            ({"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400, "INVALID_REQUEST"),
            ({"json": [one]}, 400, "INVALID_REQUEST"),
            ({"json": {"jobs": {"0": one[0]}}}, 400, "INVALID_REQUEST"),
            ({"json": {"jobs": []}}, 422, "INVALID_PARAMETERS"),
            ({"json": {"jobs": one * 101}}, 422, "INVALID_PARAMETERS"),
            ({"json": {"jobs": one, "callback_url": "file:///etc/passwd"}}, 422, "INVALID_PARAMETERS"),
        ]
        for kwargs, status, code in cases:
            kwargs["headers"] = {**kwargs.get("headers", {}), **bearer(ALPHA)}
            response = await api.post("/api/v1/jobs/batch", **kwargs)
            assert response.status == status, (kwargs, await response.text())
            assert (await response.json())["error"]["code"] == code

        # A batch is its tenant's: another tenant gets what an unknown id gets; an admin sees it.
        body = await post_batch(api, one, headers=bearer(ALPHA))
        assert body["items"][0]["error"]["code"] == "INPUT_NOT_FOUND"
        assert (await get_batch(api, body["batch_id"], bearer(ALPHA)))["status"] == "completed"
        assert (await get_batch(api, body["batch_id"], bearer(OPS)))["batch_id"] == body["batch_id"]
        for path in (body["batch_id"], "00000000-0000-4000-8000-000000000000", "not-a-uuid", "*"):
            response = await api.get(f"/api/v1/batches/{path}", headers=bearer(BETA))
            assert response.status == 404, path
            assert (await response.json())["error"]["code"] == "NOT_FOUND"
        assert (await api.post("/api/v1/jobs/batch", json={"jobs": one})).status == 401


async def test_outages_redis_refuses_the_batch_nats_refuses_items(make_settings, nats, redis_proc):
    settings = make_settings("local")
    await put_objects(settings, {"uploads/a.jpg": make_image(32, 32)})
    jobs = [resize("uploads/a.jpg"), resize("uploads/a.jpg", width=8)]
    async with running_api(settings) as api:
        redis_proc.stop()
        response = await api.post("/api/v1/jobs/batch", json={"jobs": jobs})
        assert response.status == 503, await response.text()
        assert (await response.json())["error"]["code"] == "STATUS_UNAVAILABLE"
        redis_proc.start()

        nats.stop()
        body = await post_batch(api, jobs)  # each item answers its own outage; never a 500
        assert (body["accepted"], body["refused"]) == (0, 2)
        assert [item["error"]["code"] for item in body["items"]] == ["QUEUE_UNAVAILABLE"] * 2
        for item in body["items"]:
            assert "job_id" not in item
        assert (await get_batch(api, body["batch_id"]))["status"] == "running"  # completion unannounced
        nats.start()
        # The next GET after NATS is back publishes the batch.completed that could not be sent.
        done = await batch_completes(api, body["batch_id"])
        assert done["total"] == 0
        assert (await batch_events(nats.port, "default", body["batch_id"]))[0] == 1


async def test_exactly_one_batch_completed_with_two_workers_racing(make_settings, nats):
    settings = make_settings("local", worker_concurrency=4)
    await put_objects(settings, {"uploads/tiny.png": make_image(8, 8, ".png")})
    async with running_api(settings) as api, running_worker(settings), running_worker(settings):
        # Workers run while the batch is submitted: early items finish before the seal.
        # Two items share an Idempotency-Key: one job, the later item replays it (listed twice).
        jobs = [resize("uploads/tiny.png", width=4) for _ in range(98)]
        jobs += [resize("uploads/tiny.png", width=5, idempotency_key="same"),
                 resize("uploads/tiny.png", width=5, idempotency_key="same")]
        body = await post_batch(api, jobs)
        assert (body["accepted"], body["refused"]) == (100, 0)
        twins = body["items"][98:]
        assert twins[0]["job_id"] == twins[1]["job_id"] and sorted(t["replayed"] for t in twins) == [False, True]
        done = await batch_completes(api, body["batch_id"])
        assert done["counts"]["completed"] == 100 and len(set(done["job_ids"])) == 99
        count, event = await batch_events(nats.port, "default", body["batch_id"])
        assert count == 1 and event["data"]["counts"]["completed"] == 100


def upload_form(jobs: list, parts: dict[str, bytes]) -> FormData:
    data = FormData()
    data.add_field("jobs", json.dumps({"jobs": jobs}), content_type="application/json")
    for name, content in parts.items():
        data.add_field(name, content, filename=f"{name}.bin", content_type="application/octet-stream")
    return data


@pytest.fixture
def upload_dir(tmp_path: Path, monkeypatch) -> Path:
    """Temp files of this process go here, so the test can see that none is left behind."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


async def test_multipart_batch_uploads_each_item_like_a_single_submit(make_settings, storage_type, upload_dir,
                                                                      monkeypatch):
    settings = make_settings(storage_type, max_input_bytes=200_000)
    await put_objects(settings, {"uploads/stored.png": make_image(40, 30, ".png")})
    jpeg = make_image(64, 48)
    crop = {"type": "crop", "parameters": {"x": 0, "y": 0, "width": 8, "height": 8}}
    jobs = [
        {"type": "resize", "input": {"part": "a"}, "parameters": {"width": 16}},
        {**crop, "input": {"part": "a"}},  # two items may share a part
        {**crop, "input": {"part": "b"}, "parameters": {"x": 0, "y": 0, "width": 100, "height": 100}},
        {"type": "resize", "input": {"part": "junk"}, "parameters": {"width": 16}},
        {"type": "resize", "input": {"part": "big"}, "parameters": {"width": 16}},
        {"type": "resize", "input": {"part": "missing"}, "parameters": {"width": 16}},
        {"type": "resize", "input": {"storage_key": "uploads/stored.png"}, "parameters": {"width": 20}},
        {"type": "resize", "input": {"part": "empty"}, "parameters": {"width": 16}},
    ]
    parts = {"a": jpeg, "b": make_image(32, 32, ".png"), "junk": NOT_AN_IMAGE, "big": b"\xff" * 300_000,
             "empty": b"", "unused": jpeg}
    async with running_api(settings) as api, running_worker(settings):
        response = await api.post("/api/v1/jobs/batch", data=upload_form(jobs, parts))
        assert response.status == 200, await response.text()
        body = await response.json()
        assert (body["accepted"], body["refused"]) == (3, 5)
        codes = {item["index"]: item["error"]["code"] for item in body["items"] if "error" in item}
        assert codes == {2: "CROP_OUT_OF_BOUNDS", 3: "UNSUPPORTED_MEDIA_TYPE", 4: "PAYLOAD_TOO_LARGE",
                         5: "INVALID_REQUEST", 7: "INVALID_REQUEST"}
        done = await batch_completes(api, body["batch_id"])
        assert done["counts"]["completed"] == 3
        results = [(await (await api.get(f"/api/v1/jobs/{body['items'][i]['job_id']}")).json())["result"]
                   for i in (0, 1, 6)]
        assert [(r["width"], r["height"]) for r in results] == [(16, 12), (8, 8), (20, 15)]
        assert not list(upload_dir.iterdir())

        # Whole-body cap, a missing or broken jobs part: the request's errors, files discarded.
        monkeypatch.setattr(settings, "max_request_bytes", 100_000)  # MAX_REQUEST_BYTES, read per request
        response = await api.post("/api/v1/jobs/batch", data=upload_form(jobs[:1], {"a": jpeg, "c": b"x" * 150_000}))
        assert response.status == 413 and (await response.json())["error"]["code"] == "PAYLOAD_TOO_LARGE"
        no_jobs = FormData()
        no_jobs.add_field("a", jpeg, filename="a.jpg")
        response = await api.post("/api/v1/jobs/batch", data=no_jobs)
        assert response.status == 400 and "'jobs' part" in (await response.json())["error"]["message"]
        broken = FormData()
        broken.add_field("a", jpeg, filename="a.jpg")
        broken.add_field("jobs", "{nope")
        response = await api.post("/api/v1/jobs/batch", data=broken)
        assert response.status == 400 and (await response.json())["error"]["code"] == "INVALID_REQUEST"
        assert not list(upload_dir.iterdir())
