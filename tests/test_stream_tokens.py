"""pixq.stream_tokens on its own: what verifies, and everything that must not."""

import base64
import hmac
import json

import pytest

from pixq import stream_tokens, tokens
from pixq.stream_tokens import StreamGrant, mint, verify

KEY = b"shared-url-signing-key"
NOW = 1_800_000_000.0
JOB = "11111111-2222-4333-8444-555555555555"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_token_carries_its_tenant_role_job_and_expiry():
    token, expires_at = mint(KEY, "acme", "user", JOB, 300, now=NOW)
    assert expires_at == NOW + 300
    assert verify(KEY, token, now=NOW + 299) == StreamGrant("acme", "user", JOB, int(NOW + 300))
    tenant_token, _ = mint(KEY, "ops", "admin", None, 300, now=NOW)
    assert verify(KEY, tenant_token, now=NOW) == StreamGrant("ops", "admin", None, int(NOW + 300))
    assert all(ch.isalnum() or ch in "-_." for ch in token)  # fits a query string as it is


def test_an_expired_token_is_refused():
    token, _ = mint(KEY, "acme", "user", None, 300, now=NOW)
    assert verify(KEY, token, now=NOW + 300) is None
    assert verify(KEY, token, now=NOW + 10_000) is None


def test_altered_claims_or_signatures_are_refused():
    token, _ = mint(KEY, "acme", "user", JOB, 300, now=NOW)
    version, claims, signature = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=="))
    for change in ({"t": "globex"}, {"r": "admin"}, {"j": None}, {"e": decoded["e"] + 3600}):
        forged = b64(json.dumps({**decoded, **change}, separators=(",", ":")).encode())
        assert verify(KEY, f"{version}.{forged}.{signature}", now=NOW) is None, change
    assert verify(KEY, f"{version}.{claims}.{signature[::-1]}", now=NOW) is None
    assert verify(KEY, f"v2.{claims}.{signature}", now=NOW) is None
    assert verify(b"another-deployment", token, now=NOW) is None


def test_a_token_key_is_derived_from_the_url_signing_key():
    """Download links are HMACs under URL_SIGNING_KEY itself; a token signed with that raw key
    (anything but the derived one) is refused."""
    claims = {"t": "acme", "r": "admin", "j": None, "e": 1_900_000_000}
    body = f"v1.{b64(json.dumps(claims).encode())}"
    raw = hmac.new(KEY, body.encode(), "sha256").digest()
    assert verify(KEY, f"{body}.{b64(raw)}", now=NOW) is None
    derived = hmac.new(tokens._key(KEY, stream_tokens._DERIVATION), body.encode(), "sha256").digest()
    assert verify(KEY, f"{body}.{b64(derived)}", now=NOW) == StreamGrant("acme", "admin", None, 1_900_000_000)


@pytest.mark.parametrize("token", [
    "", ".", "..", "v1..", "v1.e30.", "v1.!!!.!!!", "v1.e30.e30.e30", "é.é.é", "v1." + "a" * 2000 + ".x",
    "v1.\udcff.x", "v1.bm90IGpzb24.x",
])
def test_garbage_is_refused_without_raising(token):
    assert verify(KEY, token, now=NOW) is None


def test_well_signed_claims_of_the_wrong_shape_are_refused():
    """Only mint() produces tokens, but verify() trusts nothing about a payload's shape."""
    for claims in ([], {"t": "acme"}, {"t": 1, "r": "user", "j": None, "e": 2_000_000_000},
                   {"t": "acme", "r": "user", "j": 5, "e": 2_000_000_000},
                   {"t": "acme", "r": "user", "j": None, "e": "2000000000"}):
        body = f"v1.{b64(json.dumps(claims).encode())}"
        signature = hmac.new(tokens._key(KEY, stream_tokens._DERIVATION), body.encode(), "sha256").digest()
        assert verify(KEY, f"{body}.{b64(signature)}", now=NOW) is None, claims
