"""Redis transport security against real redis-server processes: a password or an ACL user
in REDIS_URL, and TLS (rediss://) verified against REDIS_TLS_CA_FILE. A wrong or absent
credential, or an untrusted certificate, makes readiness false and status calls fail with
STATUS_UNAVAILABLE; nothing crashes."""

import pytest

from pixq.errors import ErrorCode, PixqError
from pixq.settings import Settings, load_settings
from pixq.status import StatusStore
from tests.conftest import running_api, running_worker
from tests.helpers import form, make_image, resize_completes
from tests.tls import redis_server_conf

pytestmark = pytest.mark.timeout(60)

# Least privilege for pixq: its own keys, no pub/sub channels, no administrative commands.
PIXQ_ACL = "user pixq on >s3cr@t/pw ~pixq:* resetchannels +@all -@dangerous"
DEFAULT_OFF = "user default off"


async def works(redis_url: str, **settings) -> bool:
    """True when pixq's status store can write and read a job through this URL; when it
    cannot, also check that the failure is the documented one (ping False, STATUS_UNAVAILABLE)."""
    store = StatusStore.from_settings(Settings(redis_url=redis_url, **settings))
    try:
        if await store.ping():
            await store.create("0f0e0d0c-0000-4000-8000-000000000001", "resize", "default", "req-1")
            return (await store.get("0f0e0d0c-0000-4000-8000-000000000001"))["status"] == "queued"
        with pytest.raises(PixqError) as info:
            await store.create("0f0e0d0c-0000-4000-8000-000000000002", "resize", "default", "req-2")
        assert info.value.code is ErrorCode.STATUS_UNAVAILABLE
        return False
    finally:
        await store.close()


async def test_password_in_url(tmp_path):
    server = redis_server_conf(tmp_path, ["requirepass pw-7c1d"])
    try:
        assert await works(f"redis://:pw-7c1d@127.0.0.1:{server.port}/0")
        assert not await works(f"redis://127.0.0.1:{server.port}/0")
        assert not await works(f"redis://:wrong@127.0.0.1:{server.port}/0")
    finally:
        server.stop()


async def test_acl_user_in_url(tmp_path):
    server = redis_server_conf(tmp_path, [PIXQ_ACL, DEFAULT_OFF])
    try:
        good = f"redis://pixq:s3cr%40t%2Fpw@127.0.0.1:{server.port}/0"  # s3cr@t/pw, percent-encoded
        assert await works(good)
        assert not await works(f"redis://127.0.0.1:{server.port}/0")  # the default user is off
        assert not await works(f"redis://pixq:wrong@127.0.0.1:{server.port}/0")
        # The ACL really confines pixq to its keys.
        store = StatusStore.from_settings(Settings(redis_url=good))
        try:
            with pytest.raises(Exception, match="(?i)no permissions"):
                await store.client.set("not-pixq", "1")
            with pytest.raises(Exception, match="(?i)no permissions"):
                await store.client.flushall()
        finally:
            await store.close()
    finally:
        server.stop()


async def test_acl_password_rotation_keeps_the_running_client(tmp_path):
    """An ACL user holds two passwords during a rotation: running clients keep working, new
    ones use the new password, then the old one is removed."""
    server = redis_server_conf(tmp_path, [PIXQ_ACL, DEFAULT_OFF, "user admin on >adm1n ~* &* +@all"])
    old_url = f"redis://pixq:s3cr%40t%2Fpw@127.0.0.1:{server.port}/0"
    new_url = f"redis://pixq:n3xt-pw@127.0.0.1:{server.port}/0"
    running = StatusStore.from_settings(Settings(redis_url=old_url))
    admin = StatusStore.from_settings(Settings(redis_url=f"redis://admin:adm1n@127.0.0.1:{server.port}/0"))
    try:
        assert await running.ping()
        await admin.client.execute_command("ACL", "SETUSER", "pixq", ">n3xt-pw")
        assert await works(old_url) and await works(new_url)
        await admin.client.execute_command("ACL", "SETUSER", "pixq", "<s3cr@t/pw")
        assert await works(new_url) and not await works(old_url)
        assert await running.ping()  # an authenticated connection stays
    finally:
        await running.close()
        await admin.close()
        server.stop()


async def test_tls_with_private_ca(tmp_path, pki, other_pki):
    server = redis_server_conf(tmp_path, [PIXQ_ACL, DEFAULT_OFF], tls=pki)
    try:
        url = f"rediss://pixq:s3cr%40t%2Fpw@127.0.0.1:{server.port}/0"
        assert await works(url, redis_tls_ca_file=pki.ca)
        assert not await works(url)  # system CAs do not know the test CA
        assert not await works(url, redis_tls_ca_file=other_pki.ca)
        assert not await works(url.replace("rediss://", "redis://"))  # plaintext to a TLS port
        assert not await works(f"rediss://pixq:wrong@127.0.0.1:{server.port}/0", redis_tls_ca_file=pki.ca)
    finally:
        server.stop()


def test_ca_file_without_rediss_is_refused(tmp_path, pki, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("REDIS_TLS_CA_FILE", str(pki.ca))
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert info.value.code == 2
    assert "invalid configuration: REDIS_TLS_CA_FILE:" in capsys.readouterr().err


async def test_api_and_worker_over_tls_with_acl_user_and_refused_password(tmp_path, nats, pki, make_settings):
    server = redis_server_conf(tmp_path, [PIXQ_ACL, DEFAULT_OFF], tls=pki)
    try:
        settings = make_settings("local", redis_url=f"rediss://pixq:s3cr%40t%2Fpw@127.0.0.1:{server.port}/0",
                                 redis_tls_ca_file=pki.ca)
        async with running_api(settings) as api, running_worker(settings):
            await resize_completes(api)
            assert (await api.get("/health/ready")).status == 200

        wrong = settings.model_copy(update={"redis_url": f"rediss://pixq:wrong@127.0.0.1:{server.port}/0"})
        async with running_api(wrong) as api:
            ready = await api.get("/health/ready")
            assert ready.status == 503 and (await ready.json())["checks"]["redis"] is False
            response = await api.post("/api/v1/resize", data=form(make_image(60, 40), width=20))
            assert response.status == 503, await response.text()
            assert (await response.json())["error"]["code"] == "STATUS_UNAVAILABLE"
            assert (await api.get("/health/live")).status == 200  # still serving
    finally:
        server.stop()
