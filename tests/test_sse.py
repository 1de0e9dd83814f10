"""SSE: GET /api/v1/jobs/{id}/events and GET /api/v1/events, read as a client reads them.

Real nats-server, redis-server, API apps and worker. Proven here: the job stream's first
event is the current status, then each change, then the server closes; the tenant stream
with its filters and tenant scopes; Last-Event-ID resumes with no event lost or repeated
while events keep arriving, across two API replicas; expired and unknown ids get a reset;
heartbeats and headers; stream tokens (good, bound to another job, expired, forged, on a
non-SSE route) and that no token reaches a log line; streams end on shutdown; the hub
keeps tailing across a NATS restart, and ends lagging or gapped listeners.
"""

import asyncio
import contextlib
import json
import signal
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import nats as nats_client
import pytest
from yarl import URL

from api.handlers import events as event_handlers
from api.events_hub import ALL, EVENTS_HUB, EventHub, HubEvent, Listener, StreamEnded, end_streams
from pixq import events as pixq_events
from pixq import names, queue, stream_tokens
from tests.conftest import running_api, running_worker
from tests.helpers import form, make_image, wait_for_status
from tests.stack import Stack, stack_env

ACME, GLOBEX, OPS = "acme-key", "globex-key", "ops-key"
JOB_STATUSES = ("queued", "processing", "completed")


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def settings(make_settings):
    """Local storage (one test below also runs S3), three tenants, a short heartbeat."""
    return make_settings("local", api_keys={ACME: "acme", GLOBEX: "globex"}, admin_api_keys={OPS: "ops"},
                         events_heartbeat=0.3)


async def submit(api, secret: str, job_type: str = "resize") -> str:
    fields = {"width": 40} if job_type == "resize" else {"x": 0, "y": 0, "width": 20, "height": 20}
    response = await api.post(f"/api/v1/{job_type}", data=form(make_image(120, 90), **fields), headers=bearer(secret))
    assert response.status == 202, await response.text()
    return (await response.json())["job_id"]


# --- A minimal text/event-stream reader ------------------------------------------------


@dataclass
class Frame:
    """One blank-line-terminated block as the wire carried it."""

    id: int | None = None
    event: str | None = None
    data: Any = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)


class SseReader:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def frame(self, timeout: float = 20.0) -> Frame | None:
        """The next frame, or None once the server closed the stream."""
        frame, seen = Frame(), False
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return frame if seen else None
                line = raw.decode().rstrip("\n")
                if not line:
                    if seen:
                        return frame
                    continue
                seen = True
                if line.startswith(":"):
                    frame.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "id":
                    frame.id = int(value)
                elif name == "event":
                    frame.event = value
                elif name == "data":
                    frame.data = json.loads(value)
                elif name == "retry":
                    frame.retry = int(value)

    async def event(self, timeout: float = 20.0) -> Frame | None:
        """The next frame carrying an event (skips ``retry:`` and heartbeats); None at the end."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.frame(timeout)
                if frame is None or frame.event is not None:
                    return frame

    async def until(self, done, timeout: float = 30.0) -> list[Frame]:
        """Events up to and including the first for which ``done(frame)`` holds."""
        frames: list[Frame] = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.event(timeout)
                assert frame is not None, f"stream ended early after {[(f.id, f.event) for f in frames]}"
                frames.append(frame)
                if done(frame):
                    return frames

    async def rest(self, timeout: float = 30.0) -> list[Frame]:
        """Every event until the server closes the stream (fails if it does not)."""
        frames = []
        async with asyncio.timeout(timeout):
            while (frame := await self.event(timeout)) is not None:
                frames.append(frame)
        return frames


@contextlib.asynccontextmanager
async def open_stream(api, path: str, headers: dict | None = None, expect: int = 200):
    response = await api.get(path, headers=headers or {})
    try:
        assert response.status == expect, await response.text()
        yield SseReader(response)
    finally:
        response.close()


def completed(job_id: str):
    return lambda frame: frame.event == "job.completed" and frame.data["data"]["job_id"] == job_id


def job_of(frame: Frame) -> str:
    return frame.data["data"].get("job_id") or frame.data["data"].get("batch_id")


# --- The job stream ---------------------------------------------------------------------


async def test_job_stream_sends_current_status_then_each_change_then_closes(api, settings):
    job_id = await submit(api, ACME)  # no worker yet: it stays queued
    path = f"/api/v1/jobs/{job_id}/events"
    async with open_stream(api, path, bearer(ACME)) as stream:
        headers = stream.response.headers
        assert headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert headers["Cache-Control"] == "no-cache" and headers["X-Accel-Buffering"] == "no"
        assert headers["X-Request-ID"]
        assert (await stream.frame()).retry == 3000
        first = await stream.event()
        assert first.event == "job.queued" and first.data["type"] == "job.queued"
        assert first.data["tenant"] == "acme" and first.data["position"] == [0, 0, 0]
        assert first.data["data"]["job_id"] == job_id and first.data["data"]["status"] == "queued"
        async with running_worker(settings):
            rest = await stream.rest()  # ends: the server closes after the terminal event
    assert [frame.event for frame in rest] == ["job.processing", "job.completed"]
    ids = [first.id, *(frame.id for frame in rest)]
    assert ids == sorted(set(ids)), ids
    done = rest[-1].data["data"]
    status = await (await api.get(f"/api/v1/jobs/{job_id}", headers=bearer(ACME))).json()
    assert {k: v for k, v in done.items() if k != "result"} == {k: v for k, v in status.items() if k != "result"}
    assert done["result"]["storage_key"] == status["result"]["storage_key"]
    download = await api.get(URL(done["result"]["url"]).path_qs)  # the event's own, freshly minted URL
    assert download.status == 200 and len(await download.read()) > 0

    # Opened after the end: the terminal status at once, with the id of its stored event, then the end.
    async with open_stream(api, path, bearer(ACME)) as stream:
        again = await stream.rest()
    assert [(frame.event, frame.id) for frame in again] == [("job.completed", rest[-1].id)]
    # Resumed after its terminal event: nothing more to say, the stream closes at once.
    async with open_stream(api, path, {**bearer(ACME), "Last-Event-ID": str(rest[-1].id)}) as stream:
        assert await stream.rest() == []
    # Resumed in the middle: exactly what followed.
    async with open_stream(api, path, {**bearer(ACME), "Last-Event-ID": str(first.id)}) as stream:
        assert [(f.event, f.id) for f in await stream.rest()] == [(f.event, f.id) for f in rest]


async def test_job_stream_urls_come_from_either_storage_backend(make_settings):
    """Presigned S3 URLs (moto) in the completed event work like local signed links."""
    settings = make_settings("minio")
    async with running_api(settings) as api, running_worker(settings):
        response = await api.post("/api/v1/resize", data=form(make_image(120, 90), width=40))
        job_id = (await response.json())["job_id"]
        async with open_stream(api, f"/api/v1/jobs/{job_id}/events") as stream:
            frames = await stream.rest()
        assert frames[-1].event == "job.completed"
        url = frames[-1].data["data"]["result"]["url"]
        assert not url.startswith("/files/") and "X-Amz-Signature" in url
        async with api.session.get(url) as download:
            assert download.status == 200


async def test_job_stream_is_only_for_the_jobs_tenant(api):
    job_id = await submit(api, ACME)
    path = f"/api/v1/jobs/{job_id}/events"
    theirs = await api.get(path, headers=bearer(GLOBEX))
    missing = await api.get("/api/v1/jobs/00000000-0000-4000-8000-000000000000/events", headers=bearer(GLOBEX))
    assert theirs.status == missing.status == 404 and await theirs.json() == await missing.json()
    assert (await api.get("/api/v1/jobs/not-a-uuid/events", headers=bearer(ACME))).status == 404
    assert (await api.get(path)).status == 401
    bad_id = await api.get(path, headers={**bearer(ACME), "Last-Event-ID": "12abc"})
    assert bad_id.status == 422 and (await bad_id.json())["error"]["code"] == "INVALID_PARAMETERS"
    async with open_stream(api, path, bearer(OPS)) as stream:  # an admin sees every tenant's jobs
        assert (await stream.event()).event == "job.queued"


# --- The tenant stream ------------------------------------------------------------------


async def test_tenant_stream_filters_and_scopes(api, worker, settings):
    """Each stream gets exactly its events. The last job of each tenant (a crop, matching every
    filter) is the marker: once a stream shows the marker done, it has been sent everything before."""
    scopes = {
        "acme": (ACME, "/api/v1/events"),
        "completed": (ACME, "/api/v1/events?status=completed"),
        "crop": (ACME, "/api/v1/events?type=crop"),
        "queued-or-failed-resize": (ACME, "/api/v1/events?status=queued,failed&type=resize"),
        "admin-globex": (OPS, "/api/v1/events?tenant=globex"),
        "admin-all": (OPS, "/api/v1/events"),
    }
    async with contextlib.AsyncExitStack() as stack:
        streams = {name: await stack.enter_async_context(open_stream(api, path, bearer(key)))
                   for name, (key, path) in scopes.items()}
        acme_resize, acme_crop = await submit(api, ACME), await submit(api, ACME, "crop")
        globex_resize = await submit(api, GLOBEX)
        for job_id, key in ((acme_resize, ACME), (acme_crop, ACME), (globex_resize, GLOBEX)):
            await wait_for_status(api, job_id, headers=bearer(key))
        batch_id = "11111111-2222-4333-8444-555555555555"
        nc = await nats_client.connect(settings.nats_url)
        try:
            await pixq_events.publish_batch_completed(nc.jetstream(), "acme", {"batch_id": batch_id, "total": 2})
        finally:
            await nc.close()
        acme_marker, globex_marker = await submit(api, ACME, "crop"), await submit(api, GLOBEX, "crop")

        seen = {}
        for name in ("acme", "completed", "crop", "admin-all"):
            seen[name] = await streams[name].until(completed(acme_marker))
        if not any(completed(globex_marker)(frame) for frame in seen["admin-all"]):
            seen["admin-all"] += await streams["admin-all"].until(completed(globex_marker))
        seen["admin-globex"] = await streams["admin-globex"].until(completed(globex_marker))
        # This one's marker: the acme marker's queued event is not a resize, so end on a later resize.
        acme_last = await submit(api, ACME)
        seen["queued-or-failed-resize"] = await streams["queued-or-failed-resize"].until(
            lambda frame: job_of(frame) == acme_last)

    def pairs(name: str) -> set[tuple[str, str]]:
        frames = seen[name]
        assert [f.id for f in frames] == sorted({f.id for f in frames}), f"{name}: ids not increasing"
        return {(job_of(frame), frame.event) for frame in frames}

    every = {(job, f"job.{status}") for job in (acme_resize, acme_crop, acme_marker) for status in JOB_STATUSES}
    assert pairs("acme") == every | {(batch_id, "batch.completed")}
    assert pairs("completed") == {(job, "job.completed") for job in (acme_resize, acme_crop, acme_marker)} | {
        (batch_id, "batch.completed")}
    assert pairs("crop") == {(job, f"job.{status}") for job in (acme_crop, acme_marker) for status in JOB_STATUSES}
    assert pairs("queued-or-failed-resize") == {(acme_resize, "job.queued"), (acme_last, "job.queued")}
    globex = {(job, f"job.{status}") for job in (globex_resize, globex_marker) for status in JOB_STATUSES}
    assert pairs("admin-globex") == globex
    assert pairs("admin-all") >= every | globex | {(batch_id, "batch.completed")}
    assert all(frame.data["tenant"] == "globex" for frame in seen["admin-globex"])


async def test_tenant_stream_refuses_bad_scopes_and_filters(api):
    other = await api.get("/api/v1/events?tenant=globex", headers=bearer(ACME))
    assert other.status == 403 and (await other.json())["error"]["code"] == "FORBIDDEN"
    for query in ("status=done", "type=resize,rotate", "status=", "tenant=Not.A.Tenant"):
        key = OPS if query.startswith("tenant") else ACME
        response = await api.get(f"/api/v1/events?{query}", headers=bearer(key))
        assert response.status == 422, query
        assert (await response.json())["error"]["code"] == "INVALID_PARAMETERS"
    assert (await api.get("/api/v1/events")).status == 401
    async with open_stream(api, "/api/v1/events?tenant=acme", bearer(ACME)):
        pass  # a user naming its own tenant is fine
    head = await asyncio.wait_for(api.head("/api/v1/events", headers=bearer(ACME)), 5)  # answered, not streamed
    assert head.status == 200 and head.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    for _ in range(3):  # and the connection stays usable
        assert (await api.get("/api/v1/events?status=done", headers=bearer(ACME))).status == 422


async def test_heartbeats_keep_an_idle_stream_alive(api):
    async with open_stream(api, "/api/v1/events", bearer(ACME)) as stream:
        frames = [await stream.frame(timeout=10) for _ in range(3)]
    assert frames[0].retry == 3000
    assert frames[1].comments == ["heartbeat"] and frames[2].comments == ["heartbeat"]
    assert all(frame.event is None and frame.id is None for frame in frames)


# --- Resuming ---------------------------------------------------------------------------


async def test_resume_across_replicas_loses_and_repeats_nothing_while_events_arrive(settings):
    """A reference stream on replica A reads every event once. Another client keeps dropping
    its connection after a few events and resumes with Last-Event-ID, alternately on B and A
    (once with ?last_event_id=), each time only after more events were stored meanwhile: its
    events, joined, are exactly the reference's."""
    jobs = 10

    def all_done(frames: list[Frame]) -> bool:
        return len({job_of(f) for f in frames if f.event == "job.completed"}) == jobs

    async with running_api(settings) as api_a, running_api(settings) as api_b, running_worker(settings):
        reference: list[Frame] = []
        progressed = asyncio.Event()
        submitted: list[str] = []

        async def read_reference(stream: SseReader) -> None:
            while not all_done(reference):
                reference.append(await stream.event())
                progressed.set()

        async def submitter() -> None:
            for _ in range(jobs):
                submitted.append(await submit(api_a, ACME))

        async with open_stream(api_a, "/api/v1/events", bearer(ACME)) as ref_stream:
            client: list[Frame] = []
            replicas, connections, resumed_behind = [api_b, api_a], 0, 0
            async with open_stream(api_b, "/api/v1/events", bearer(ACME)) as stream:
                reading = asyncio.create_task(read_reference(ref_stream))
                submitting = asyncio.create_task(submitter())
                client += await stream.until(lambda frame: True)
            while not all_done(client):
                # Reconnect only once the stream went on without us (unless it is all done).
                while len(reference) <= len(client) + 1 and not reading.done():
                    progressed.clear()
                    await asyncio.wait_for(progressed.wait(), 20)
                live_end = reference[-1].id
                connections += 1
                api = replicas[connections % 2]
                last = client[-1].id
                path, headers = "/api/v1/events", bearer(ACME)
                if connections == 3:
                    path += f"?last_event_id={last}"
                else:
                    headers = {**headers, "Last-Event-ID": str(last)}
                async with open_stream(api, path, headers) as stream:
                    batch: list[Frame] = []
                    while len(batch) < 3 and not all_done(client + batch):
                        batch.append(await stream.event())
                    resumed_behind += any(frame.id <= live_end for frame in batch)
                    client += batch
            await asyncio.wait_for(reading, 30)
            await submitting

    assert [(f.id, f.event, job_of(f)) for f in client] == [(f.id, f.event, job_of(f)) for f in reference]
    assert {job_of(f) for f in reference} == set(submitted)
    assert connections >= 3 and resumed_behind >= 2, (connections, resumed_behind)


async def test_expired_or_unknown_last_event_id_gets_a_reset(api, worker, settings, monkeypatch):
    monkeypatch.setattr(event_handlers, "IN_FLIGHT_SECONDS", 0.0)  # purged events expired "long ago"
    old_job = await submit(api, ACME)
    await wait_for_status(api, old_job, headers=bearer(ACME))
    nc = await nats_client.connect(settings.nats_url)
    try:
        js = nc.jetstream()
        await js.purge_stream(names.EVENTS_STREAM)  # as if EVENTS_MAX_AGE had passed
        state = (await js.stream_info(names.EVENTS_STREAM)).state
    finally:
        await nc.close()
    first_kept = state.last_seq + 1

    async with open_stream(api, "/api/v1/events", {**bearer(ACME), "Last-Event-ID": "1"}) as stream:
        reset = await stream.event()
        assert (reset.event, reset.id, reset.data) == ("reset", None, {"reason": "expired", "first_id": first_kept})
        new_job = await submit(api, ACME)
        frames = await stream.until(completed(new_job))
    assert [(job_of(f), f.event) for f in frames] == [(new_job, f"job.{s}") for s in JOB_STATUSES]
    assert frames[0].id == first_kept

    future = str(first_kept + 1000)
    async with open_stream(api, "/api/v1/events", {**bearer(ACME), "Last-Event-ID": future}) as stream:
        reset = await stream.event()
        assert (reset.event, reset.data["reason"]) == ("reset", "unknown")
        # ... then from the oldest event kept: the new job's, once each.
        assert [(job_of(f), f.event) for f in await stream.until(completed(new_job))] == [
            (new_job, f"job.{s}") for s in JOB_STATUSES]

    # The job stream after a reset: the job's current status (its events are gone, the status is not).
    async with open_stream(api, f"/api/v1/jobs/{old_job}/events", {**bearer(ACME), "Last-Event-ID": "1"}) as stream:
        frames = await stream.rest()
    assert [f.event for f in frames] == ["reset", "job.completed"]
    assert frames[1].data["data"]["job_id"] == old_job


# --- Replicas, shutdown, NATS restarts ---------------------------------------------------


async def test_any_replica_streams_any_job(settings):
    async with running_api(settings) as api_a, running_api(settings) as api_b:
        job_id = await submit(api_a, ACME)
        async with open_stream(api_b, f"/api/v1/jobs/{job_id}/events", bearer(ACME)) as on_b, \
                open_stream(api_b, "/api/v1/events", bearer(ACME)) as tenant_on_b:
            assert (await on_b.event()).event == "job.queued"
            async with running_worker(settings):
                assert [f.event for f in await on_b.rest()] == ["job.processing", "job.completed"]
                frames = await tenant_on_b.until(completed(job_id))
        assert [f.event for f in frames] == ["job.processing", "job.completed"]


async def test_shutdown_ends_open_streams(settings):
    async with running_api(settings) as api:
        job_id = await submit(api, ACME)
        async with open_stream(api, f"/api/v1/jobs/{job_id}/events", bearer(ACME)) as job_stream, \
                open_stream(api, "/api/v1/events", bearer(ACME)) as tenant_stream:
            assert (await job_stream.event()).event == "job.queued"
            await end_streams(api.server.app)  # what SIGTERM (or the app's shutdown) does
            assert await job_stream.rest(timeout=5) == []
            assert await tenant_stream.rest(timeout=5) == []
            assert api.server.app[EVENTS_HUB].listeners == 0


async def test_hub_keeps_tailing_across_a_nats_restart(settings, nats):
    """The stream stays open across the restart; the hub's consumer (gone with the server) is
    recreated from where it was — not from the start of the stream, which holds older events
    here — and the job's events reach the stream, each once."""
    nc = await queue.connect(settings, "test-history")
    try:
        await queue.ensure_streams(nc.jetstream(), settings)
        for job in range(3):
            await pixq_events.publish_job_event(nc.jetstream(), {
                "job_id": f"00000000-0000-4000-8000-00000000000{job}", "status": "queued", "tenant": "acme"})
    finally:
        await queue.close(nc)
    async with running_api(settings) as api, open_stream(api, "/api/v1/events", bearer(ACME)) as stream:
        nats.restart()
        job_id = None
        async with asyncio.timeout(30):
            while job_id is None:  # submits answer 503 until the API's connection is back
                response = await api.post("/api/v1/resize", data=form(make_image(120, 90), width=40),
                                          headers=bearer(ACME))
                if response.status == 202:
                    job_id = (await response.json())["job_id"]
                else:
                    assert response.status == 503, await response.text()
                    await asyncio.sleep(0.2)
        async with running_worker(settings):
            frames = await stream.until(completed(job_id), timeout=40)
        hub = api.server.app[EVENTS_HUB]
        assert [f.event for f in frames] == [f"job.{s}" for s in JOB_STATUSES]
        assert (hub.start_sequence, hub.gaps, hub.stale) == (4, 0, 0)


# --- Stream tokens ------------------------------------------------------------------------


async def test_stream_tokens(api, settings):
    job_a, job_b = await submit(api, ACME), await submit(api, ACME)
    minted = await api.post("/api/v1/events/token", headers=bearer(ACME))
    assert minted.status == 200 and minted.headers["Cache-Control"] == "no-store"
    body = await minted.json()
    tenant_token = body["token"]
    assert body["job_id"] is None and body["expires_at"].endswith("Z")
    bound = await (await api.post("/api/v1/events/token", json={"job_id": job_a}, headers=bearer(ACME))).json()
    job_token = bound["token"]

    # A tenant token opens both streams, without any Authorization header.
    async with open_stream(api, f"/api/v1/jobs/{job_b}/events?access_token={tenant_token}") as stream:
        assert job_of(await stream.event()) == job_b
    async with open_stream(api, f"/api/v1/events?access_token={tenant_token}") as stream:
        assert (await stream.frame()).retry == 3000
    # A job token opens that job's stream and nothing else.
    async with open_stream(api, f"/api/v1/jobs/{job_a}/events?access_token={job_token}") as stream:
        assert job_of(await stream.event()) == job_a
    for path in (f"/api/v1/jobs/{job_b}/events", "/api/v1/events"):
        refused = await api.get(f"{path}?access_token={job_token}")
        assert refused.status == 403 and (await refused.json())["error"]["code"] == "FORBIDDEN", path
    # A token is no API key: every other route refuses it.
    for method, path in (("GET", f"/api/v1/jobs/{job_a}"), ("GET", "/api/v1/jobs"),
                         ("POST", "/api/v1/events/token")):
        refused = await api.request(method, f"{path}?access_token={tenant_token}")
        assert refused.status == 401, path

    # Expired, forged, re-signed claims, another key, a role the tenant does not have: 401.
    key = settings.signing_key()
    expired, _ = stream_tokens.mint(key, "acme", "user", None, ttl=-1)
    version, claims, signature = tenant_token.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    other_claims = stream_tokens.mint(key, "globex", "user", None, 300)[0].split(".")[1]
    elevated, _ = stream_tokens.mint(key, "acme", "admin", None, 300)
    foreign, _ = stream_tokens.mint(b"another-deployment", "acme", "user", None, 300)
    for token in (expired, f"{version}.{claims}.{flipped}", f"{version}.{other_claims}.{signature}", elevated,
                  foreign, "", "garbage", tenant_token + "x"):
        refused = await api.get(f"/api/v1/jobs/{job_a}/events?access_token={token}")
        assert refused.status == 401, token
        assert (await refused.json())["error"]["code"] == "UNAUTHORIZED"
    # Tenant-bound: another tenant's valid token sees no acme job.
    globex_token = (await (await api.post("/api/v1/events/token", headers=bearer(GLOBEX))).json())["token"]
    assert (await api.get(f"/api/v1/jobs/{job_a}/events?access_token={globex_token}")).status == 404

    # Minting: only for a job the caller sees; only {"job_id"} in the body.
    refused = await api.post("/api/v1/events/token", json={"job_id": job_a}, headers=bearer(GLOBEX))
    assert refused.status == 404
    for body, status in (({"job_id": "nope"}, 422), ({"job": job_a}, 422), ([job_a], 422)):
        assert (await api.post("/api/v1/events/token", json=body, headers=bearer(ACME))).status == status, body
    not_json = await api.post("/api/v1/events/token", data=b"{", headers=bearer(ACME))
    assert not_json.status == 400
    assert (await api.post("/api/v1/events/token")).status == 401


async def test_stream_tokens_never_reach_the_logs(nats, redis_proc, tmp_path):
    """The real API process at debug level: a token opens a stream, is refused elsewhere, and a
    forged one is refused; SIGTERM ends the open stream; the token is in no log line."""
    env = stack_env(nats.port, redis_proc.port, tmp_path, LOG_LEVEL="debug", API_KEYS=f"acme={ACME}",
                    API_SHUTDOWN_GRACE="3s")
    stack = Stack(env, tmp_path)
    stack.start_api()
    try:
        async with aiohttp.ClientSession(stack.api_url, timeout=aiohttp.ClientTimeout(total=30)) as http:
            response = await http.post("/api/v1/resize", data=form(make_image(64, 48), width=16),
                                       headers=bearer(ACME))
            job_id = (await response.json())["job_id"]
            token = (await (await http.post("/api/v1/events/token", json={"job_id": job_id},
                                            headers=bearer(ACME))).json())["token"]
            assert (await http.get(f"/api/v1/jobs/{job_id}?access_token={token}")).status == 401
            assert (await http.get(f"/api/v1/jobs/{job_id}/events?access_token={token}x")).status == 401
            async with open_stream(http, f"/api/v1/jobs/{job_id}/events?access_token={token}") as stream:
                assert (await stream.event()).event == "job.queued"
                stack.api.signal(signal.SIGTERM)
                assert await stream.rest(timeout=25) == []  # the stream ends, well within the grace
            assert await asyncio.to_thread(stack.api.wait, 30) == 0
    finally:
        stack.stop()
    log = stack.api.log.read_text()
    assert "api_stopped" in log
    signature = token.split(".")[2]
    assert token not in log and signature not in log and "access_token" not in log


# --- The hub on its own -------------------------------------------------------------------


def message(sequence: int, subject: str, body: dict) -> SimpleNamespace:
    return SimpleNamespace(subject=subject, data=json.dumps(body).encode(),
                           metadata=SimpleNamespace(sequence=SimpleNamespace(stream=sequence)))


JOB = "11111111-1111-4111-8111-111111111111"


def job_message(sequence: int, status: str = "queued", tenant: str = "acme") -> SimpleNamespace:
    return message(sequence, names.job_event_subject(tenant, JOB, status),
                   {"type": f"job.{status}", "tenant": tenant, "position": [0, 0, sequence], "data": {}})


class IdleJetStream:
    """Just enough JetStream for a hub whose events a test hands it: a stream ending at 10,
    and a consumer that never delivers."""

    async def stream_info(self, stream: str) -> SimpleNamespace:
        return SimpleNamespace(state=SimpleNamespace(first_seq=1, last_seq=10))

    async def subscribe(self, *args, **kwargs) -> "IdleJetStream":
        return self

    async def unsubscribe(self) -> None:
        pass


async def test_hub_routes_events_and_bounds_what_a_listener_holds():
    hub = EventHub(js=IdleJetStream(), listener_max=3)
    async with hub.listen(("job", JOB)) as job, hub.listen(("tenant", "acme")) as acme, \
            hub.listen(("tenant", "globex")) as globex, hub.listen(ALL) as everyone:
        assert hub.last_sequence == 10  # the stream's end when the consumer started
        for sequence in (11, 12, 13):
            await hub._on_message(job_message(sequence))
        await hub._on_message(job_message(12))  # redelivered after a consumer reset: dropped
        assert [(await job.next(0)).sequence for _ in range(3)] == [11, 12, 13]
        assert await globex.next(0) is None
        await hub._on_message(job_message(14))  # a fourth unread event: acme's listener lags
        with pytest.raises(StreamEnded, match="lagged"):
            await acme.next(0)
        with pytest.raises(StreamEnded, match="lagged"):
            await everyone.next(0)
        assert (await job.next(0)).sequence == 14
        await hub._on_message(job_message(17))  # 15 and 16 never arrived: everyone resumes from JetStream
        with pytest.raises(StreamEnded, match="lagged"):
            await job.next(0)
        with pytest.raises(StreamEnded, match="lagged"):
            await globex.next(0)
        assert hub.gaps == 1 and hub.last_sequence == 17
        async with hub.listen(("tenant", "globex")) as fresh:
            await hub.stop()
            with pytest.raises(StreamEnded, match="shutdown"):
                await fresh.next(5)
    assert hub.listeners == 0
    async with hub.listen(ALL) as late:
        with pytest.raises(StreamEnded, match="shutdown"):
            await late.next(5)


async def test_listener_wakes_on_offer_and_times_out_quietly():
    listener = Listener(("job", JOB), 10)
    assert await listener.next(0.05) is None
    waiting = asyncio.create_task(listener.next(10))
    await asyncio.sleep(0)
    listener.offer(SimpleNamespace(sequence=1))
    assert (await asyncio.wait_for(waiting, 5)).sequence == 1


async def test_job_stream_first_event_carries_the_id_of_its_stored_event(api, settings):
    """The status store runs ahead of the stream for a moment after each write (the event is
    published right after it). A stream opened in that moment sends the status once its event
    is stored, with that event's id, so a resume from it repeats nothing."""
    from pixq.jobs import JobStatus
    from pixq.status import StatusStore

    job_id = await submit(api, ACME)
    store = StatusStore.from_settings(settings)
    nc = await nats_client.connect(settings.nats_url)
    try:
        record = await store.advance(job_id, 0, 1, JobStatus.PROCESSING)  # written, not yet announced
        async with open_stream(api, f"/api/v1/jobs/{job_id}/events", bearer(ACME)) as stream:
            await pixq_events.publish_job_event(nc.jetstream(), record)
            last = (await nc.jetstream().stream_info(names.EVENTS_STREAM)).state.last_seq
            first = await stream.event()
        assert (first.event, first.id, first.data["position"]) == ("job.processing", last, [0, 1, 1])
        async with open_stream(api, f"/api/v1/jobs/{job_id}/events",
                               {**bearer(ACME), "Last-Event-ID": str(first.id)}) as stream:
            await store.advance(job_id, 0, 1, JobStatus.COMPLETED)
            await pixq_events.publish_job_event(nc.jetstream(), await store.get(job_id))
            assert [f.event for f in await stream.rest()] == ["job.completed"]
    finally:
        await nc.close()
        await store.close()


class RecordingStream:
    """Stands in for api.sse.EventStream: records the ids a stream body sends. Its first
    heartbeat (due at once: the listener had nothing) ends the listener, so the body returns."""

    stream = "tenant"

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.ids: list[int | None] = []

    async def send(self, event_type, data, event_id) -> None:
        self.ids.append(event_id)

    async def write_frame(self, frame: bytes) -> None:
        head = frame.decode().split("\n", 1)[0]
        self.ids.append(int(head.removeprefix("id: ")) if head.startswith("id: ") else None)

    def until_heartbeat(self) -> float:
        return 0.0

    async def heartbeat(self) -> None:
        self.listener.end("shutdown")


def hub_event(sequence: int) -> HubEvent:
    return HubEvent(sequence=sequence, tenant="acme", kind="job", target=JOB,
                    envelope={"type": "job.queued", "tenant": "acme", "position": [0, 0, 0], "data": {}})


@pytest.mark.parametrize("last_id, replayed, buffered, expected", [
    # Resumed after 4 while the stream's end was 8: the replay (which may read past 8) and the
    # hub's buffer (events it handed out after the listener registered) overlap; each is sent once.
    (4, [5, 6, 7, 8, 9], [7, 8, 9, 10], [5, 6, 7, 8, 9, 10]),
    (4, [5, 6], [6, 9, 10], [5, 6, 9, 10]),  # 7 and 8 are another tenant's: in neither
    (8, [], [8, 9], [9]),
    # No Last-Event-ID: from the live end (8) on, whatever the hub buffered before it.
    (None, [], [7, 8, 9, 10], [9, 10]),
])
async def test_tenant_stream_merges_replay_and_live_tail_without_repeats(monkeypatch, last_id, replayed,
                                                                         buffered, expected):
    hub = EventHub(js=IdleJetStream())
    replays = []

    async def replay(subject_filter, start, until):
        replays.append((start, until))
        for sequence in replayed:
            yield hub_event(sequence)

    monkeypatch.setattr(hub, "replay", replay)
    async with hub.listen(("tenant", "acme")) as listener:
        for sequence in buffered:
            listener.offer(hub_event(sequence))
        stream = RecordingStream(listener)
        resume = event_handlers.Resume(last_id, 1, 8)
        await asyncio.wait_for(event_handlers._tenant_stream(
            stream, listener, hub, resume, "pixq.events.acme.>", event_handlers.EventFilter(),
            event_handlers.Urls(str, "http://127.0.0.1"), 8), 5)
    assert stream.ids == expected
    assert replays == ([(last_id + 1, 8)] if last_id is not None and last_id < 8 else [])
