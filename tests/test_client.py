"""pixq.client against the real API (and a worker where a job must finish): submits of every
input kind, waiting, downloads, SSE with resumes, long-poll, direct uploads, batches, the admin
and system routes, errors as typed exceptions; the sync Client from a thread.

Retries are proven by the real API: a loopback proxy in front of it forwards a submit and then
loses the answer (503, or a dropped connection), and the API's own idempotency shows that the
retry returned the job the first attempt created. Only what a real API cannot be made to do on
demand (a 429 with Retry-After, a 503 on a non-idempotent route) comes from a tiny fake server.
Webhook verification is checked against signatures made by pixq.webhooks (pure logic)."""

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import pyvips
from aiohttp import web
from aiohttp.test_utils import TestServer

from pixq import webhooks
from pixq.client import (ApiError, AsyncClient, BatchItem, Client, ConnectionFailed, CropParams, ErrorCode,
                         EventsUnsupported, PipelineSpec, ResizeParams, RetryPolicy, StorageKeyInput, UploadIdInput,
                         WebhookVerificationFailed, verify_webhook)
from pixq.units import retry_after_seconds as parse_retry_after
from pixq.schemas import BatchItemInput
from pixq.storage import make_storage
from tests.conftest import running_api, running_worker
from tests.helpers import make_image
from tests.servers import free_port

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, max_elapsed=30.0)
ADMIN = {"admin_api_keys": {"admin-key": "ops"}, "api_keys": {"user-key": "team-a"}}


async def start(app: web.Application) -> TestServer:
    server = TestServer(app)
    await server.start_server()
    return server


def url_of(server) -> str:
    return str(server.make_url("")).rstrip("/")


async def put_object(settings, key: str, data: bytes) -> None:
    storage = make_storage(settings)
    await storage.ensure_ready()
    await storage.put_bytes(key, data, "application/octet-stream")


# --- Submit, wait, download; SSE; long-poll ------------------------------------------------------


async def test_async_submit_wait_download_events_and_long_poll(make_settings, tmp_path: Path):
    settings = make_settings("local")
    await put_object(settings, "uploads/a.png", make_image(64, 48, ".png"))
    async with running_api(settings) as api, AsyncClient(url_of(api), retry=FAST) as pixq:
        opened = asyncio.Event()
        tenant_events = []

        async def collect() -> None:
            async for event in pixq.tenant_events(on_open=opened.set):
                tenant_events.append(event)
                if event.event == "job.completed":
                    return

        collector = asyncio.create_task(collect())
        await asyncio.wait_for(opened.wait(), 10)
        source = tmp_path / "photo.jpg"
        source.write_bytes(make_image(120, 90))
        accepted = await pixq.resize(source, ResizeParams(width=40, format="png"))
        assert accepted.status == "queued"
        version = await pixq.poll_job(accepted.job_id)
        assert version.document.status == "queued" and version.etag
        unchanged = await pixq.poll_job(accepted.job_id, version.etag)  # conditional: 304, no document
        assert not unchanged.modified and unchanged.etag == version.etag

        async with running_worker(settings):
            moved = await pixq.poll_job(accepted.job_id, version.etag, wait="30s")  # long-poll: answers on change
            assert moved.modified and moved.etag != version.etag and moved.document.status != "queued"
            done = await pixq.wait_for_job(accepted.job_id, timeout=30)
            assert done.status == "completed" and (done.result.width, done.result.height) == (40, 30)
            target = await pixq.download(done.result.url, tmp_path / "out" / "small.png")
            assert pyvips.Image.new_from_file(str(target)).width == 40
            assert (await pixq.download(done.result.url))[:4] == b"\x89PNG"

            await asyncio.wait_for(collector, 30)
            mine = [event for event in tenant_events if event.json()["data"]["job_id"] == accepted.job_id]
            assert [event.event for event in mine][0] == "job.queued" and mine[-1].event == "job.completed"
            assert all(event.envelope().type == event.event for event in mine)
            assert mine[-1].envelope().data["result"]["url"]  # events carry fresh download URLs
            # The job's own stream resumes after an id: exactly the events that followed it.
            resumed = [event async for event in pixq.job_events(accepted.job_id, last_event_id=mine[0].id)]
            assert [(e.id, e.event) for e in resumed] == [(e.id, e.event) for e in mine[1:]]
            # The tenant stream too, from the first event: the same events in the same order.
            again = []
            async for event in pixq.tenant_events(last_event_id=tenant_events[0].id):
                again.append(event)
                if len(again) == len(tenant_events) - 1:
                    break
            assert [e.id for e in again] == [e.id for e in tenant_events[1:]]

            # Other inputs and routes: a storage key (crop), a pipeline spec, an analysis.
            crop = await pixq.crop(StorageKeyInput(storage_key="uploads/a.png"),
                                   CropParams(x=0, y=0, width=10, height=8), priority="batch")
            pipeline = await pixq.pipeline(make_image(50, 50), PipelineSpec.model_validate(
                {"variants": [{"name": "thumb", "width": 16}, {"name": "wide", "width": 32}]}), filename="p.jpg")
            analysis = await pixq.analyze(StorageKeyInput(storage_key="uploads/a.png"))
            crop_done, pipeline_done, analysis_done = [await pixq.wait_for_job(job.job_id, timeout=30)
                                                       for job in (crop, pipeline, analysis)]
        assert (crop_done.result.width, crop_done.result.height) == (10, 8)
        assert (crop_done.priority, pipeline_done.priority) == ("batch", "interactive")
        assert sorted(v.name for v in pipeline_done.result.variants) == ["thumb", "wide"]
        assert analysis_done.type == "analyze" and len(analysis_done.result.analysis["dhash"]) == 16

        listed = [job.job_id async for job in pixq.iter_jobs(page_size=2)]  # three pages, newest first
        assert listed == [analysis.job_id, pipeline.job_id, crop.job_id, accepted.job_id]
        page = await pixq.list_jobs(limit=1, type="crop")
        assert [job.job_id for job in page.items] == [crop.job_id]
        first_page = await pixq.list_jobs(limit=3)
        second_page = await pixq.list_jobs(limit=3, cursor=first_page.next_cursor)
        assert [job.job_id for job in first_page.items + second_page.items] == listed
        assert (await pixq.job_deliveries(crop.job_id)).deliveries == []
        with pytest.raises(EventsUnsupported) as unknown:
            [event async for event in pixq.job_events(str(uuid.uuid4()))]
        assert unknown.value.code is ErrorCode.NOT_FOUND


async def test_sync_client_from_a_thread(make_settings, tmp_path: Path):
    settings = make_settings("local")
    source = tmp_path / "photo.png"
    source.write_bytes(make_image(80, 60, ".png"))

    def use(url: str) -> tuple:
        with Client(url, retry=FAST) as pixq:
            assert pixq.health_live().status == "ok"
            accepted = pixq.resize(source, {"width": 20}, idempotency_key="sync-1", priority="batch")
            again = pixq.resize(source, {"width": 20}, idempotency_key="sync-1")  # the same job
            done = pixq.wait_for_job(accepted.job_id, timeout=30)
            data = pixq.download(done.result.url)
            events = [event.event for event in pixq.job_events(accepted.job_id)]  # ends after the terminal one
            jobs = [job.job_id for job in pixq.iter_jobs(page_size=1)]
            return accepted, again, done, data, events, jobs

    async with running_api(settings) as api, running_worker(settings):
        accepted, again, done, data, events, jobs = await asyncio.to_thread(use, url_of(api))
    assert again.job_id == accepted.job_id and done.status == "completed"
    assert pyvips.Image.new_from_buffer(data, "").width == 20
    assert events == ["job.completed"] and jobs == [accepted.job_id]


# --- Retries, proven by the real API --------------------------------------------------------------


def lossy_proxy(target: str, script: list[str], seen: list[dict]) -> web.Application:
    """Forwards every request to ``target``; the n-th request's answer is treated as ``script[n]``
    says: ``forward`` (passed back), ``lose-503`` (dropped, the client gets a 503), ``lose-drop``
    (dropped with the connection). Records each request's headers and the real answer."""
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {name: value for name, value in request.headers.items()
                   if name.lower() not in ("host", "content-length", "transfer-encoding")}
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, target + request.path_qs, data=body,
                                       headers=headers) as answer:
                payload = await answer.read()
                seen.append({"headers": dict(request.headers), "status": answer.status,
                             "body": json.loads(payload) if payload else None,
                             "replayed": answer.headers.get("Idempotent-Replayed")})
        action = script[len(seen) - 1] if len(seen) <= len(script) else "forward"
        if action == "lose-503":
            return web.json_response({"error": {"code": "SERVICE_UNAVAILABLE", "message": "proxy lost it"}},
                                     status=503, headers={"Retry-After": "0"})
        if action == "lose-drop":
            request.transport.abort()
            return web.Response()
        return web.Response(body=payload, status=answer.status, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.mark.parametrize("loss", ["lose-503", "lose-drop"])
async def test_a_retried_submit_returns_the_job_its_lost_first_attempt_created(make_settings, loss):
    settings = make_settings("local")
    seen: list[dict] = []
    async with running_api(settings) as api:
        proxy = await start(lossy_proxy(url_of(api), [loss], seen))
        try:
            async with AsyncClient(url_of(proxy), retry=FAST) as pixq:
                accepted = await pixq.resize(make_image(40, 30), {"width": 10})
                batch = await pixq.submit_batch([{"type": "resize", "input": {"part": "a"},
                                                  "parameters": {"width": 8}}], files={"a": make_image(20, 20)})
        finally:
            await proxy.close()
        listed = (await (await api.get("/api/v1/jobs")).json())["items"]
    first, retry = seen[0], seen[1]
    key = first["headers"]["Idempotency-Key"]
    assert uuid.UUID(key) and retry["headers"]["Idempotency-Key"] == key  # made once, sent again
    assert first["status"] == 202 and retry["status"] == 202 and retry["replayed"] == "true"
    assert accepted.job_id == first["body"]["job_id"] == retry["body"]["job_id"]
    assert len(seen) == 3 and batch.items[0].job_id  # the batch went through on its first try
    assert [job["job_id"] for job in listed] == [batch.items[0].job_id, accepted.job_id]  # no second job


async def test_a_retried_batch_replays_every_item(make_settings):
    settings = make_settings("local")
    await put_object(settings, "uploads/k.jpg", make_image(30, 30))
    items = [BatchItem(type="resize", input=BatchItemInput(part="a"), parameters={"width": 10}),
             {"type": "crop", "input": {"storage_key": "uploads/k.jpg"},
              "parameters": {"x": 0, "y": 0, "width": 5, "height": 5}},
             {"type": "resize", "input": {"part": "a"}, "parameters": {"width": 0}}]  # refused: its own error
    async with running_api(settings) as api, AsyncClient(url_of(api), retry=FAST) as pixq:
        first = await pixq.submit_batch(items, files={"a": make_image(40, 40)}, idempotency_key="b-1")
        again = await pixq.submit_batch(items, files={"a": make_image(40, 40)}, idempotency_key="b-1")
        assert (first.accepted, first.refused) == (2, 1)
        assert first.items[2].error.code is ErrorCode.INVALID_PARAMETERS
        assert [item.job_id for item in again.items[:2]] == [item.job_id for item in first.items[:2]]
        assert all(item.replayed for item in again.items[:2])
        document = await pixq.get_batch(first.batch_id)
        assert document.total == 2 and document.job_ids == [item.job_id for item in first.items[:2]]
        assert (await pixq.batch_deliveries(first.batch_id)).deliveries == []


# --- Retries against a fake server: 429 with Retry-After, non-idempotent calls --------------------


def scripted(statuses: list[int], seen: list[tuple[str, dict, float, bytes]],
             retry_after: str = "0") -> web.Application:
    """Answers each request with the next status (an error envelope, or a valid body for 2xx)."""
    async def handle(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.headers), time.monotonic(), await request.read()))
        status = statuses[min(len(seen), len(statuses)) - 1]
        if status == 429:
            return web.json_response({"error": {"code": "RATE_LIMITED", "message": "slow down"}}, status=429,
                                     headers={"Retry-After": retry_after})
        if status == 503:
            return web.json_response({"error": {"code": "SERVICE_UNAVAILABLE", "message": "down"}}, status=503,
                                     headers={"Retry-After": "0", "X-Request-ID": "req-1"})
        if request.path.endswith("/replay"):
            return web.json_response({"job_id": "j", "status": "queued", "generation": 1}, status=202)
        return web.json_response({"job_id": str(uuid.uuid4()), "status": "queued"}, status=202)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def with_fake(statuses: list[int], call: Callable[[AsyncClient], Awaitable], retry_after: str = "0",
                    retry: RetryPolicy = FAST) -> tuple[list, object]:
    seen: list = []
    server = await start(scripted(statuses, seen, retry_after))
    try:
        async with AsyncClient(url_of(server), retry=retry) as pixq:
            try:
                result = await call(pixq)
            except ApiError as exc:
                result = exc
    finally:
        await server.close()
    return seen, result


async def test_429_is_retried_after_retry_after_with_the_same_key():
    seen, accepted = await with_fake([429, 429, 202], lambda pixq: pixq.resize(b"\xff\xd8\xff", {"width": 5}),
                                     retry_after="1")
    keys = {headers["Idempotency-Key"] for _, headers, _, _ in seen}
    assert len(seen) == 3 and len(keys) == 1 and accepted.status == "queued"
    assert seen[1][2] - seen[0][2] >= 1.0 and seen[2][2] - seen[1][2] >= 1.0  # Retry-After honoured
    # Bounded: a server that keeps refusing gets `attempts` tries, then the typed error.
    seen, error = await with_fake([429], lambda pixq: pixq.get_job(str(uuid.uuid4())))
    assert len(seen) == FAST.attempts and error.code is ErrorCode.RATE_LIMITED and error.status == 429


async def test_a_non_idempotent_call_is_not_retried_blindly():
    # A DLQ replay answered 503 may have happened: not repeated. A 429 was refused unprocessed: repeated.
    seen, error = await with_fake([503, 202], lambda pixq: pixq.replay_dead(str(uuid.uuid4())))
    assert len(seen) == 1 and error.code is ErrorCode.SERVICE_UNAVAILABLE and error.request_id == "req-1"
    seen, replayed = await with_fake([429, 202], lambda pixq: pixq.replay_dead(str(uuid.uuid4())))
    assert len(seen) == 2 and replayed.generation == 1
    # An idempotent one (a submit with its key) is repeated after a 503.
    seen, accepted = await with_fake([503, 202], lambda pixq: pixq.resize(b"x", idempotency_key="k-1"))
    assert len(seen) == 2 and {h["Idempotency-Key"] for _, h, _, _ in seen} == {"k-1"}


async def test_priority_and_callback_are_sent_only_when_given():
    seen, _ = await with_fake([202], lambda pixq: pixq.crop(StorageKeyInput(storage_key="k"), {"width": 5}))
    assert json.loads(seen[0][3]) == {"input": {"storage_key": "k"}, "parameters": {"width": 5}}
    seen, _ = await with_fake([202], lambda pixq: pixq.pipeline(UploadIdInput(upload_id="u"), preset="avatar@2",
                                                                priority="batch", callback_url="https://h.example/"))
    assert json.loads(seen[0][3]) == {"input": {"upload_id": "u"}, "preset": "avatar@2", "priority": "batch",
                                      "callback_url": "https://h.example/"}
    seen, _ = await with_fake([202], lambda pixq: pixq.resize(b"image", ResizeParams(width=5), priority="interactive"))
    form = seen[0][3].decode()
    assert 'name="priority"\r\n' in form and "\r\n\r\ninteractive\r\n" in form and 'name="width"' in form
    assert 'name="height"' not in form and "callback_url" not in form  # only what was given


async def test_unreachable_api_raises_connection_failed_after_bounded_retries():
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", retry=FAST) as pixq:
        with pytest.raises(ConnectionFailed, match="cannot reach the pixq API"):
            await pixq.get_job(str(uuid.uuid4()))


# --- Errors, uploads, admin and system routes against the real API ----------------------------------


async def test_errors_uploads_admin_and_system_routes(make_settings, storage_type, tmp_path: Path):
    settings = make_settings(storage_type, **ADMIN)
    async with running_api(settings) as api, running_worker(settings):
        url = url_of(api)
        async with AsyncClient(url, "user-key", retry=FAST) as user, \
                AsyncClient(url, "admin-key", retry=FAST) as admin, AsyncClient(url, "wrong", retry=FAST) as stranger:
            with pytest.raises(ApiError) as refused:
                await stranger.list_jobs()
            assert (refused.value.status, refused.value.code) == (401, ErrorCode.UNAUTHORIZED)
            assert refused.value.request_id
            with pytest.raises(ApiError) as missing:
                await user.get_job(str(uuid.uuid4()))
            assert (missing.value.status, missing.value.code) == (404, ErrorCode.NOT_FOUND)
            with pytest.raises(ApiError) as invalid:
                await user.resize(make_image(20, 20), {"width": 0})
            assert (invalid.value.status, invalid.value.code) == (422, ErrorCode.INVALID_PARAMETERS)
            with pytest.raises(ApiError) as not_image:
                await user.resize(b"plain text, not an image", {"width": 5})
            assert not_image.value.code is ErrorCode.UNSUPPORTED_MEDIA_TYPE
            with pytest.raises(ApiError) as forbidden:
                await user.list_dead()
            assert (forbidden.value.status, forbidden.value.code) == (403, ErrorCode.FORBIDDEN)

            # A direct upload: the grant, the bytes to its URL, a job naming it.
            photo = tmp_path / "photo"  # no extension: the type comes from the first bytes
            photo.write_bytes(make_image(60, 40))
            uploaded = await user.upload(photo)
            assert uploaded.storage_key and uploaded.upload_id in uploaded.storage_key
            job = await user.resize(UploadIdInput(upload_id=uploaded.upload_id), ResizeParams(width=30))
            done = await user.wait_for_job(job.job_id, timeout=30)
            assert done.status == "completed" and done.result.width == 30
            assert len(await user.download(done.result.url)) == done.result.bytes
            grant = await user.create_upload("image/png")
            assert grant.fields["Content-Type"] == "image/png" or grant.fields.get("content-type") == "image/png"

            token = await user.create_stream_token(job.job_id)
            assert token.job_id == job.job_id and token.token
            assert (await admin.list_dead()).total == 0
            with pytest.raises(ApiError) as no_dead:
                await admin.get_dead(str(uuid.uuid4()))
            assert no_dead.value.code is ErrorCode.NOT_FOUND
            assert (await admin.replay_dead_many(error_code="TIMEOUT")).replayed == []
            assert (await admin.purge_dead_all()).purged == 0
            assert (await admin.list_jobs(tenant="team-a")).items[0].job_id == job.job_id

            assert (await user.health_live()).status == "ok"
            ready = await user.health_ready()
            assert ready.status == "ready" and all(ready.checks.values())
            assert "pixq_" in await user.metrics()


# --- Webhook verification (pure logic, against pixq's own signing) ----------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def test_verify_webhook_accepts_pixq_signatures_and_refuses_tampering():
    old, new, stranger = new_secret(), new_secret(), new_secret()
    body = json.dumps({"type": "job.completed", "timestamp": "2030-01-01T00:00:00Z", "tenant": "acme",
                       "position": [0, 1, 3], "data": {"job_id": "j", "status": "completed"}}).encode()
    headers = webhooks.signed_headers([new, old], "evt_j_0_1_3", int(time.time()), body)
    for secrets in (new, [old], [stranger, new]):  # any one known secret verifies (rotation)
        event = verify_webhook(body, headers, secrets)
        assert event.type == "job.completed" and event.data["job_id"] == "j"
    with pytest.raises(WebhookVerificationFailed):
        verify_webhook(body, headers, [stranger])
    with pytest.raises(WebhookVerificationFailed):
        verify_webhook(body.replace(b'"j"', b'"k"'), headers, new)  # the body is covered
    with pytest.raises(WebhookVerificationFailed):
        verify_webhook(body, {**headers, "webhook-id": "evt_other"}, new)  # and the id
    stale = webhooks.signed_headers([new], "evt_j_0_1_3", int(time.time()) - 3600, body)
    with pytest.raises(WebhookVerificationFailed):
        verify_webhook(body, stale, new)  # replays of old requests
    with pytest.raises(WebhookVerificationFailed):
        verify_webhook(body, {"Content-Type": "application/json"}, new)
    with pytest.raises(WebhookVerificationFailed):
        verify_webhook(body, headers, "not-a-secret!")


# --- Retry policy (pure logic) -----------------------------------------------------------------------


def test_retry_policy_decides_by_status_and_idempotency():
    policy = RetryPolicy()
    assert policy.should_retry(429, idempotent=False) and policy.should_retry(429, idempotent=True)
    for status in (502, 503, 504, None):
        assert policy.should_retry(status, idempotent=True) and not policy.should_retry(status, idempotent=False)
    for status in (400, 401, 404, 409, 422, 500):
        assert not policy.should_retry(status, idempotent=True)
    delays = [policy.delay(retry) for retry in range(1, 12) for _ in range(20)]
    assert all(0 <= delay <= policy.max_delay for delay in delays) and len(set(delays)) > 1  # jittered, capped
    assert policy.delay(1, retry_after=7.0) >= 7.0
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 55 <= parse_retry_after(time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))) <= 60
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
