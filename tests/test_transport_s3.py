"""S3 transport and encryption at rest: STORAGE_CA_FILE for HTTPS to a private CA,
STORAGE_SSE on every object the API and the workers write. Moto (the session's S3) records
the encryption headers; HTTPS comes from a TLS-terminating proxy in front of it with a
test-generated certificate. Moto checks no signatures, so nothing here is proof of S3
credential checking: only of what pixq sends and how it verifies the endpoint.

The last test runs a job with every dependency secured at once."""

import ssl
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

from pixq.errors import ErrorCode, PixqError
from pixq.settings import Settings, load_settings
from pixq.storage import S3Storage
from tests.conftest import running_api, running_worker
from tests.helpers import resize_completes
from tests.faults.tcp_proxy import ToggleProxy
from tests.tls import (Pki, nats_server_conf, nats_tls_block, operator_setup, redis_server_conf,
                       server_ssl_context, tls_proxy)

pytestmark = pytest.mark.timeout(60)

KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/pixq-test-key"


@pytest.fixture
def https_s3(s3_endpoint: str, pki: Pki) -> ToggleProxy:
    """HTTPS in front of moto, with a certificate from the test CA."""
    proxy = tls_proxy(s3_endpoint, server_ssl_context(pki)).start()
    yield proxy
    proxy.stop()


def s3_settings(endpoint: str, **overrides) -> dict:
    return dict(storage_endpoint=endpoint, bucket_name=f"pixq-{uuid.uuid4().hex[:12]}",
                minio_access_key="testing", minio_secret_key="testing", **overrides)


def encryption_of_every_object(s3_endpoint: str, bucket: str) -> dict[str, tuple[str | None, str | None]]:
    """{key: (ServerSideEncryption, SSEKMSKeyId)} as moto recorded them, read straight from moto."""
    client = boto3.client("s3", endpoint_url=f"http://{s3_endpoint}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    result = {}
    for key in keys:
        head = client.head_object(Bucket=bucket, Key=key)
        result[key] = (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId"))
    return result


async def run_one_job(settings: Settings) -> dict:
    async with running_api(settings) as api, running_worker(settings):
        return await resize_completes(api, format="webp")


async def test_sse_s3_on_every_write(make_settings, s3_endpoint):
    """Plain HTTP is fine for SSE-S3 (the store holds the keys); the input the API stored and
    every output the worker wrote carry it."""
    settings = make_settings("minio", storage_sse="s3")
    await run_one_job(settings)
    objects = encryption_of_every_object(s3_endpoint, settings.bucket_name)
    assert len(objects) >= 2, objects  # the upload and the output
    assert set(objects.values()) == {("AES256", None)}, objects


async def test_private_ca_and_sse_kms_over_https(make_settings, s3_endpoint, https_s3, pki, tmp_path):
    settings = make_settings("minio", **s3_settings(https_s3.endpoint, storage_secure=True, storage_ca_file=pki.ca,
                                                    storage_sse=f"kms:{KMS_KEY}"))
    status = await run_one_job(settings)
    objects = encryption_of_every_object(s3_endpoint, settings.bucket_name)
    assert len(objects) >= 2, objects
    assert set(objects.values()) == {("aws:kms", KMS_KEY)}, objects
    assert https_s3.accepted > 0
    # Download links point at the HTTPS endpoint, and the same CA verifies them.
    url = status["result"]["url"]
    assert url.startswith(f"https://{https_s3.endpoint}/"), url
    with urllib.request.urlopen(url, context=ssl.create_default_context(cafile=str(pki.ca)), timeout=10) as reply:
        assert reply.status == 200 and reply.read()


@pytest.mark.parametrize("ca", ["system", "other"])
async def test_untrusted_endpoint_is_unavailable_not_a_crash(https_s3, other_pki, ca):
    settings = Settings(storage_type="minio", **s3_settings(https_s3.endpoint, storage_secure=True,
                                      storage_ca_file=other_pki.ca if ca == "other" else None))
    storage = S3Storage(settings)
    assert await storage.ping() is False
    with pytest.raises(PixqError) as info:
        await storage.put_bytes("probe", b"x", "application/octet-stream")
    assert info.value.code is ErrorCode.STORAGE_UNAVAILABLE


@pytest.mark.parametrize("env, variable", [
    ({"STORAGE_SSE": f"kms:{KMS_KEY}"}, "STORAGE_SSE"),
    ({"STORAGE_CA_FILE": "{ca}"}, "STORAGE_CA_FILE"),
    ({"STORAGE_SSE": "aes"}, "STORAGE_SSE"),
])
def test_settings_refuse_kms_or_ca_without_https(monkeypatch, capsys, pki, env, variable):
    for name, value in {"STORAGE_TYPE": "minio", "MINIO_ACCESS_KEY": "pixq", "MINIO_SECRET_KEY": "pixq-secret",
                        "STORAGE_SECURE": "false", **env}.items():
        monkeypatch.setenv(name, value.format(ca=pki.ca))
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert info.value.code == 2
    assert f"invalid configuration: {variable}:" in capsys.readouterr().err


async def test_job_through_every_secured_dependency(tmp_path: Path, s3_endpoint, https_s3, pki):
    """NATS: mutual TLS and a JWT .creds user in operator mode. Redis: TLS and an ACL user.
    S3: HTTPS to a private CA, SSE-KMS. One job from the real API through the real worker."""
    operator = operator_setup()
    creds = tmp_path / "pixq.creds"
    operator.user_creds(creds)
    nats = nats_server_conf(tmp_path, operator.config() + "\n" + nats_tls_block(pki, verify_clients=True))
    redis = redis_server_conf(tmp_path, ["user default off", "user pixq on >r3dis ~pixq:* resetchannels +@all -@dangerous"],
                              tls=pki)
    try:
        settings = Settings(
            nats_url=f"tls://127.0.0.1:{nats.port}", nats_creds_file=creds, nats_tls_ca_file=pki.ca,
            nats_tls_cert_file=pki.client_cert, nats_tls_key_file=pki.client_key,
            redis_url=f"rediss://pixq:r3dis@127.0.0.1:{redis.port}/0", redis_tls_ca_file=pki.ca, storage_type="minio",
            **s3_settings(https_s3.endpoint, storage_secure=True, storage_ca_file=pki.ca, storage_sse=f"kms:{KMS_KEY}"),
            metrics_port=0, url_signing_key="test-signing-key", ack_wait=5.0, job_timeout=20.0,
            worker_shutdown_grace=5.0, log_level="warning")
        await run_one_job(settings)
        assert set(encryption_of_every_object(s3_endpoint, settings.bucket_name).values()) == {("aws:kms", KMS_KEY)}
    finally:
        nats.stop()
        redis.stop()
