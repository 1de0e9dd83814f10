"""Webhooks end to end: real nats-server, redis-server, API and worker; receivers are aiohttp
servers on loopback started by each test (OUTBOUND_ALLOW_PRIVATE_NETWORKS=true, except where
the SSRF guard itself is tested). Every request a receiver gets is verified with the
`standardwebhooks` package. Retries use a short WEBHOOK_BACKOFF; times are compared as the
receiver recorded them, never slept for."""

import asyncio
import base64
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.js.api import AckPolicy, DeliverPolicy
from nats.js.errors import NotFoundError
import pytest
from aiohttp import ClientSession, web
from prometheus_client import REGISTRY
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from pixq import events, names
from pixq.batches import BatchStore
from pixq.errors import PixqError
from pixq.status import StatusStore
from pixq.tenants import key_digest
from tests.conftest import running_api, running_worker
from tests.helpers import form, make_image, wait_for_status
from tests.servers import free_port
from tests.test_tenants import bearer, write_tenants
from worker import webhooks as worker_webhooks


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


OLD, NEW = new_secret(), new_secret()
DEADLINE = 20.0


# --- A receiver that records what reaches it ----------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    responded_at: float = 0.0


Reply = Callable[[Received], Awaitable[web.StreamResponse]]


def status(code: int, **headers: str) -> Reply:
    async def reply(_: Received) -> web.StreamResponse:
        return web.Response(status=code, headers=headers)
    return reply


@dataclass
class Receiver:
    """Scripted answers per path (the last one repeats); every request is recorded."""

    port: int = 0
    script: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        seen = Received(request.path, dict(request.headers), await request.read(), time.time())
        replies = self.script.get(request.path, [status(204)])
        reply = replies[min(len(self.at(request.path)), len(replies) - 1)]
        async with self.changed:
            self.requests.append(seen)
            self.changed.notify_all()
        response = await reply(seen)
        seen.responded_at = time.time()
        return response

    async def start(self, port: int = 0) -> "Receiver":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def wait(self, path: str, count: int, timeout: float = DEADLINE) -> list[Received]:
        """The first ``count`` requests to ``path``, once they have arrived."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: len(self.at(path)) >= count), timeout)
        return self.at(path)[:count]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def receiver():
    server = await Receiver().start()
    yield server
    await server.stop()


def verified(request: Received, secret: str) -> dict:
    """The body, verified as a receiver following Standard Webhooks verifies it."""
    return Webhook(secret).verify(request.body, request.headers)


# --- Helpers --------------------------------------------------------------------------------


def hook_settings(make_settings, storage_type: str = "local", **overrides):
    values = dict(webhook_secrets=f"{NEW},{OLD}", outbound_allow_private_networks=True,
                  webhook_backoff=[0.2, 0.2], webhook_timeout=2.0)
    return make_settings(storage_type, **{**values, **overrides})


async def submit(api, headers=None, **fields) -> str:
    response = await api.post("/api/v1/resize", data=form(make_image(120, 90), width=40, **fields),
                              headers=headers or {})
    assert response.status == 202, await response.text()
    return (await response.json())["job_id"]


async def submit_failing(api, callback_url: str) -> str:
    """A JPEG cut in half: its header passes the submit checks, the worker cannot decode it."""
    image = make_image(400, 300)
    response = await api.post("/api/v1/resize", data=form(image[: len(image) // 2], width=40,
                                                           callback_url=callback_url))
    assert response.status == 202, await response.text()
    return (await response.json())["job_id"]


async def deliveries(api, job_id: str, until: Callable[[list[dict]], bool], headers=None,
                     kind: str = "jobs", timeout: float = DEADLINE, after_outage: bool = False) -> list[dict]:
    """GET .../deliveries until ``until`` holds (a condition polled with a deadline); with
    ``after_outage``, a 503 while the API's Redis connection recovers counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        response = await api.get(f"/api/v1/{kind}/{job_id}/deliveries", headers=headers or {})
        if after_outage and response.status == 503 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            continue
        assert response.status == 200, await response.text()
        items = (await response.json())["deliveries"]
        if until(items) or time.monotonic() > deadline:
            assert until(items), f"deliveries of {job_id}: {items}"
            return items
        await asyncio.sleep(0.05)


def outcomes(items: list[dict]) -> list[str]:
    return [item["outcome"] for item in items]


def final(items: list[dict]) -> bool:
    return bool(items) and items[-1]["outcome"] in ("delivered", "failed", "disabled", "refused")


def delivered_count() -> float:
    return REGISTRY.get_sample_value("pixq_webhook_deliveries_total", {"outcome": "delivered"}) or 0.0


async def webhooks_consumer(settings, timeout: float = DEADLINE):
    """pixq-webhooks' info, once the worker has created it (polled with a deadline)."""
    nc = await nats.connect(settings.nats_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                return await nc.jetstream().consumer_info(names.EVENTS_STREAM, names.WEBHOOKS_CONSUMER)
            except NotFoundError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
    finally:
        await nc.close()


# --- Tests --------------------------------------------------------------------------------


async def test_completed_and_failed_jobs_deliver_signed_webhooks(make_settings, storage_type, receiver):
    settings = hook_settings(make_settings, storage_type)
    before = delivered_count()
    async with running_api(settings) as api, running_worker(settings):
        done = await submit(api, callback_url=receiver.url("/done"))
        failed = await submit_failing(api, receiver.url("/failed"))
        (completed_request,) = await receiver.wait("/done", 1)
        (failed_request,) = await receiver.wait("/failed", 1)

        # Signed with both active secrets: a receiver knowing either one verifies the request.
        for request in (completed_request, failed_request):
            assert len(request.headers["webhook-signature"].split(" ")) == 2
            assert verified(request, OLD) == verified(request, NEW)
            with pytest.raises(WebhookVerificationError):
                verified(request, new_secret())
            assert request.headers["Content-Type"] == "application/json"
            assert request.headers["User-Agent"].startswith("pixq-webhooks/")
            assert abs(int(request.headers["webhook-timestamp"]) - request.received_at) < 5

        event = verified(completed_request, NEW)
        assert event["type"] == "job.completed" and event["tenant"] == "default"
        assert event["data"]["job_id"] == done and event["data"]["status"] == "completed"
        assert completed_request.headers["webhook-id"] == "evt_{}_{}_{}_{}".format(done, *event["position"])
        status_document = await wait_for_status(api, done)
        assert event["data"]["result"]["width"] == status_document["result"]["width"] == 40
        # A fresh download URL minted by the worker: presigned by S3, or signed for the API to serve.
        url = event["data"]["result"]["url"]
        if storage_type == "local":
            assert url.startswith(settings.public_base_url() + "/files/")
            download = await api.get(url.removeprefix(settings.public_base_url()))
            assert download.status == 200 and (await download.read())[:2] == b"\xff\xd8"
        else:
            async with ClientSession() as session, session.get(url) as download:
                assert download.status == 200 and (await download.read())[:2] == b"\xff\xd8"

        failure = verified(failed_request, OLD)
        assert failure["type"] == "job.failed" and failure["data"]["job_id"] == failed
        assert failure["data"]["error_code"] and failure["data"]["result"] is None

        # The deliveries route shows the one attempt of each; non-terminal events sent nothing.
        (attempt,) = await deliveries(api, done, final)
        assert attempt["webhook_id"] == completed_request.headers["webhook-id"]
        assert (attempt["event_type"], attempt["url"], attempt["attempt"]) == ("job.completed",
                                                                              receiver.url("/done"), 1)
        assert (attempt["outcome"], attempt["status_code"], attempt["error"]) == ("delivered", 204, None)
        assert isinstance(attempt["duration_ms"], int) and attempt["next_attempt_at"] is None and attempt["at"]
        (attempt,) = await deliveries(api, failed, final)
        assert (attempt["event_type"], attempt["outcome"]) == ("job.failed", "delivered")
        assert len(receiver.requests) == 2
    assert delivered_count() - before == 2


async def test_tenant_default_callback_and_tenant_secrets(make_settings, receiver, tmp_path: Path):
    """alpha's own secret and default receiver; beta has neither and no WEBHOOK_SECRETS exists."""
    alpha_secret = new_secret()
    tenants = write_tenants(tmp_path / "tenants.yaml", [
        {"name": "alpha", "keys": [key_digest("alpha-key")],
         "settings": {"webhook_url": receiver.url("/alpha-default"), "webhook_secrets": [alpha_secret]}},
        {"name": "beta", "keys": [key_digest("beta-key")]},
    ])
    settings = hook_settings(make_settings, tenants_file=tenants, webhook_secrets="")
    alpha, beta = bearer("alpha-key"), bearer("beta-key")
    async with running_api(settings) as api, running_worker(settings):
        # No secret for beta: pixq sends no unsigned webhook, so its callback is refused at submit.
        refused = await api.post("/api/v1/resize", headers=beta,
                                 data=form(make_image(64, 48), width=32, callback_url=receiver.url("/beta")))
        assert refused.status == 422, await refused.text()
        error = (await refused.json())["error"]
        assert error["code"] == "INVALID_PARAMETERS" and "secret" in error["message"]

        by_default = await submit(api, headers=alpha)
        own = await submit(api, headers=alpha, callback_url=receiver.url("/alpha-own"))
        quiet = await submit(api, headers=beta)  # no receiver at all: nothing is sent
        (request,) = await receiver.wait("/alpha-default", 1)
        (own_request,) = await receiver.wait("/alpha-own", 1)
        assert verified(request, alpha_secret)["data"]["job_id"] == by_default
        assert verified(own_request, alpha_secret)["data"]["job_id"] == own
        with pytest.raises(WebhookVerificationError):
            verified(request, NEW)

        assert outcomes(await deliveries(api, by_default, final, headers=alpha)) == ["delivered"]
        await wait_for_status(api, quiet, headers=beta)
        assert (await (await api.get(f"/api/v1/jobs/{quiet}/deliveries", headers=beta)).json()) == {
            "job_id": quiet, "deliveries": []}
        # Another tenant's deliveries answer like a job that does not exist.
        theirs = await api.get(f"/api/v1/jobs/{by_default}/deliveries", headers=beta)
        missing = await api.get("/api/v1/jobs/00000000-0000-4000-8000-000000000000/deliveries", headers=beta)
        assert theirs.status == missing.status == 404
        assert {r.path for r in receiver.requests} == {"/alpha-default", "/alpha-own"}


async def test_5xx_is_retried_with_the_same_webhook_id_until_the_schedule_ends(make_settings, receiver):
    receiver.script["/flaky"] = [status(503), status(500), status(200)]
    receiver.script["/down"] = [status(502)]
    settings = hook_settings(make_settings, webhook_backoff=[0.2, 0.3])
    async with running_api(settings) as api, running_worker(settings):
        flaky = await submit(api, callback_url=receiver.url("/flaky"))
        down = await submit(api, callback_url=receiver.url("/down"))
        requests = await receiver.wait("/flaky", 3)
        assert len({r.headers["webhook-id"] for r in requests}) == 1
        for request in requests:
            assert verified(request, NEW)["data"]["job_id"] == flaky
        # Waits follow WEBHOOK_BACKOFF: 0.2 s after the first attempt, 0.3 s after the second.
        assert requests[1].received_at - requests[0].responded_at >= 0.2
        assert requests[2].received_at - requests[1].responded_at >= 0.3

        items = await deliveries(api, flaky, final)
        assert outcomes(items) == ["retrying", "retrying", "delivered"]
        assert [i["attempt"] for i in items] == [1, 2, 3]
        assert [i["status_code"] for i in items] == [503, 500, 200]
        assert items[0]["error"] == "HTTP 503" and items[0]["next_attempt_at"] and not items[2]["next_attempt_at"]

        # The schedule exhausted: recorded failed, and the event acked (no attempt will follow).
        items = await deliveries(api, down, final)
        assert outcomes(items) == ["retrying", "retrying", "failed"]
        assert "gave up after 3 attempts" in items[-1]["error"]
        assert len(receiver.at("/down")) == 3
        info = await webhooks_consumer(settings)
        assert info.num_ack_pending == 0 and info.num_pending == 0, info
        # pixq decides when to give up, so the server never does; an attempt fits in ack_wait.
        assert (info.config.deliver_policy, info.config.ack_policy, info.config.max_deliver) == (
            DeliverPolicy.NEW, AckPolicy.EXPLICIT, -1)
        assert info.config.ack_wait > 2 * settings.webhook_timeout


async def test_410_gone_disables_the_endpoint_until_an_operator_re_enables_it(make_settings, receiver):
    receiver.script["/gone"] = [status(410), status(200)]
    settings = hook_settings(make_settings)
    async with running_api(settings) as api, running_worker(settings):
        first = await submit(api, callback_url=receiver.url("/gone"))
        items = await deliveries(api, first, final)
        assert [(i["outcome"], i["status_code"]) for i in items] == [("disabled", 410)]

        second = await submit(api, callback_url=receiver.url("/gone"))
        items = await deliveries(api, second, final)
        assert [(i["outcome"], i["status_code"]) for i in items] == [("disabled", None)]
        assert len(receiver.at("/gone")) == 1  # not sent to a disabled endpoint

        # Re-enabling (docs): delete the endpoint's key; the next event is sent again.
        status_store = StatusStore.from_settings(settings)
        try:
            assert await status_store.client.delete(names.disabled_webhook_key(receiver.url("/gone"))) == 1
        finally:
            await status_store.close()
        third = await submit(api, callback_url=receiver.url("/gone"))
        assert outcomes(await deliveries(api, third, final)) == ["delivered"]
        assert len(receiver.at("/gone")) == 2


async def test_retry_after_is_honoured(make_settings, receiver):
    receiver.script["/busy"] = [status(503, **{"Retry-After": "1"}), status(200)]
    receiver.script["/much-later"] = [status(429, **{"Retry-After": "3600"})]
    settings = hook_settings(make_settings, webhook_backoff=[0.1], events_max_age=900.0)
    async with running_api(settings) as api, running_worker(settings):
        job_id = await submit(api, callback_url=receiver.url("/busy"))
        first, second = await receiver.wait("/busy", 2)
        assert second.received_at - first.responded_at >= 1.0, "retried before Retry-After allowed"
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        items = await deliveries(api, job_id, final)
        assert outcomes(items) == ["retrying", "delivered"]

        # A retry asked for after the event leaves PIXQ_EVENTS (EVENTS_MAX_AGE) is recorded as
        # failed at once, rather than the event vanishing from the stream unrecorded.
        later = await submit(api, callback_url=receiver.url("/much-later"))
        (attempt,) = await deliveries(api, later, final)
        assert (attempt["outcome"], attempt["status_code"]) == ("failed", 429)
        assert "EVENTS_MAX_AGE" in attempt["error"]


async def test_redirects_are_not_followed(make_settings, receiver):
    receiver.script["/moved"] = [status(307, Location="/target"), status(302, Location="/target")]
    settings = hook_settings(make_settings, webhook_backoff=[0.1])
    async with running_api(settings) as api, running_worker(settings):
        job_id = await submit(api, callback_url=receiver.url("/moved"))
        items = await deliveries(api, job_id, final)
        assert [(i["outcome"], i["status_code"]) for i in items] == [("retrying", 307), ("failed", 302)]
        assert receiver.at("/target") == [] and len(receiver.at("/moved")) == 2


async def test_every_attempt_has_a_timeout(make_settings, receiver):
    never = asyncio.Event()

    async def hang(_: Received) -> web.StreamResponse:
        await never.wait()  # cancelled when the worker gives up on the connection
        return web.Response()

    receiver.script["/slow"] = [hang, status(200)]
    settings = hook_settings(make_settings, webhook_timeout=0.5, webhook_backoff=[0.1])
    async with running_api(settings) as api, running_worker(settings):
        job_id = await submit(api, callback_url=receiver.url("/slow"))
        items = await deliveries(api, job_id, final)
        assert outcomes(items) == ["retrying", "delivered"]
        assert items[0]["status_code"] is None and "timed out after 0.5s" in items[0]["error"]
        assert 400 <= items[0]["duration_ms"] < 2000
        first, second = receiver.at("/slow")
        assert second.received_at - first.received_at >= 0.5  # the first was given up after 0.5 s


async def test_a_slow_receiver_does_not_hold_up_the_others(make_settings, receiver):
    release = asyncio.Event()

    async def stall(_: Received) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=200)

    receiver.script["/stalled"] = [stall]
    settings = hook_settings(make_settings, webhook_timeout=30.0)  # longer than any wait below
    async with running_api(settings) as api, running_worker(settings):
        stalled = await submit(api, callback_url=receiver.url("/stalled"))
        await receiver.wait("/stalled", 1)
        quick = [await submit(api, callback_url=receiver.url("/quick")) for _ in range(3)]
        await receiver.wait("/quick", 3)  # delivered while the first receiver still holds its request
        for job_id in quick:
            assert outcomes(await deliveries(api, job_id, final)) == ["delivered"]
        assert (await (await api.get(f"/api/v1/jobs/{stalled}/deliveries")).json())["deliveries"] == []
        release.set()
        assert outcomes(await deliveries(api, stalled, final)) == ["delivered"]


async def test_private_receivers_are_refused_without_the_flag(make_settings, receiver, tmp_path: Path):
    """At submit (IP literals, localhost, bad forms) and at delivery time (the tenant's default
    receiver is not checked at submit): the address connected to is what the guard checks."""
    tenants = write_tenants(tmp_path / "tenants.yaml", [
        {"name": "alpha", "keys": [key_digest("alpha-key")],
         "settings": {"webhook_url": f"http://127.0.0.1:{receiver.port}/literal"}},
        {"name": "beta", "keys": [key_digest("beta-key")],
         "settings": {"webhook_url": f"http://localhost:{receiver.port}/resolved"}},
    ])
    settings = hook_settings(make_settings, tenants_file=tenants, outbound_allow_private_networks=False)
    alpha, beta = bearer("alpha-key"), bearer("beta-key")
    async with running_api(settings) as api, running_worker(settings):
        for url in (receiver.url("/x"), f"http://localhost:{receiver.port}/x", "http://[::ffff:127.0.0.1]/x",
                    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x", "ftp://hooks.example.com/",
                    "https://user:secret@hooks.example.com/"):
            response = await api.post("/api/v1/resize", headers=alpha, json={
                "input": {"storage_key": "inputs/alpha/x.jpg"}, "parameters": {"width": 10}, "callback_url": url})
            assert response.status == 422, (url, await response.text())
            assert (await response.json())["error"]["code"] == "INVALID_PARAMETERS", url
            response = await api.post("/api/v1/resize", headers=alpha,
                                      data=form(make_image(64, 48), width=32, callback_url=url))
            assert response.status == 422, (url, await response.text())

        literal = await submit(api, headers=alpha)
        resolved = await submit(api, headers=beta)
        for job_id, headers in ((literal, alpha), (resolved, beta)):
            (attempt,) = await deliveries(api, job_id, final, headers=headers)
            assert attempt["outcome"] == "refused" and attempt["status_code"] is None, attempt
            assert "loopback" in attempt["error"], attempt
    assert receiver.requests == []


async def test_a_worker_restart_with_the_receiver_down_loses_nothing(make_settings):
    port = free_port()  # nothing listens here yet: every attempt is refused by the OS
    receiver = Receiver()
    settings = hook_settings(make_settings, webhook_backoff=[0.2] * 50)
    url = f"http://127.0.0.1:{port}/hook"
    async with running_api(settings) as api:
        async with running_worker(settings):
            jobs = [await submit(api, callback_url=url) for _ in range(3)]
            tried = {}
            for job_id in jobs:
                items = await deliveries(api, job_id, lambda items: len(items) >= 1)
                assert items[0]["outcome"] == "retrying" and items[0]["status_code"] is None
                tried[items[0]["webhook_id"]] = job_id
        # The first worker is gone, with every event still undelivered.
        await receiver.start(port)
        try:
            async with running_worker(settings):
                requests = await receiver.wait("/hook", 3)
                for job_id in jobs:
                    items = await deliveries(api, job_id, final)
                    assert outcomes(items)[-1] == "delivered" and set(outcomes(items)[:-1]) == {"retrying"}
                    assert {i["webhook_id"] for i in items} == {items[0]["webhook_id"]}
            assert {r.headers["webhook-id"]: verified(r, NEW)["data"]["job_id"] for r in requests} == tried
            assert len(receiver.requests) == 3
        finally:
            await receiver.stop()


async def test_batch_completed_goes_to_the_batch_callback(make_settings, receiver, tmp_path: Path):
    tenants = write_tenants(tmp_path / "tenants.yaml", [
        {"name": "alpha", "keys": [key_digest("alpha-key")]},
        {"name": "beta", "keys": [key_digest("beta-key")]},
    ])
    settings = hook_settings(make_settings, tenants_file=tenants)
    batch_id, job_id = "11111111-2222-4333-8444-555555555555", "66666666-7777-4888-8999-000000000000"
    async with running_api(settings) as api, running_worker(settings):
        # Created with deliver policy NEW: only events published after it exists are delivered.
        await webhooks_consumer(settings)
        status_store = StatusStore.from_settings(settings)
        nc = await nats.connect(settings.nats_url)
        try:
            batches = BatchStore(status_store.client, 3600)
            await batches.reserve(batch_id, "alpha", [job_id], receiver.url("/batch"))
            await batches.record_jobs(batch_id, [job_id])
            document = {"batch_id": batch_id, "status": "completed", "total": 1, "job_ids": [job_id]}
            await events.publish_batch_completed(nc.jetstream(), "alpha", document)
        finally:
            await nc.close()
            await status_store.close()
        (request,) = await receiver.wait("/batch", 1)
        assert request.headers["webhook-id"] == f"evt_batch_{batch_id}"
        event = verified(request, NEW)
        assert event["type"] == "batch.completed" and event["data"] == document and event["tenant"] == "alpha"

        items = await deliveries(api, batch_id, final, headers=bearer("alpha-key"), kind="batches")
        assert [(i["event_type"], i["outcome"]) for i in items] == [("batch.completed", "delivered")]
        for path, headers in ((batch_id, bearer("beta-key")), ("00000000-0000-4000-8000-000000000000",
                                                              bearer("alpha-key")), ("not-a-uuid", bearer("alpha-key"))):
            response = await api.get(f"/api/v1/batches/{path}/deliveries", headers=headers)
            assert response.status == 404, path
            assert (await response.json())["error"]["code"] == "NOT_FOUND"


async def test_a_redis_outage_burns_no_attempt(make_settings, receiver, redis_proc, monkeypatch):
    """While the delivery record is unreachable no attempt is made or counted: the event is
    handed back until Redis answers, and the retry after the outage is attempt 2."""
    monkeypatch.setattr(worker_webhooks, "HAND_BACK_SECONDS", 0.05)
    handed_back, during_outage = asyncio.Event(), []
    deliver = worker_webhooks.WebhookDeliverer.deliver

    async def counting(self, event, has_callback=None):
        try:
            return await deliver(self, event, has_callback)
        except PixqError:
            during_outage.append(event["type"])
            if len(during_outage) >= 3:
                handed_back.set()
            raise

    monkeypatch.setattr(worker_webhooks.WebhookDeliverer, "deliver", counting)
    receiver.script["/hook"] = [status(503), status(200)]
    settings = hook_settings(make_settings, webhook_backoff=[1.0, 0.2])
    async with running_api(settings) as api, running_worker(settings):
        job_id = await submit(api, callback_url=receiver.url("/hook"))
        await deliveries(api, job_id, lambda items: len(items) == 1)
        redis_proc.stop()
        try:
            await asyncio.wait_for(handed_back.wait(), DEADLINE)  # the retry came, three times, and found no Redis
            assert len(receiver.at("/hook")) == 1
        finally:
            redis_proc.start()
        items = await deliveries(api, job_id, final, after_outage=True)
        assert [(i["attempt"], i["outcome"]) for i in items] == [(1, "retrying"), (2, "delivered")]
        assert len(receiver.at("/hook")) == 2
