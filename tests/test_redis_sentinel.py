"""Redis high availability with Sentinel (REDIS_SENTINELS, REDIS_SENTINEL_MASTER).

The failover test runs the real API and worker against a master, a replica and three sentinels
(tests/redis_sentinel.py) and SIGKILLs the master under load: every job accepted before, during
and after the failover completes, no status moves backwards, the worker's status writes that
failed during the gap went through the PIXQ_STATUS outbox and were drained, and the rate
limiter's own pool follows the new master too. Settings checks go through load_settings.
"""

import asyncio
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as redis

from pixq import names
from pixq.errors import ErrorCode, PixqError
from pixq.jobs import JobStatus
from pixq.settings import Settings, load_settings, parse_host_ports
from pixq.status import StatusStore
from pixq.transport import SENTINEL_RECHECK_SECONDS
from tests.conftest import running_api, running_worker
from tests.helpers import form, make_image
from tests.faults.harness import JetStreamProbe, StatusRecorder, submit, wait_until
from tests.redis_sentinel import DATA_PASSWORD, MASTER_NAME, SENTINEL_PASSWORD, SentinelGroup, start_group, wait_failover
from tests.servers import ServerProcess

pytestmark = pytest.mark.timeout(120)

BEFORE = 12
"""Medium jobs (~0.3 s each, two at a time) queued before the kill: the worker is still busy
with them when the master dies, so some status writes fall in the failover's gap."""
AFTER = 5
"""Jobs that must be accepted after the sentinels name the new master."""


@pytest.fixture
def sentinel_group(tmp_path: Path) -> SentinelGroup:
    group = start_group(tmp_path / "redis")
    yield group
    group.stop()


def sentinel_settings(group: SentinelGroup, nats: ServerProcess, tmp_path: Path, **overrides) -> Settings:
    values = dict(nats_url=f"nats://127.0.0.1:{nats.port}", redis_url=group.redis_url,
                  redis_sentinels=group.addresses, redis_sentinel_master=MASTER_NAME,
                  redis_sentinel_password=SENTINEL_PASSWORD, storage_type="local",
                  storage_dir=tmp_path / "storage", metrics_port=0, url_signing_key="test-signing-key",
                  max_retries=2, retry_backoff=[0.0, 0.2], ack_wait=5.0, job_timeout=20.0,
                  worker_shutdown_grace=5.0, log_level="warning",
                  # A per-IP limit nobody reaches: its checks show the limiter's pool following the failover.
                  rate_limit="off", rate_limit_per_ip="100000/second")
    values.update(overrides)
    return Settings(**values)


@dataclass
class Submitted:
    at: float
    status: int
    body: dict


async def test_master_killed_under_load_statuses_keep_flowing_and_none_is_lost(sentinel_group, nats, tmp_path):
    group = sentinel_group
    settings = sentinel_settings(group, nats, tmp_path)
    loop = asyncio.get_running_loop()
    async with running_api(settings) as client, running_worker(settings), aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=15)) as http:
        api = str(client.make_url("")).rstrip("/")
        recorder = StatusRecorder(http, api)
        log: list[Submitted] = []
        for _ in range(BEFORE):
            status, body = await submit(http, api, "medium")
            assert status == 202, body
            log.append(Submitted(loop.time(), status, body))
            recorder.track(body["job_id"])
        recorder.start()

        stop = asyncio.Event()

        async def keep_submitting() -> None:
            while not stop.is_set():
                status, body = await submit(http, api, "small")
                log.append(Submitted(loop.time(), status, body))
                if status == 202:
                    recorder.track(body["job_id"])
                await asyncio.sleep(0.05)  # pacing of the load, not synchronisation
        submitter = asyncio.create_task(keep_submitting())

        async def some_job_processing() -> bool:
            return any(h and h[-1][1] == "processing" for h in recorder.seen.values())
        await wait_until(some_job_processing, 30, "a job in processing before the kill")
        old_port = group.master.port
        assert await group.master_port() == old_port
        killed_at = loop.time()
        group.master.stop(kill=True)  # SIGKILL: no goodbye to replicas or clients
        new_port = await wait_failover(group, old_port)
        failed_over_at = loop.time()
        assert new_port == group.replica.port

        async def accepted_after_failover() -> bool:
            return sum(1 for s in log if s.status == 202 and s.at > failed_over_at) >= AFTER
        await wait_until(accepted_after_failover, 30, f"{AFTER} submits accepted after the failover")

        async def limiter_checks_again() -> bool:
            async with http.get(f"{api}/api/v1/jobs") as response:
                return '"ip";r=' in response.headers.get("RateLimit", "")
        await wait_until(limiter_checks_again, 15, "the rate limiter to count requests on the new master")

        stop.set()
        await submitter
        await recorder.wait_all({"completed"}, timeout=60)
        await recorder.stop()
        recorder.assert_monotonic()

        refused = [s for s in log if s.status != 202]
        assert all(s.status == 503 and s.body["error"]["code"] == "STATUS_UNAVAILABLE" for s in refused), refused
        assert all(killed_at <= s.at for s in refused), "a submit was refused before the master was killed"
        during = [s for s in log if killed_at <= s.at <= failed_over_at]
        assert during, "no submit was attempted during the failover"

        async with JetStreamProbe(nats.port) as probe:
            deferred = (await probe.state(names.STATUS_STREAM)).last_seq
            assert deferred > 0, "no status write failed over to the outbox: the gap was not exercised"

            async def outbox_drained() -> bool:
                return (await probe.state(names.STATUS_STREAM)).messages == 0
            await wait_until(outbox_drained, 15, "the status outbox to drain")

        for job_id in recorder.seen:
            async with http.get(f"{api}/api/v1/jobs/{job_id}") as response:
                body = await response.json()
            assert body["status"] == "completed" and body["result"]["width"] > 0, body
        before = sum(1 for s in log if s.status == 202 and s.at < killed_at)
        after = sum(1 for s in log if s.status == 202 and s.at > failed_over_at)
        print(f"\nsentinel failover in {failed_over_at - killed_at:.1f}s (kill to new master named): "
              f"{len(recorder.seen)} jobs accepted ({before} before the kill, "
              f"{sum(1 for s in during if s.status == 202)} of {len(during)} submits during it, {after} after), "
              f"{len(refused)} submits refused with 503 in all, {deferred} status updates through the outbox, "
              f"all {len(recorder.seen)} jobs completed")


async def test_wrong_sentinel_password_is_unavailable_not_an_error(sentinel_group, nats, tmp_path):
    """The sentinels refuse a client without their password: readiness says redis is down and a
    submit is 503 STATUS_UNAVAILABLE (never a 500), as with a Redis outage."""
    settings = sentinel_settings(sentinel_group, nats, tmp_path, redis_sentinel_password="not-the-password")
    async with running_api(settings) as client:
        ready = await client.get("/health/ready")
        assert ready.status == 503 and (await ready.json())["checks"]["redis"] is False
        response = await client.post("/api/v1/resize", data=form(make_image(120, 90), width=40))
        status, body = response.status, await response.json()
        assert status == 503 and body["error"]["code"] == "STATUS_UNAVAILABLE", body


@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_a_write_acked_but_not_replicated_is_lost_at_failover_unless_replicas_confirm(tmp_path, wait_replicas):
    """The limit of Sentinel mode (docs/reliability.md): replication is asynchronous. Here the
    replica stays connected and acknowledging (``lag 0`` to the master, so min-replicas-max-lag
    would not refuse the write) but receives nothing; the master takes "completed" and dies.

    With REDIS_WAIT_REPLICAS=0 that write was final for pixq and the promoted replica still says
    "processing": the update is lost. With REDIS_WAIT_REPLICAS=1 the write is not confirmed by
    ``WAIT``, so it fails (STATUS_UNAVAILABLE: the worker puts it in the outbox), and the same
    write applied again after the failover, as the outbox drainer does, lands on the new master."""
    group = start_group(tmp_path / "redis", proxied_replication=True)
    store = StatusStore.from_settings(Settings(redis_url=group.redis_url, redis_sentinels=group.addresses,
                                               redis_sentinel_master=MASTER_NAME,
                                               redis_sentinel_password=SENTINEL_PASSWORD,
                                               redis_wait_replicas=wait_replicas))
    try:
        await store.create("job-1", "resize", "default", "request-1")
        await store.advance("job-1", 0, 1, JobStatus.PROCESSING)
        assert await store.client.execute_command("WAIT", 1, 1000) == 1  # on the replica

        group.replication.swallow_replies()
        if wait_replicas:
            with pytest.raises(PixqError) as unconfirmed:
                await store.advance("job-1", 0, 1, JobStatus.COMPLETED)
            assert unconfirmed.value.code is ErrorCode.STATUS_UNAVAILABLE
        else:
            applied = await store.advance("job-1", 0, 1, JobStatus.COMPLETED)
            assert applied is not None and applied["status"] == "completed"  # acknowledged: no outbox
            assert await store.client.execute_command("WAIT", 1, 100) == 0

        group.master.stop(kill=True)
        await wait_failover(group, group.master.port)

        async def status_on_new_master() -> str | None:
            try:
                return (await store.get("job-1"))["status"]
            except PixqError:
                return None
        assert await wait_until(status_on_new_master, 15, "the new master to answer") == "processing"
        if wait_replicas:
            # The new master has no replica left: confirm nothing, and apply the outbox's write.
            store.wait_replicas = 0
            assert (await store.advance("job-1", 0, 1, JobStatus.COMPLETED))["status"] == "completed"
    finally:
        await store.close()
        group.stop()


async def test_writes_follow_the_sentinels_within_seconds_when_the_old_master_stays_a_master(sentinel_group):
    """Split brain, made on purpose: the replica is made a master and the sentinels are told to
    monitor it, while the old master keeps running as a master that no sentinel names any more
    (as a restarted master is until the sentinels demote it). A pooled connection to the old
    master never fails, so redis-py alone kept writing there; pixq's Sentinel pool rechecks the
    master every SENTINEL_RECHECK_SECONDS and moves its writes to the node the sentinels name."""
    group = sentinel_group
    store = StatusStore.from_settings(Settings(redis_url=group.redis_url, redis_sentinels=group.addresses,
                                               redis_sentinel_master=MASTER_NAME,
                                               redis_sentinel_password=SENTINEL_PASSWORD))
    old = redis.Redis(port=group.master.port, password=DATA_PASSWORD, decode_responses=True)
    new = redis.Redis(port=group.replica.port, password=DATA_PASSWORD, decode_responses=True)
    try:
        await store.client.set("probe", "before")
        assert await old.get("probe") == "before"  # the pool's connection is to the old master

        await new.execute_command("REPLICAOF", "NO", "ONE")
        for sentinel in group.sentinels:
            async with redis.Redis(port=sentinel.port, password=SENTINEL_PASSWORD) as client:
                await client.execute_command("SENTINEL", "REMOVE", MASTER_NAME)
                await client.execute_command("SENTINEL", "MONITOR", MASTER_NAME, "127.0.0.1", group.replica.port, 2)
                await client.execute_command("SENTINEL", "SET", MASTER_NAME, "auth-pass", DATA_PASSWORD)
        assert (await old.info("replication"))["role"] == "master"  # two masters now

        writes = 0

        async def write_reached_the_named_master() -> bool:
            nonlocal writes
            writes += 1
            await store.client.set("probe", f"write-{writes}")
            return await new.get("probe") == f"write-{writes}"
        await wait_until(write_reached_the_named_master, 3 + 2 * SENTINEL_RECHECK_SECONDS,
                         "a write on the master the sentinels name", interval=0.1)
        assert (await old.info("replication"))["role"] == "master"  # still up: the client moved, not the server
    finally:
        await store.close()
        await old.aclose()
        await new.aclose()


async def test_a_submit_whose_status_write_is_unconfirmed_answers_503_and_leaves_no_record(nats, tmp_path):
    """REDIS_WAIT_REPLICAS=1 with the replica receiving nothing: the master applies the new job's
    record but no replica confirms it, so the submit is refused (503 STATUS_UNAVAILABLE) and
    rolled back, record included (pixq.status deletes an unconfirmed create): a record left
    behind would stay `queued` for ever, run by no one, holding a place among the tenant's jobs
    in flight. The chaos run's short version refuses ~20 submits this way at each failover."""
    group = start_group(tmp_path / "redis", proxied_replication=True)
    settings = sentinel_settings(group, nats, tmp_path, redis_wait_replicas=1)
    master = redis.Redis(port=group.master.port, password=DATA_PASSWORD, decode_responses=True)
    try:
        async with running_api(settings) as client:
            group.replication.swallow_replies()
            response = await client.post("/api/v1/resize", data=form(make_image(120, 90), width=40))
            body = await response.json()
            assert response.status == 503 and body["error"]["code"] == "STATUS_UNAVAILABLE", body
            left = [key async for key in master.scan_iter(names.job_key("*"))]
            assert left == [], left
            assert not list((tmp_path / "storage").rglob("inputs/*/*")), "the input was not removed"
    finally:
        await master.aclose()
        group.stop()


async def test_tls_to_master_and_sentinels_verified_against_the_ca_file_across_a_failover(tmp_path, pki, other_pki):
    """``rediss://`` + REDIS_TLS_CA_FILE in Sentinel mode: the sentinels and the master are reached
    over TLS and verified against that CA (another CA, or the system CAs, are refused), and the
    client follows a failover on TLS as well."""
    group = start_group(tmp_path / "redis", tls=pki)

    def store(**overrides) -> StatusStore:
        values = dict(redis_url=group.redis_url, redis_sentinels=group.addresses, redis_sentinel_master=MASTER_NAME,
                      redis_sentinel_password=SENTINEL_PASSWORD, redis_tls_ca_file=pki.ca)
        return StatusStore.from_settings(Settings(**{**values, **overrides}))

    trusted, untrusted, system_cas = store(), store(redis_tls_ca_file=other_pki.ca), store(redis_tls_ca_file=None)
    try:
        assert await trusted.ping()
        assert not await untrusted.ping() and not await system_cas.ping()
        await trusted.create("job-1", "resize", "default", "request-1")

        group.master.stop(kill=True)
        await wait_failover(group, group.master.port)

        async def written_on_new_master() -> bool:
            try:
                return await trusted.advance("job-1", 0, 1, JobStatus.PROCESSING) is not None
            except PixqError:
                return False
        await wait_until(written_on_new_master, 15, "a write over TLS on the new master")
        assert (await trusted.get("job-1"))["status"] == "processing"
    finally:
        for client in (trusted, untrusted, system_cas):
            await client.close()
        group.stop()


# --- settings ------------------------------------------------------------------------------


def test_sentinel_addresses_are_parsed():
    assert parse_host_ports(" 10.0.0.5:26379, sentinel-b:26380,[fd00::5]:26379 ") == [
        ("10.0.0.5", 26379), ("sentinel-b", 26380), ("fd00::5", 26379)]
    assert parse_host_ports("") == []


@pytest.mark.parametrize("value", ["10.0.0.5", "10.0.0.5:", ":26379", "h:0", "h:65536", "h:port", "h:26379,h2"])
def test_bad_sentinel_address_is_refused(value):
    with pytest.raises(ValueError):
        parse_host_ports(value)


@pytest.fixture
def redis_env(monkeypatch):
    for name in ("REDIS_URL", "REDIS_URL_FILE", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER",
                 "REDIS_SENTINEL_PASSWORD", "REDIS_SENTINEL_PASSWORD_FILE", "REDIS_TLS_CA_FILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("env, named", [
    ({"REDIS_SENTINELS": "127.0.0.1"}, "REDIS_SENTINELS"),
    ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "REDIS_SENTINEL_MASTER"),
    ({"REDIS_SENTINEL_MASTER": "main"}, "REDIS_SENTINELS"),
    ({"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "my master"}, "REDIS_SENTINEL_MASTER"),
    ({"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "main",
      "REDIS_URL": "unix:///run/redis.sock"}, "REDIS_URL"),
    ({"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "main",
      "REDIS_SENTINEL_PASSWORD": "CHANGE_ME"}, "REDIS_SENTINEL_PASSWORD"),
])
def test_bad_sentinel_config_fails_at_start_naming_the_variable(env, named, redis_env, capsys):
    for name, value in env.items():
        redis_env.setenv(name, value)
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert info.value.code == 2
    assert f"invalid configuration: {named}:" in capsys.readouterr().err


def test_sentinel_settings_and_password_file(redis_env, tmp_path):
    secret = tmp_path / "sentinel-password"
    secret.write_text("s3ntinel-pw\n")
    redis_env.setenv("REDIS_SENTINELS", "10.0.0.5:26379,10.0.0.6:26379,10.0.0.7:26379")
    redis_env.setenv("REDIS_SENTINEL_MASTER", "pixq")
    redis_env.setenv("REDIS_SENTINEL_PASSWORD_FILE", str(secret))
    settings = load_settings()
    assert settings.redis_sentinels == [("10.0.0.5", 26379), ("10.0.0.6", 26379), ("10.0.0.7", 26379)]
    assert (settings.redis_sentinel_master, settings.redis_sentinel_password) == ("pixq", "s3ntinel-pw")
