"""Short-lived signed tokens that open an SSE stream from a browser.

A browser's EventSource cannot send an Authorization header, so a page first asks the API
(authenticated normally, ``POST /api/v1/events/token``) for a token and puts it in the
stream's URL as ``?access_token=``. A token is:

- **signed**: HMAC-SHA256 with a key derived from URL_SIGNING_KEY, which every API replica
  shares already (download links), so any replica accepts what another minted. The key is
  derived (not used as is) so a token can never be mistaken for a download signature;
- **short-lived**: EVENTS_TOKEN_TTL (300 s); it is only needed to *open* a stream, and a
  URL with a credential in it ends up in browser history;
- **tenant-bound**: it names the tenant and its role, and the API checks both still hold
  when the token is used, so a deleted or demoted tenant's tokens stop working at once;
- optionally **job-bound**: then it opens that job's stream and nothing else.

Format: ``v1.<base64url JSON claims>.<base64url HMAC>``, URL-safe as it stands. The claims
are not secret (a tenant name, a job id, an expiry) but cannot be altered.
"""

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

VERSION = "v1"
MAX_TOKEN_CHARS = 1024
"""Anything longer was not minted here; refused before decoding."""
_DERIVATION = b"pixq stream token v1"


@dataclass(frozen=True)
class StreamGrant:
    """What a valid token allows: the tenant it speaks for, and the one job if it is bound."""

    tenant: str
    role: str
    job_id: str | None
    expires_at: int


def _key(signing_key: bytes) -> bytes:
    return hmac.new(signing_key, _DERIVATION, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(signing_key: bytes, tenant: str, role: str, job_id: str | None, ttl: float,
         now: float | None = None) -> tuple[str, int]:
    """A token for ``tenant`` (and ``job_id`` if given), and its expiry (Unix seconds)."""
    expires_at = int((time.time() if now is None else now) + ttl)
    claims = {"t": tenant, "r": role, "j": job_id, "e": expires_at}
    body = f"{VERSION}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    signature = hmac.new(_key(signing_key), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}", expires_at


def verify(signing_key: bytes, token: str, now: float | None = None) -> StreamGrant | None:
    """The grant of a genuine, unexpired token; None for anything else (never raises)."""
    if not token.isascii() or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        return None
    version, payload, signature = token.split(".")
    if version != VERSION:
        return None
    expected = hmac.new(_key(signing_key), f"{version}.{payload}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        claims = json.loads(_unb64(payload))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(claims, dict):
        return None
    tenant, role, job_id, expires_at = claims.get("t"), claims.get("r"), claims.get("j"), claims.get("e")
    if not (isinstance(tenant, str) and isinstance(role, str) and isinstance(expires_at, int)
            and (job_id is None or isinstance(job_id, str))):
        return None
    if expires_at <= (time.time() if now is None else now):
        return None
    return StreamGrant(tenant=tenant, role=role, job_id=job_id, expires_at=expires_at)
