"""Standard Webhooks signing as the `standardwebhooks` package verifies it, secret rotation, the
submit-time callback_url checks, webhook ids, receiver choice and Retry-After parsing (pure logic)."""

import base64
import os
import time
from email.utils import formatdate

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from pixq import webhooks
from pixq.errors import ErrorCode, PixqError
from pixq.settings import Settings
from pixq.tenants import Tenant, TenantSettings
from worker.webhooks import RETRY_AFTER_MAX_SECONDS, retry_after_seconds


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


OLD, NEW, STRANGER = new_secret(), new_secret(), new_secret()
BODY = b'{"type":"job.completed","data":{"job_id":"x","note":"caf\\u00e9"}}'


def headers(secrets, webhook_id="evt_1", timestamp=None):
    return webhooks.signed_headers(secrets, webhook_id, int(timestamp or time.time()), BODY)


def test_standardwebhooks_verifies_what_pixq_sends():
    sent = headers([NEW])
    assert Webhook(NEW).verify(BODY, sent)["data"]["job_id"] == "x"
    assert sent["Content-Type"] == "application/json" and "pixq" in sent["User-Agent"]
    assert NEW not in str(sent) and NEW.removeprefix("whsec_") not in str(sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(STRANGER).verify(BODY, sent)
    with pytest.raises(WebhookVerificationError):  # the body is covered
        Webhook(NEW).verify(BODY.replace(b'"x"', b'"y"'), sent)
    with pytest.raises(WebhookVerificationError):  # and the id
        Webhook(NEW).verify(BODY, {**sent, "webhook-id": "evt_2"})


def test_rotation_signs_with_every_active_secret():
    sent = headers([NEW, OLD])
    assert len(sent["webhook-signature"].split(" ")) == 2
    assert all(part.startswith("v1,") for part in sent["webhook-signature"].split(" "))
    # A receiver that knows only one of them (old, or already the new one) verifies it.
    Webhook(OLD).verify(BODY, sent)
    Webhook(NEW).verify(BODY, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(STRANGER).verify(BODY, sent)


def test_the_timestamp_is_the_attempts_own():
    stale = headers([NEW], timestamp=time.time() - 3600)
    with pytest.raises(WebhookVerificationError):  # receivers refuse replays of old requests
        Webhook(NEW).verify(BODY, stale)


@pytest.mark.parametrize("secret", ["", "whsec_", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!!", "whsec_a b"])
def test_bad_secrets_are_refused(secret):
    with pytest.raises(ValueError):
        webhooks.secret_key(secret)
    with pytest.raises(ValueError):
        TenantSettings(webhook_secrets=[secret])


def test_unpadded_secrets_decode_like_standardwebhooks():
    key = os.urandom(20)
    unpadded = "whsec_" + base64.b64encode(key).decode().rstrip("=")
    assert webhooks.secret_key(unpadded) == key
    Webhook(unpadded).verify(BODY, webhooks.signed_headers([unpadded], "evt_1", int(time.time()), BODY))


def tenant(**settings) -> Tenant:
    return Tenant(name="acme", settings=TenantSettings(**settings))


@pytest.mark.parametrize("url, reason", [
    ("ftp://hooks.example.com/x", "http"), ("hooks.example.com/x", "http"), ("http://", "host"),
    ("https://user:pw@hooks.example.com/", "credentials"), ("https://hooks.example.com/a b", "spaces"),
    ("https://hooks.example.com:99999/", "valid URL"), ("https://hooks.example.com/" + "a" * 2048, "2048"),
    (42, "string"), ("http://127.0.0.1:8080/hook", "public"), ("http://[::1]/hook", "public"),
    ("http://169.254.169.254/latest/meta-data", "metadata"), ("http://[::ffff:10.0.0.1]/", "public"),
    ("http://localhost:8080/hook", "localhost"), ("http://api.localhost./hook", "localhost"),
])
def test_callback_urls_refused_at_submit(url, reason):
    settings = Settings(webhook_secrets=NEW)
    with pytest.raises(PixqError) as refused:
        webhooks.check_callback_url(url, settings, tenant())
    assert refused.value.code is ErrorCode.INVALID_PARAMETERS
    assert reason in refused.value.message and "callback_url" in refused.value.message


def test_private_callbacks_are_allowed_with_the_flag():
    settings = Settings(webhook_secrets=NEW, outbound_allow_private_networks=True)
    for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[fd00::1]/x"):
        assert webhooks.check_callback_url(url, settings, tenant()) == url


def test_no_unsigned_webhooks():
    url = "https://hooks.example.com/pixq"
    with pytest.raises(PixqError) as refused:
        webhooks.check_callback_url(url, Settings(), tenant())
    assert "secret" in refused.value.message and "acme" in refused.value.message
    # The tenant's own secrets, or WEBHOOK_SECRETS, make it acceptable.
    assert webhooks.check_callback_url(url, Settings(), tenant(webhook_secrets=[NEW])) == url
    assert webhooks.check_callback_url(url, Settings(webhook_secrets=f"{NEW},{OLD}"), tenant()) == url


def test_tenant_secrets_take_precedence_over_webhook_secrets():
    settings = Settings(webhook_secrets=OLD)
    assert webhooks.secrets_for(TenantSettings(webhook_secrets=[NEW]), settings) == [NEW]
    assert webhooks.secrets_for(TenantSettings(), settings) == [OLD]
    assert webhooks.secrets_for(None, settings) == [OLD]


def test_tenant_webhook_url_is_validated():
    assert TenantSettings(webhook_url="https://hooks.example.com/x").webhook_url == "https://hooks.example.com/x"
    for bad in ("ftp://x.example", "https://u:p@x.example/", "not a url"):
        with pytest.raises(ValueError):
            TenantSettings(webhook_url=bad)


def test_receiver_choice():
    default = TenantSettings(webhook_url="https://tenant.example/hook")
    assert webhooks.receiver("https://own.example/hook", default) == "https://own.example/hook"
    assert webhooks.receiver(None, default) == "https://tenant.example/hook"
    assert webhooks.receiver(None, TenantSettings()) is None
    assert webhooks.receiver(None, None) is None


def test_webhook_ids_are_stable_per_event():
    job = {"type": "job.completed", "position": [1, 2, 3], "data": {"job_id": "j"}}
    assert webhooks.webhook_id(job) == webhooks.webhook_id(dict(job)) == "evt_j_1_2_3"
    assert webhooks.webhook_id({**job, "type": "job.failed", "position": [0, 3, 3]}) == "evt_j_0_3_3"
    assert webhooks.webhook_id({"type": "batch.completed", "position": [0, 0, 3],
                                "data": {"batch_id": "b"}}) == "evt_batch_b"
    delivered = [t for t in ("job.queued", "job.processing", "job.retrying", "job.completed", "job.failed",
                             "batch.completed") if webhooks.is_delivered({"type": t})]
    assert delivered == ["job.completed", "job.failed", "batch.completed"]


def test_retry_after_parsing():
    now = time.time()
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("999999999") == RETRY_AFTER_MAX_SECONDS
    in_a_minute = formatdate(now + 60, usegmt=True)
    assert 58 <= retry_after_seconds(in_a_minute, now=now) <= 61
    assert retry_after_seconds(formatdate(now - 60, usegmt=True), now=now) == 0
    assert retry_after_seconds(formatdate(now + 10 * 86400, usegmt=True), now=now) == RETRY_AFTER_MAX_SECONDS
