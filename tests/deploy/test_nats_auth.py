"""The rendered NATS authorization, run by a real nats-server on loopback.

The dev overlay's nats.conf and auth.conf, its Secret's passwords and the API's and
workers' NATS_URL (composed as the kubelet composes them) go to a real nats-server. pixq's
own queue and DLQ code then runs as each user, so the permissions are proven sufficient;
and the forbidden operations are refused, so they are proven narrow. Every render's
nats.conf is also checked by ``nats-server -t`` (the TLS one with a throwaway certificate).
"""

import asyncio
import contextlib
import json
import subprocess
import uuid

import nats
import pytest
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig

from api.events_hub import EventHub
from pixq import dlq, names, queue
from pixq.jobs import Priority
from pixq.settings import Settings

from deploy_support import REPO, RENDERS, container, objects, one, pod_env, which
from servers import rewrite, running

from tests.servers import free_port

SERVER_PATHS = {"store_dir: /data": "store_dir: {tmp}/js",
                "pid_file: /var/run/nats/nats.pid": "pid_file: {tmp}/nats.pid"}
EVENTS_STREAM = getattr(names, "EVENTS_STREAM", "PIXQ_EVENTS")


def server_files(objs, tmp, listen: str | None = None) -> tuple[str, dict[str, str]]:
    """Write nats.conf (paths rewritten) and auth.conf into tmp; returns (conf path, env)."""
    data = one(objs, "ConfigMap", "pixq-nats-config")["data"]
    replacements = {k: v.format(tmp=tmp) for k, v in SERVER_PATHS.items()}
    if listen:
        replacements.update({"listen: 0.0.0.0:4222": f"listen: {listen}", "http: 0.0.0.0:8222": "http: 127.0.0.1:0"})
    (tmp / "nats.conf").write_text(rewrite(data["nats.conf"], replacements))
    for name, text in data.items():  # included files: auth.conf, tls.conf
        if name != "nats.conf":
            (tmp / name).write_text(text)
    if any("/etc/nats/tls/" in text for text in data.values()):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/CN=pixq-nats", "-keyout", f"{tmp}/tls.key",
                        "-out", f"{tmp}/tls.crt"], check=True, capture_output=True)
        for path in tmp.glob("*.conf"):
            path.write_text(path.read_text().replace("/etc/nats/tls/", f"{tmp}/"))
    # The nats container's passwords as the kubelet sets them: a variable auth.conf names but
    # the container lacks stops nats-server. Renders that expect existing Secrets (helm-prod)
    # get made-up values for the variables the container takes from them.
    nats = container(objs, "StatefulSet", "pixq-nats", "nats")
    if objs_have_secrets(objs):
        env = pod_env(objs, nats)
    else:
        env = {e["name"]: "p" + uuid.uuid4().hex for e in nats["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    env = {k: v for k, v in env.items() if k.endswith("_PASSWORD")}
    env["SERVER_NAME"] = "pixq-nats-0"
    return str(tmp / "nats.conf"), env


def objs_have_secrets(objs) -> bool:
    return any(o["kind"] == "Secret" and o["metadata"]["name"] == "pixq-nats-auth" for o in objs)


@pytest.mark.parametrize("render", RENDERS)
def test_rendered_nats_config_is_valid(render, tmp_path):
    """nats-server itself accepts every render's nats.conf + auth.conf with the passwords set."""
    conf, env = server_files(objects(render), tmp_path)
    proc = subprocess.run([which("nats-server"), "-t", "-c", conf], capture_output=True, text=True,
                          env=env | {"PATH": "/usr/bin:/bin"}, timeout=30)
    assert proc.returncode == 0, f"{render}: nats-server -t: {proc.stdout}{proc.stderr}"


@pytest.fixture
def nats_dev(tmp_path):
    """A nats-server running the dev overlay's configuration; yields (port, client URLs by
    user, server log). pixq-minio's URL is made of the MinIO pod's notification target
    settings (address, user and password, as the kubelet gives them to MinIO)."""
    objs = objects("dev")
    port = free_port()
    conf, env = server_files(objs, tmp_path, listen=f"127.0.0.1:{port}")
    urls = {}
    for dep in ("pixq-api", "pixq-worker"):
        url = pod_env(objs, container(objs, "Deployment", dep))["NATS_URL"]
        urls[dep] = rewrite(url, {"@pixq-nats:4222": f"@127.0.0.1:{port}"})
    minio = pod_env(objs, container(objs, "StatefulSet", "pixq-minio", "minio"))
    assert minio["MINIO_NOTIFY_NATS_ADDRESS_PIXQ"] == "pixq-nats:4222"
    urls["pixq-minio"] = (f"nats://{minio['MINIO_NOTIFY_NATS_USERNAME_PIXQ']}:"
                          f"{minio['MINIO_NOTIFY_NATS_PASSWORD_PIXQ']}@127.0.0.1:{port}")
    urls["minio-subject"] = minio["MINIO_NOTIFY_NATS_SUBJECT_PIXQ"]
    log = tmp_path / "nats.log"
    with running([which("nats-server"), "-c", conf], port, log, env=env):
        yield port, urls, log


class Client:
    """A raw nats-py connection that records the server's asynchronous errors."""

    def __init__(self):
        self.errors: list[str] = []

    async def connect(self, url: str):
        async def on_error(exc):
            self.errors.append(str(exc))
        self.nc = await nats.connect(url, error_cb=on_error, connect_timeout=2, max_reconnect_attempts=0,
                                     allow_reconnect=False)
        self.js = self.nc.jetstream(timeout=0.5)
        return self

    async def publish_then_fail(self, subject: str) -> None:
        """A plain publish (no reply to wait for), then raise once the server has answered a
        PING: so ``refused`` can wait for a fire-and-forget message's violation."""
        await self.nc.publish(subject, b"")
        await self.nc.flush()
        raise asyncio.TimeoutError(f"published {subject}")

    async def refused(self, coro) -> str:
        """Run an operation that must be refused; returns the permissions violation."""
        with pytest.raises((NatsError, asyncio.TimeoutError)):
            await coro
        await self.nc.flush()
        await asyncio.sleep(0.1)
        assert self.errors, "refused without a permissions violation"
        error = self.errors.pop()
        assert "permissions violation" in error.lower(), error
        return error


async def test_pixq_runs_within_its_permissions(nats_dev):
    """pixq's own code, as each user: topology, submit, pull/ack/nak, advisories, DLQ, status
    outbox, events; no permissions violation anywhere."""
    _, urls, log = nats_dev
    settings = Settings(max_retries=0)
    worker_nc = await queue.connect(Settings(nats_url=urls["pixq-worker"]), "deploy-test-worker")
    api_nc = await queue.connect(Settings(nats_url=urls["pixq-api"]), "deploy-test-api")
    wjs, ajs = worker_nc.jetstream(), api_nc.jetstream()
    try:
        await queue.ensure_streams(wjs, settings)
        await queue.ensure_worker_consumers(wjs, settings)
        await queue.ensure_streams(ajs, settings)
        job_id = str(uuid.uuid4())

        await ajs.publish(names.job_subject("resize"), json.dumps({"job_id": job_id}).encode(),
                          stream=names.JOBS_STREAM)
        puller = await queue.Puller(wjs, names.JOBS_STREAM, names.WORKERS_CONSUMER).start()
        (message,) = await puller.fetch(1, 2)
        await message.in_progress()
        await message.nak()                  # max_deliver=1: the next pull emits MAX_DELIVERIES
        assert await puller.fetch(1, 1) == []
        await puller.check()
        assert sum(await queue.consumer_backlog(wjs)) == 0

        # The batch lane, as the worker's consumer loop pulls it (LanePuller, its own requests).
        await ajs.publish(names.job_subject("resize", "batch"), json.dumps({"job_id": job_id}).encode(),
                          stream=names.JOBS_STREAM)
        lane = await queue.LanePuller(wjs, names.JOBS_STREAM, names.BATCH_WORKERS_CONSUMER).start()
        (message,) = await lane.pull(1, 2)
        assert message.subject == names.job_subject("resize", "batch")
        await message.in_progress()
        await message.nak()
        assert await lane.pull(1, 0.5) == []
        await lane.check()
        assert sum(await queue.consumer_backlog(wjs, Priority.BATCH)) == 0

        advisories = await queue.Puller(wjs, names.ADVISORY_STREAM, names.ADVISORY_CONSUMER).start()
        captured = []
        while len(captured) < 2:  # one advisory per lane's consumer
            arrived = await advisories.fetch(2 - len(captured), 5)
            assert arrived, f"only {len(captured)} MAX_DELIVERIES advisories captured"
            captured += arrived
        assert sorted(advisory.subject for advisory in captured) == sorted(names.MAX_DELIVERIES_ADVISORY_SUBJECTS)
        for advisory in captured:
            await advisory.ack()
        await advisories.check()

        await wjs.publish(names.dlq_subject(job_id), json.dumps({"job_id": job_id, "message": {}}).encode(),
                          stream=names.DLQ_STREAM)
        await wjs.publish(names.status_subject(job_id), b"{}", stream=names.STATUS_STREAM)
        outbox = await queue.Puller(wjs, names.STATUS_STREAM, names.STATUS_CONSUMER).start()
        (event,) = await outbox.fetch(1, 2)
        await event.ack()
        await outbox.check()
        assert await queue.dlq_size(wjs) == 1

        assert [e["job_id"] for e in await dlq.list_entries(ajs)] == [job_id]
        assert (await dlq.get_entry(ajs, job_id))["job_id"] == job_id
        await dlq.purge(ajs, job_id)
        assert await queue.dlq_size(ajs) == 0

        # Job events: both write them (the API a submit's queued event, workers the rest); the API reads them.
        queued_subject = names.job_event_subject("acme", job_id, "queued")
        subject = names.job_event_subject("acme", job_id, "completed")
        await ajs.publish(queued_subject, b'{"status": "queued"}', stream=EVENTS_STREAM)
        await wjs.publish(subject, b'{"status": "completed"}', stream=EVENTS_STREAM)
        reader = await ajs.pull_subscribe("pixq.events.acme.>", stream=EVENTS_STREAM)
        first, second = await reader.fetch(2, timeout=2)
        assert [first.subject, second.subject] == [queued_subject, subject]
        assert (await ajs.get_last_msg(EVENTS_STREAM, names.job_events_filter("acme", job_id))).data == second.data
        await reader.unsubscribe()
        # Webhook delivery: the workers' durable consumer on the events stream (created by
        # ensure_worker_consumers above, deliver policy NEW, filtered to the delivered types):
        # pull, nak with a delay, ack.
        hooks = await queue.Puller(wjs, EVENTS_STREAM, names.WEBHOOKS_CONSUMER).start()
        (completed,) = await hooks.fetch(1, 2)
        assert completed.subject == subject, "the queued event, stored first, is not the consumer's"
        await completed.nak(delay=0.01)
        (again,) = await hooks.fetch(1, 2)
        assert again.data == completed.data
        await again.ack()
        await hooks.check()

        # The API's own readers of the events stream (api.events_hub), as pixq-api: the live
        # tail (an ordered push consumer), the catch-up replay (an ephemeral pull consumer,
        # deleted after) and the last event of a job (a direct get).
        hub = EventHub(ajs)
        await hub.start()
        try:
            async with hub.listen(("job", job_id)) as listener:
                envelope = {"type": "job.completed", "tenant": "acme", "position": [1, 1, 9], "data": {}}
                await wjs.publish(subject, json.dumps(envelope).encode(), stream=EVENTS_STREAM)
                live = await listener.next(5)
            assert live is not None and live.envelope == envelope
            async with contextlib.aclosing(hub.replay(subject, 1, live.sequence)) as replayed:
                assert [e.sequence async for e in replayed][-1] == live.sequence
            assert (await hub.last_event(subject)).envelope == envelope
        finally:
            await hub.stop()
        for nc in (worker_nc, api_nc):
            await nc.flush()
        await asyncio.sleep(0.1)
        # Acks are fire-and-forget: a refused one would only show in the server's log.
        violations = [line for line in log.read_text().splitlines() if "Violation" in line]
        assert not violations, "\n".join(violations)
    finally:
        await queue.close(worker_nc)
        await queue.close(api_nc)


async def test_forbidden_operations_are_refused(nats_dev):
    _, urls, log = nats_dev
    job_id = str(uuid.uuid4())
    worker = await Client().connect(urls["pixq-worker"])
    api = await Client().connect(urls["pixq-api"])
    try:
        await queue.ensure_streams(worker.js, Settings())
        # The API may not forge dead jobs or status updates ...
        for subject in (names.dlq_subject(job_id), names.status_subject(job_id)):
            error = await api.refused(api.js.publish(subject, b"{}", timeout=0.5))
            assert subject in error
        # ... nor consume the workers' queue, nor delete streams.
        await api.refused(api.js.consumer_info(names.JOBS_STREAM, names.WORKERS_CONSUMER))
        await api.refused(api.js.delete_stream(names.JOBS_STREAM))
        # Workers may not submit jobs or purge the DLQ.
        error = await worker.refused(worker.js.publish(names.job_subject("resize"), b"{}", timeout=0.5))
        assert names.job_subject("resize") in error
        await worker.refused(worker.js.purge_stream(names.DLQ_STREAM))
        # Neither may listen beyond its inboxes.
        await api.nc.subscribe("pixq.>")
        await api.nc.flush()
        await asyncio.sleep(0.1)
        assert any("subscription" in e.lower() and "pixq.>" in e for e in api.errors), api.errors
        info = await worker.js.stream_info(names.DLQ_STREAM)
        assert info.state.messages == 0, "a refused publish reached the DLQ"
        assert (await worker.js.stream_info(names.JOBS_STREAM)).state.messages == 0
    finally:
        await worker.nc.close()
        await api.nc.close()


@pytest.mark.parametrize("credentials", ["", "pixq-api:wrong-password@", "pixq-admin:x@"])
async def test_unauthenticated_clients_are_refused(nats_dev, credentials):
    port, _, _ = nats_dev
    errors = []

    async def on_error(exc):
        errors.append(str(exc))
    with pytest.raises(NatsError):
        nc = await nats.connect(f"nats://{credentials}127.0.0.1:{port}", connect_timeout=2, error_cb=on_error,
                                max_reconnect_attempts=0, allow_reconnect=False)
        await nc.close()
    assert any("authorization violation" in e.lower() for e in errors), errors


async def test_tls_component_serves_pixq_over_tls(tmp_path):
    """The nats-tls component's tls.conf (with the dev server config) and its client settings
    (tls:// URL, NATS_TLS_CA_FILE) connect pixq over verified TLS; without that CA it fails."""
    dev, tls = objects("dev"), objects("prod-tls")
    port = free_port()
    conf, env = server_files(dev, tmp_path, listen=f"127.0.0.1:{port}")
    tls_conf = one(tls, "ConfigMap", "pixq-nats-config")["data"]["tls.conf"]
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=pixq-nats", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", f"{tmp_path}/tls.key", "-out", f"{tmp_path}/tls.crt"], check=True, capture_output=True)
    (tmp_path / "tls.conf").write_text(rewrite(tls_conf, {"/etc/nats/tls/": f"{tmp_path}/"}))
    api_env = pod_env(tls, container(tls, "Deployment", "pixq-api"))
    url = api_env["NATS_URL"].replace("CHANGE_ME_NATS_API", env["NATS_API_PASSWORD"])
    url = rewrite(url, {"@pixq-nats:4222": f"@localhost:{port}"})
    assert url.startswith("tls://") and api_env["NATS_TLS_CA_FILE"] == "/etc/pixq/nats-tls/ca.crt"
    with running([which("nats-server"), "-c", conf], port, tmp_path / "nats.log", env=env):
        nc = await queue.connect(Settings(nats_url=url, nats_tls_ca_file=str(tmp_path / "tls.crt")),
                                 "deploy-test-tls", attempts=1)
        try:
            assert nc.is_connected
            await nc.flush()
        finally:
            await queue.close(nc)
        with pytest.raises(NatsError):
            await queue.connect(Settings(nats_url=url.replace("tls://", "nats://")), "plain", attempts=1)


@contextlib.asynccontextmanager
async def worker_and_api(urls: dict[str, str], settings: Settings):
    """Both users connected, the streams and the workers' consumers in place; the webhook
    consumer's config as the worker created it."""
    worker = await Client().connect(urls["pixq-worker"])
    api = await Client().connect(urls["pixq-api"])
    try:
        await queue.ensure_streams(worker.js, settings)
        await queue.ensure_worker_consumers(worker.js, settings)
        yield worker, api, (await worker.js.consumer_info(EVENTS_STREAM, names.WEBHOOKS_CONSUMER)).config
    finally:
        await worker.nc.close()
        await api.nc.close()


async def test_api_cannot_touch_the_webhook_consumer(nats_dev):
    """The API's wildcards for its own readers of the events stream would also match the
    workers' durable webhook consumer; the deny list keeps the API from creating (updating),
    pulling from, acking on or deleting it, so it cannot take webhook deliveries away. (The
    API's own consumers there work: test_pixq_runs_within_its_permissions.)"""
    _, urls, _ = nats_dev
    settings = Settings()
    events, hooks = EVENTS_STREAM, names.WEBHOOKS_CONSUMER
    async with worker_and_api(urls, settings) as (worker, api, before):
        await worker.js.publish(names.job_event_subject("acme", str(uuid.uuid4()), "completed"), b"{}", stream=events)

        wanted = queue.webhooks_consumer_config(settings)
        for config in (ConsumerConfig(name=hooks, ack_policy=AckPolicy.EXPLICIT),
                       ConsumerConfig(name=hooks, filter_subject="pixq.events.>"),
                       ConsumerConfig(durable_name=hooks, ack_policy=AckPolicy.EXPLICIT, ack_wait=1.0)):
            error = await api.refused(api.js.add_consumer(events, config, timeout=0.5))
            assert f"{events}.{hooks}".lower() in error.lower()
        pull = await api.js.pull_subscribe_bind(hooks, events)
        error = await api.refused(pull.fetch(1, timeout=0.5))
        assert f"$JS.API.CONSUMER.MSG.NEXT.{events}.{hooks}".lower() in error.lower()
        error = await api.refused(api.js.delete_consumer(events, hooks))
        assert f"$JS.API.CONSUMER.DELETE.{events}.{hooks}".lower() in error.lower()
        ack = f"$JS.ACK.{events}.{hooks}.1.1.1.1.0"
        error = await api.refused(api.publish_then_fail(ack))
        assert ack.lower() in error.lower()
        # The unnamed (legacy) create subject, allowed for the API's own consumers, refuses a
        # durable: JetStream answers an error, no permission needed.
        config = {**wanted.as_dict(), "ack_wait": 1_000_000_000}
        reply = await api.nc.request(f"$JS.API.CONSUMER.CREATE.{events}", json.dumps(
            {"stream_name": events, "config": config}).encode(), timeout=2)
        assert "ephemeral" in json.loads(reply.data)["error"]["description"], reply.data

        info = await worker.js.consumer_info(events, hooks)
        assert info.config == before, "the API changed the webhook consumer"
        assert (info.num_pending, info.num_ack_pending) == (1, 0), "the API took a webhook delivery"


@pytest.mark.xfail(strict=True, reason=(
    "known gap: nats-server takes a consumer's name from the request body on the legacy "
    "$JS.API.CONSUMER.CREATE.<stream> subject, which pixq-api needs for nats-py's ordered consumer "
    "and unnamed replay consumers (api.events_hub); so pixq-api can update pixq-webhooks' config. "
    "Closing it needs named consumers in the API (the subject then carries the name, which the deny "
    "list covers) and that subject dropped from auth.conf; then remove this xfail."))
async def test_api_cannot_update_the_webhook_consumer_by_body_name(nats_dev):
    _, urls, _ = nats_dev
    settings = Settings()
    events, hooks = EVENTS_STREAM, names.WEBHOOKS_CONSUMER
    async with worker_and_api(urls, settings) as (worker, api, before):
        config = {**queue.webhooks_consumer_config(settings).as_dict(), "ack_wait": 1_000_000_000, "name": hooks}
        config.pop("durable_name", None)
        with contextlib.suppress(NatsError, asyncio.TimeoutError):
            await api.nc.request(f"$JS.API.CONSUMER.CREATE.{events}", json.dumps(
                {"stream_name": events, "config": config}).encode(), timeout=2)
        assert (await worker.js.consumer_info(events, hooks)).config == before, "the API changed the webhook consumer"


MINIO_PUT_EVENT = REPO / "tests" / "fixtures" / "minio-events" / "put.json"


async def test_minio_publishes_bucket_events_and_nothing_else(nats_dev):
    """As pixq-minio, with the MinIO pod's own target settings: a recorded MinIO event,
    published the way MinIO's JetStream target does (a request answered with the stream's ack
    on an inbox), lands in PIXQ_INGEST. Jobs, events and the JetStream API are refused, and so
    is listening beyond its inboxes. A worker then pulls the event from pixq-ingest and acks
    it, and the only permission violations the server saw are pixq-minio's refused attempts."""
    _, urls, log = nats_dev
    event = MINIO_PUT_EVENT.read_bytes()
    subject = urls["minio-subject"]
    worker = await Client().connect(urls["pixq-worker"])
    minio = await Client().connect(urls["pixq-minio"])
    try:
        await queue.ensure_streams(worker.js, Settings())
        await queue.ensure_worker_consumers(worker.js, Settings())

        ack = await minio.js.publish(subject, event, timeout=2)
        assert ack.stream == names.INGEST_STREAM and ack.seq == 1, ack
        assert not minio.errors, minio.errors

        for refused in (names.job_subject("resize"), "pixq.events.x"):
            error = await minio.refused(minio.js.publish(refused, b"{}", timeout=0.5))
            assert refused in error
        for api in ("$JS.API.INFO", f"$JS.API.STREAM.INFO.{names.INGEST_STREAM}",
                    f"$JS.API.STREAM.PURGE.{names.INGEST_STREAM}",
                    f"$JS.API.CONSUMER.INFO.{names.INGEST_STREAM}.{names.INGEST_CONSUMER}",
                    f"$JS.API.CONSUMER.MSG.NEXT.{names.INGEST_STREAM}.{names.INGEST_CONSUMER}"):
            error = await minio.refused(minio.nc.request(api, b"", timeout=0.5))
            assert api.lower() in error.lower()
        await minio.nc.subscribe("pixq.>")
        await minio.nc.flush()
        await asyncio.sleep(0.1)
        assert any("subscription" in e.lower() and "pixq.>" in e for e in minio.errors), minio.errors

        assert (await worker.js.stream_info(names.INGEST_STREAM)).state.messages == 1
        assert (await worker.js.stream_info(names.JOBS_STREAM)).state.messages == 0
        assert (await worker.js.stream_info(EVENTS_STREAM)).state.messages == 0

        puller = await queue.Puller(worker.js, names.INGEST_STREAM, names.INGEST_CONSUMER).start()
        (message,) = await puller.fetch(1, 2)
        assert message.subject == subject and message.data == event
        assert json.loads(message.data)["EventName"] == "s3:ObjectCreated:Put"
        await message.in_progress()
        await message.ack_sync(timeout=2)
        await puller.check()
        info = await worker.js.consumer_info(names.INGEST_STREAM, names.INGEST_CONSUMER)
        assert (info.num_pending, info.num_ack_pending) == (0, 0), info
        assert (await worker.js.stream_info(names.INGEST_STREAM)).state.messages == 0, "work queue: acked is gone"

        await worker.nc.flush()
        await asyncio.sleep(0.1)
        assert not worker.errors, worker.errors
        violations = [line for line in log.read_text().splitlines() if "Violation" in line]
        assert violations, "the refused attempts above must show in the server log"
        others = [line for line in violations if 'pixq-minio"' not in line]  # "pixq-minio" or "$G/user:pixq-minio"
        assert not others, "\n".join(others)
    finally:
        await worker.nc.close()
        await minio.nc.close()
