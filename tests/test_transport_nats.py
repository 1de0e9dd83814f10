"""NATS transport security against real nats-server processes: credentials in NATS_URL
(user/password, token), an nkey seed file, a JWT .creds file (operator mode), TLS and
mutual TLS. Each case shows pixq connecting and using JetStream, and a client without the
credential (or the client certificate, or the CA) being refused."""

import asyncio
import json
import time
from pathlib import Path

import nats
import nkeys
import pytest
from nats.errors import Error as NatsError

from pixq import names, queue
from pixq.deps import Dependencies
from pixq.settings import Settings
from pixq.transport import NatsPlaintextRefused, nats_connect_options, split_nats_credentials
from tests.conftest import running_api, running_worker
from tests.helpers import resize_completes
from tests.servers import free_port
from tests.tls import nats_server_conf, nats_tls_block, new_nkey, operator_setup

pytestmark = pytest.mark.timeout(60)


def settings_for(nats_url: str, redis_port: int, tmp: Path, **overrides) -> Settings:
    values = dict(nats_url=nats_url, redis_url=f"redis://127.0.0.1:{redis_port}/0", storage_type="local",
                  storage_dir=tmp / "storage", metrics_port=0, url_signing_key="test-signing-key",
                  max_retries=2, retry_backoff=[0.0, 0.2], ack_wait=5.0, job_timeout=20.0,
                  worker_shutdown_grace=5.0, log_level="warning")
    values.update(overrides)
    return Settings(**values)


async def assert_jetstream_works(settings: Settings) -> None:
    """pixq's own start-up path: connect, create the streams, then read one back."""
    deps = await Dependencies.open(settings, client_name="pixq-transport-test")
    try:
        assert (await deps.check())["nats"] is True
        info = await deps.js.stream_info(names.JOBS_STREAM)
        assert info.config.name == names.JOBS_STREAM
    finally:
        await deps.close()


async def assert_refused(settings: Settings, *fragments: str) -> str:
    """pixq's connect gives up with the server's reason (one attempt: every server twice)."""
    with pytest.raises(NatsError) as info:
        nc = await asyncio.wait_for(queue.connect(settings, name="pixq-refused", attempts=1), 15)
        await nc.close()
    message = str(info.value).lower()
    assert any(fragment.lower() in message for fragment in fragments), message
    return message


# --- credentials in NATS_URL ------------------------------------------------------------


def test_url_credentials_are_lifted_decoded_and_shared_by_every_server():
    servers, user, password, token = split_nats_credentials(
        "nats://pixq:p%40ss%2Fw%3Ard@10.0.0.1:4222, nats://pixq:p%40ss%2Fw%3Ard@10.0.0.2:4222,nats://10.0.0.3:4222")
    assert servers == ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222", "nats://10.0.0.3:4222"]
    assert (user, password, token) == ("pixq", "p@ss/w:rd", None)
    assert split_nats_credentials("tls://s3cr3t-token@nats:4222") == (["tls://nats:4222"], None, None, "s3cr3t-token")
    assert split_nats_credentials("nats://nats:4222") == (["nats://nats:4222"], None, None, None)
    with pytest.raises(ValueError, match="NATS_URL"):
        split_nats_credentials("nats://a:1@h1:4222,nats://b:2@h2:4222")


PASSWORD = "p@ss/w:rd with space"


async def assert_only_credentials(server, redis_port: int, tmp_path, good: dict, stranger: dict,
                                  url: str = "nats://{}127.0.0.1:{port}", good_prefix: str = "",
                                  stranger_prefix: str = "") -> None:
    """JetStream works with ``good`` settings; no credentials, or a stranger's, are refused; the
    server is stopped afterwards."""
    try:
        await assert_jetstream_works(settings_for(url.format(good_prefix, port=server.port), redis_port, tmp_path,
                                                  **good))
        for prefix, extra in (("", {}), (stranger_prefix, stranger)):
            await assert_refused(settings_for(url.format(prefix, port=server.port), redis_port, tmp_path, **extra),
                                 "authorization violation")
    finally:
        server.stop()


@pytest.mark.parametrize("authorization, credentials, wrong", [
    (f"authorization {{ user: pixq, password: {json.dumps(PASSWORD)} }}",
     "pixq:p%40ss%2Fw%3Ard%20with%20space@", "pixq:wrong@"),
    ('authorization { token: "tok-2f9c1e" }', "tok-2f9c1e@", "tok-wrong@"),
], ids=["user-and-password", "token"])
async def test_credentials_in_url(tmp_path, redis_proc, authorization, credentials, wrong):
    """Percent-escaped credentials in NATS_URL work; none, or wrong ones, are refused."""
    await assert_only_credentials(nats_server_conf(tmp_path, authorization), redis_proc.port, tmp_path, {}, {},
                                  good_prefix=credentials, stranger_prefix=wrong)


# --- nkey seed and JWT credentials -----------------------------------------------------------


async def test_nkey_seed_file(tmp_path, redis_proc):
    seed, public = new_nkey(nkeys.PREFIX_BYTE_USER)
    seed_file = tmp_path / "pixq.nk"
    seed_file.write_text(seed + "\n")
    stranger_seed, _ = new_nkey(nkeys.PREFIX_BYTE_USER)
    stranger_file = tmp_path / "stranger.nk"
    stranger_file.write_text(stranger_seed)
    server = nats_server_conf(tmp_path, f"authorization {{ users: [ {{ nkey: {public} }} ] }}")
    await assert_only_credentials(server, redis_proc.port, tmp_path, {"nats_nkey_seed_file": seed_file},
                                  {"nats_nkey_seed_file": stranger_file})


async def test_creds_file_in_operator_mode(tmp_path, redis_proc):
    """Operator, account and user JWTs made with the nkeys library (what `nsc` does), a
    MEMORY resolver preloaded with the account; JetStream enabled through the account's limits."""
    operator = operator_setup()
    creds, stranger = tmp_path / "pixq.creds", tmp_path / "stranger.creds"
    operator.user_creds(creds)
    operator_setup().user_creds(stranger)  # signed by an account this server does not know
    await assert_only_credentials(nats_server_conf(tmp_path, operator.config()), redis_proc.port, tmp_path,
                                  {"nats_creds_file": creds}, {"nats_creds_file": stranger})


async def test_creds_rotation_needs_no_restart_of_pixq(tmp_path):
    """nats-py reads the .creds file at every (re)connect: replace the file (as a Secret
    update does), revoke the old user, and the running client comes back as the new user."""
    operator = operator_setup()
    creds, old_copy = tmp_path / "pixq.creds", tmp_path / "old.creds"
    old_user = operator.user_creds(creds)
    old_copy.write_text(creds.read_text())
    server = nats_server_conf(tmp_path, operator.config())
    settings = Settings(nats_url=f"nats://127.0.0.1:{server.port}", nats_creds_file=creds)
    nc = await queue.connect(settings, name="pixq-rotation", attempts=1)
    try:
        fresh = tmp_path / "fresh.creds"
        operator.user_creds(fresh, name="pixq-next")
        fresh.replace(creds)  # atomic, like the kubelet's swap of a Secret volume
        server.stop()
        revoked = operator.config(revoked={old_user: int(time.time()) + 1})
        server = nats_server_conf(tmp_path, revoked, port=server.port)
        await wait_until(lambda: nc.stats["reconnects"] >= 1 and nc.is_connected, 15)
        assert (await nc.request("$JS.API.INFO", b"", timeout=5)).data
        await assert_refused(settings.model_copy(update={"nats_creds_file": old_copy}), "authorization violation")
    finally:
        await nc.close()
        server.stop()


# --- TLS and mutual TLS --------------------------------------------------------------------


async def test_tls_with_private_ca(tmp_path, redis_proc, pki, other_pki):
    """TLS plus a password (the guard hands it over: the connection is TLS)."""
    server = nats_server_conf(tmp_path, nats_tls_block(pki) + "\nauthorization { user: pixq, password: pw-tls }")
    try:
        for scheme in ("tls", "nats"):  # nats:// with a CA file: TLS all the same
            url = f"{scheme}://pixq:pw-tls@127.0.0.1:{server.port}"
            await assert_jetstream_works(settings_for(url, redis_proc.port, tmp_path, nats_tls_ca_file=pki.ca))
        # The server's certificate is not trusted without NATS_TLS_CA_FILE, nor by another CA.
        url = f"tls://pixq:pw-tls@127.0.0.1:{server.port}"
        await assert_refused(settings_for(url, redis_proc.port, tmp_path), "certificate verify failed")
        await assert_refused(settings_for(url, redis_proc.port, tmp_path, nats_tls_ca_file=other_pki.ca),
                             "certificate verify failed")
    finally:
        server.stop()


async def test_mutual_tls_requires_the_client_certificate(tmp_path, redis_proc, pki, other_pki):
    server = nats_server_conf(tmp_path, nats_tls_block(pki, verify_clients=True))
    try:
        url = f"tls://127.0.0.1:{server.port}"
        await assert_jetstream_works(settings_for(url, redis_proc.port, tmp_path, nats_tls_ca_file=pki.ca,
                                                  nats_tls_cert_file=pki.client_cert,
                                                  nats_tls_key_file=pki.client_key))
        # No client certificate, or one from another CA: the server ends the handshake (the client
        # sees the TLS alert, or, when the server closes first, a reset or broken pipe).
        await assert_refused(settings_for(url, redis_proc.port, tmp_path, nats_tls_ca_file=pki.ca),
                             "bad certificate", "certificate required", "connection lost", "connection reset",
                             "broken pipe")
        await assert_refused(settings_for(url, redis_proc.port, tmp_path, nats_tls_ca_file=pki.ca,
                                          nats_tls_cert_file=other_pki.client_cert,
                                          nats_tls_key_file=other_pki.client_key),
                             "bad certificate", "unknown ca", "connection lost", "connection reset", "broken pipe")
        log = server.log.read_text()
        assert "client didn't provide a certificate" in log
        assert "failed to verify client certificate" in log or "failed to verify certificate" in log
    finally:
        server.stop()


async def test_password_never_sent_in_plaintext_when_tls_is_configured(tmp_path):
    """Something answering as the server offers no TLS: nats-py alone would send the password
    (shown first, as the reason for the guard); pixq withholds it and fails."""
    received: list[bytes] = []

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = {"server_id": "IMPOSTOR", "version": "2.9.10", "proto": 1, "max_payload": 1048576,
                "auth_required": True, "headers": True}
        writer.write(f"INFO {json.dumps(info)}\r\n".encode())
        await writer.drain()
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
        except asyncio.TimeoutError:
            line = b""
        received.append(line)
        writer.close()

    port = free_port()
    listener = await asyncio.start_server(impostor, "127.0.0.1", port)
    try:
        url = f"tls://pixq:hunter2@127.0.0.1:{port}"
        try:
            leaky = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
            await leaky.close()
        except (NatsError, OSError, asyncio.TimeoutError):
            pass
        assert any(b"hunter2" in line for line in received), received  # the library alone leaks it

        received.clear()
        settings = Settings(nats_url=url)
        assert callable(nats_connect_options(settings, lambda: False)["password"])
        with pytest.raises(NatsError) as info:
            await queue.connect(settings, name="pixq-guarded", attempts=1)
        assert str(NatsPlaintextRefused()) in str(info.value)
        assert not any(b"hunter2" in line for line in received), received
    finally:
        listener.close()
        await listener.wait_closed()


# --- the real API and worker ------------------------------------------------------------------


async def test_job_completes_over_mutual_tls_with_jwt_credentials(tmp_path, redis_proc, pki):
    operator = operator_setup()
    creds = tmp_path / "pixq.creds"
    operator.user_creds(creds)
    server = nats_server_conf(tmp_path, operator.config() + "\n" + nats_tls_block(pki, verify_clients=True))
    try:
        settings = settings_for(f"tls://127.0.0.1:{server.port}", redis_proc.port, tmp_path, nats_creds_file=creds,
                                nats_tls_ca_file=pki.ca, nats_tls_cert_file=pki.client_cert,
                                nats_tls_key_file=pki.client_key)
        async with running_api(settings) as api, running_worker(settings):
            await resize_completes(api)
            ready = await api.get("/health/ready")
            assert ready.status == 200 and (await ready.json())["checks"]["nats"] is True
        # Same server, the TLS material but no JWT: refused.
        await assert_refused(settings.model_copy(update={"nats_creds_file": None}), "authorization violation")
    finally:
        server.stop()


async def test_reconnects_forever_with_tls_and_password_after_a_restart(tmp_path, pki):
    """The first connection gives up after a few tries, but a connected client must keep
    reconnecting through a long outage, again over TLS with its (guarded) password."""
    server = nats_server_conf(tmp_path, nats_tls_block(pki) + "\nauthorization { user: pixq, password: pw-r }")
    settings = Settings(nats_url=f"tls://pixq:pw-r@127.0.0.1:{server.port}", nats_tls_ca_file=pki.ca)
    nc = await queue.connect(settings, name="pixq-reconnect", attempts=1)
    try:
        server.stop()
        await wait_until(lambda: nc._current_server.reconnects >= 4, 15)  # beyond the first-connect limit
        assert not nc.is_closed
        server.start()
        await wait_until(lambda: nc.is_connected, 15)
        reply = await nc.request("$JS.API.INFO", b"", timeout=5)
        assert b"memory" in reply.data and nc.stats["reconnects"] >= 1
    finally:
        await nc.close()
        server.stop()


async def wait_until(condition, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
